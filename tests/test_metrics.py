import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from keras_mtanet.metrics import AUF1, CCC, SCORE_KEYS, AUAccuracy, ExprAccuracy, ExprF1, abaw_scores


def ccc_pearson(t, p):
    r = np.corrcoef(t, p)[0, 1]
    return 2 * r * t.std() * p.std() / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)


def stream(metric, y_true, y_pred, batch):
    metric.reset_state()
    for i in range(0, len(y_true), batch):
        metric.update_state(y_true[i:i + batch], y_pred[i:i + batch])
    return float(metric.result())


def va_data(rng, n):
    t = rng.uniform(-1, 1, (n, 2)).astype("float32")
    p = np.clip(0.7 * t + 0.2 + rng.normal(0, 0.3, t.shape), -1, 1).astype("float32")
    t[rng.random(n) < 0.2] = -5.0
    return t, p


def test_streaming_ccc_is_dataset_level_and_independent_of_batching(rng):
    t, p = va_data(rng, 503)
    for dim in (0, 1):
        valid = t[:, dim] > -2
        expected = ccc_pearson(t[valid, dim].astype(np.float64), p[valid, dim].astype(np.float64))
        for batch in (1, 7, 64, 503):
            assert stream(CCC(dim), t, p, batch) == pytest.approx(expected, abs=1e-5), batch
        order = rng.permutation(len(t))
        assert stream(CCC(dim), t[order], p[order], 32) == pytest.approx(expected, abs=1e-5)


def test_streaming_ccc_differs_from_the_mean_of_batch_cccs(rng):
    """The quantity ABAW scores is not the average of per-batch CCCs (what keras' built-in reports)."""
    t, p = va_data(rng, 400)
    valid = t[:, 0] > -2
    t, p = t[valid, 0], p[valid, 0]
    batch_mean = np.mean([ccc_pearson(t[i:i + 20], p[i:i + 20]) for i in range(0, len(t) - 19, 20)])
    dataset = ccc_pearson(t.astype(np.float64), p.astype(np.float64))
    streamed = stream(CCC(0), np.stack([t, t], 1), np.stack([p, p], 1), 20)
    assert streamed == pytest.approx(dataset, abs=1e-5)
    assert abs(batch_mean - dataset) > 1e-3


def test_streaming_ccc_float32_accuracy_over_a_million_frames(rng):
    n = 1_000_000
    t = (0.4 + 0.2 * rng.standard_normal(n)).clip(-1, 1)
    p = (0.8 * t + 0.15 + 0.1 * rng.standard_normal(n)).clip(-1, 1)
    expected = ccc_pearson(t, p)  # float64
    y_t = np.stack([t, t], 1).astype("float32")
    y_p = np.stack([p, p], 1).astype("float32")
    assert stream(CCC(1), y_t, y_p, 4096) == pytest.approx(expected, abs=2e-5)


def test_ccc_of_constant_predictions_is_zero_and_empty_is_zero():
    t = np.array([[0.1, 0.1], [0.4, 0.4], [-0.3, -0.3]], "float32")
    assert stream(CCC(0), t, np.full_like(t, 0.2), 2) == 0.0
    assert stream(CCC(0), np.full((3, 2), -5.0, "float32"), t, 2) == 0.0


def au_data(rng, n):
    t = rng.integers(0, 2, (n, 8)).astype("float32")
    p = np.clip(t * 0.6 + rng.uniform(0, 0.6, (n, 8)), 0, 1).astype("float32")
    p[:, 5] = 0.1  # AU15 never predicted
    t[:, 6] = 0  # AU20 never active in the annotations
    p[:, 6] = 0.2  # ... nor predicted: F1 0 as in sklearn
    t[rng.random(n) < 0.25] = -1
    return t, p


def test_au_metrics_match_sklearn(rng):
    t, p = au_data(rng, 300)
    valid = t[:, 0] >= 0
    tv, pv = t[valid].astype(int), (p[valid] > 0.5).astype(int)
    with np.errstate(all="ignore"):
        expected_f1 = np.mean([f1_score(tv[:, j], pv[:, j], zero_division=0) for j in range(8)])
    expected_acc = accuracy_score(tv.ravel(), pv.ravel())
    for batch in (16, 300):
        assert stream(AUF1(), t, p, batch) == pytest.approx(expected_f1, abs=1e-6)
        assert stream(AUAccuracy(), t, p, batch) == pytest.approx(expected_acc, abs=1e-6)


def expr_data(rng, n):
    t = rng.integers(0, 6, n)  # class 6 (Surprise) never annotated...
    p = rng.dirichlet(np.ones(7), n).astype("float32")
    p[np.arange(n), t] += 0.5
    p[:, 3] = 0.0  # Fear never predicted
    p /= p.sum(axis=1, keepdims=True)
    t[rng.random(n) < 0.3] = -1
    return t, p


def test_expression_metrics_match_sklearn(rng):
    t, p = expr_data(rng, 400)
    valid = t >= 0
    pred = p.argmax(1)
    assert 6 in pred[valid] and 3 not in pred[valid] and 6 not in t[valid]
    expected_f1 = f1_score(t[valid], pred[valid], average="macro")
    for batch in (10, 400):
        assert stream(ExprF1(), t, p, batch) == pytest.approx(expected_f1, abs=1e-6)
        assert stream(ExprAccuracy(), t, p, batch) == pytest.approx(accuracy_score(t[valid], pred[valid]),
                                                                     abs=1e-6)


def test_expression_f1_leaves_out_classes_absent_from_truth_and_prediction():
    t = np.array([0, 0, 1, 1, 2])
    p = np.eye(7, dtype="float32")[[0, 1, 1, 1, 2]]
    # class 0: tp1 fn1 -> 2/3; class 1: tp2 fp1 -> 4/5; class 2: 1; classes 3-6 absent
    assert stream(ExprF1(), t, p, 5) == pytest.approx((2 / 3 + 4 / 5 + 1) / 3, abs=1e-6)


def test_abaw_scores_against_independent_computations(rng):
    va_t, va_p = va_data(rng, 500)
    au_t, au_p = au_data(rng, 500)
    ex_t, ex_p = expr_data(rng, 500)
    scores = abaw_scores({"va": va_t, "au": au_t, "expr": ex_t}, {"va": va_p, "au": au_p, "expr": ex_p})
    assert tuple(scores) == ("ccc_valence", "ccc_arousal", "va_score", "expr_f1", "expr_acc", "expr_score",
                             "au_f1", "au_acc", "au_score")
    assert set(scores) == set(SCORE_KEYS)
    cccs = []
    for d, key in enumerate(("ccc_valence", "ccc_arousal")):
        v = va_t[:, d] > -2
        cccs.append(ccc_pearson(va_t[v, d].astype(float), va_p[v, d].astype(float)))
        assert scores[key] == pytest.approx(cccs[-1], abs=1e-9)
    assert scores["va_score"] == pytest.approx(np.mean(cccs))

    v = ex_t >= 0
    f1 = f1_score(ex_t[v], ex_p[v].argmax(1), average="macro")
    acc = accuracy_score(ex_t[v], ex_p[v].argmax(1))
    assert scores["expr_f1"] == pytest.approx(f1) and scores["expr_acc"] == pytest.approx(acc)
    assert scores["expr_score"] == pytest.approx(0.67 * f1 + 0.33 * acc)

    v = au_t[:, 0] >= 0
    tv, pv = au_t[v].astype(int), (au_p[v] > 0.5).astype(int)
    f1 = np.mean([f1_score(tv[:, j], pv[:, j], zero_division=0) for j in range(8)])
    acc = accuracy_score(tv.ravel(), pv.ravel())
    assert scores["au_f1"] == pytest.approx(f1) and scores["au_acc"] == pytest.approx(acc)
    assert scores["au_score"] == pytest.approx(0.5 * f1 + 0.5 * acc)

    # Class ids and 0/1 decisions give the same scores as probabilities.
    same = abaw_scores({"au": au_t, "expr": ex_t}, {"au": (au_p > 0.5).astype(int), "expr": ex_p.argmax(1)})
    for key in same:
        assert same[key] == pytest.approx(scores[key])


def test_abaw_scores_edge_cases():
    t = {"va": np.array([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.5]]), "expr": np.array([-1, -1, -1])}
    constant = abaw_scores(t, {"va": np.full((3, 2), 0.4), "expr": np.zeros(3, int)})
    assert constant["ccc_valence"] == pytest.approx(0.0, abs=1e-12)
    assert constant["ccc_arousal"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(constant["expr_f1"]) and np.isnan(constant["expr_score"])
    assert set(abaw_scores({"au": np.zeros((2, 8))}, {"au": np.zeros((2, 8))})) == {"au_f1", "au_acc",
                                                                                  "au_score"}
    with pytest.raises(ValueError, match="'va' has 3 annotation rows but 2"):
        abaw_scores(t, {"va": np.zeros((2, 2))})


def test_streaming_metrics_agree_with_abaw_scores_on_model_style_outputs(rng):
    va_t, va_p = va_data(rng, 200)
    au_t, au_p = au_data(rng, 200)
    ex_t, ex_p = expr_data(rng, 200)
    scores = abaw_scores({"va": va_t, "au": au_t, "expr": ex_t}, {"va": va_p, "au": au_p, "expr": ex_p})
    assert stream(CCC(0), va_t, va_p, 33) == pytest.approx(scores["ccc_valence"], abs=1e-5)
    assert stream(CCC(1), va_t, va_p, 33) == pytest.approx(scores["ccc_arousal"], abs=1e-5)
    assert stream(AUF1(), au_t, au_p, 33) == pytest.approx(scores["au_f1"], abs=1e-6)
    assert stream(ExprF1(), ex_t, ex_p, 33) == pytest.approx(scores["expr_f1"], abs=1e-6)


def per_entry_au_data(rng, n):
    """AU targets where single entries, not whole rows, carry the unannotated code (Aff-Wild2: -1)."""
    t = rng.integers(0, 2, (n, 8)).astype("float32")
    p = np.clip(t * 0.5 + rng.uniform(0, 0.7, (n, 8)), 0, 1).astype("float32")
    t[rng.random((n, 8)) < 0.3] = -1  # about 30 % of entries, scattered over rows and AUs
    t[rng.random(n) < 0.1] = -1  # and a few whole rows
    t[:, 7] = np.where(np.arange(n) % 2 == 0, -1, t[:, 7])  # AU25 annotated on every other row only
    return t, p


def sklearn_au_scores(t, p):
    """Per AU, sklearn's F1 on that AU's annotated entries alone; accuracy over every annotated entry."""
    f1s = []
    for j in range(t.shape[1]):
        keep = t[:, j] >= 0
        f1s.append(f1_score(t[keep, j].astype(int), (p[keep, j] > 0.5).astype(int), zero_division=0))
    keep = t >= 0
    return np.mean(f1s), accuracy_score(t[keep].astype(int), (p[keep] > 0.5).astype(int))


def test_au_metrics_mask_single_entries_not_whole_rows(rng):
    t, p = per_entry_au_data(rng, 301)
    partial_rows = ((t < 0).any(axis=1) & (t >= 0).any(axis=1)).sum()
    assert partial_rows > 200  # most rows mix annotated and unannotated entries
    expected_f1, expected_acc = sklearn_au_scores(t, p)
    # Masking whole rows (any -1 drops the row) would give another value: the test can tell the two apart.
    rows = (t >= 0).all(axis=1)
    row_f1, _ = sklearn_au_scores(t[rows], p[rows])
    assert abs(row_f1 - expected_f1) > 1e-3
    for batch in (1, 7, 64, 301):  # streaming: masked entries fall inside and across batches
        assert stream(AUF1(), t, p, batch) == pytest.approx(expected_f1, abs=1e-6), batch
        assert stream(AUAccuracy(), t, p, batch) == pytest.approx(expected_acc, abs=1e-6), batch
    order = rng.permutation(len(t))
    assert stream(AUF1(), t[order], p[order], 50) == pytest.approx(expected_f1, abs=1e-6)
    scores = abaw_scores({"au": t}, {"au": p})
    assert scores["au_f1"] == pytest.approx(expected_f1, abs=1e-12)
    assert scores["au_acc"] == pytest.approx(expected_acc, abs=1e-12)
    assert scores["au_score"] == pytest.approx(0.5 * expected_f1 + 0.5 * expected_acc, abs=1e-12)


def test_au_metrics_per_entry_mask_by_hand():
    # Two AUs, three rows; -1 hides one entry in row 0 (AU b) and one in row 2 (AU a).
    t = np.array([[1, -1], [0, 1], [-1, 0]], "float32")
    p = np.array([[0.9, 0.9], [0.8, 0.2], [0.9, 0.9]], "float32")
    # AU a on rows 0, 1: truth 1, 0; pred 1, 1 -> tp 1 fp 1 -> F1 2/3. AU b on rows 1, 2: truth 1, 0; pred 0, 1
    # -> tp 0 -> F1 0. Accuracy: right on (0, a) only, of 4 annotated entries.
    for batch in (1, 2, 3):
        assert stream(AUF1(num_aus=2), t, p, batch) == pytest.approx(1 / 3, abs=1e-6)
        assert stream(AUAccuracy(num_aus=2), t, p, batch) == pytest.approx(1 / 4, abs=1e-6)
    scores = abaw_scores({"au": t}, {"au": p})
    assert scores["au_f1"] == pytest.approx(1 / 3) and scores["au_acc"] == pytest.approx(1 / 4)


def test_au_column_never_annotated_scores_zero_f1_and_adds_no_decision():
    t = np.array([[1, -1], [0, -1], [1, -1]], "float32")
    p = np.array([[0.9, 0.9], [0.1, 0.9], [0.8, 0.9]], "float32")
    # AU a: F1 1; AU b has no annotated entry, so F1 0 (as an AU never active); accuracy 3 of 3.
    assert stream(AUF1(num_aus=2), t, p, 2) == pytest.approx(0.5, abs=1e-6)
    assert stream(AUAccuracy(num_aus=2), t, p, 2) == pytest.approx(1.0, abs=1e-6)
    assert abaw_scores({"au": t}, {"au": p})["au_f1"] == pytest.approx(0.5)


def test_valence_and_arousal_are_masked_separately(rng):
    t, p = va_data(rng, 240)
    t[rng.random(240) < 0.2, 0] = -5.0  # valence missing where arousal is present, and the other way round
    t[rng.random(240) < 0.2, 1] = -5.0
    scores = abaw_scores({"va": t}, {"va": p})
    for dim, key in enumerate(("ccc_valence", "ccc_arousal")):
        keep = t[:, dim] > -2
        assert keep.sum() > (t > -2).all(axis=1).sum() + 20  # more than the fully annotated rows
        expected = ccc_pearson(t[keep, dim].astype(np.float64), p[keep, dim].astype(np.float64))
        assert scores[key] == pytest.approx(expected, abs=1e-9)
        assert stream(CCC(dim), t, p, 17) == pytest.approx(expected, abs=1e-5)


def test_abaw_scores_refuses_wrong_shapes_and_out_of_range_ids():
    va = np.zeros((6, 2))
    with pytest.raises(ValueError, match=r"'va' annotations must be \(N, 2\), got shape \(4, 3\)"):
        abaw_scores({"va": np.zeros((4, 3))}, {"va": np.zeros((4, 3))})  # once reshaped to (6, 2) and scored
    with pytest.raises(ValueError, match=r"'va' predictions must be \(N, 2\), got shape \(4, 3\)"):
        abaw_scores({"va": va[:4]}, {"va": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"'au' predictions must be \(N, 8\), got shape \(4, 4\)"):
        abaw_scores({"au": np.zeros((2, 8))}, {"au": np.zeros((4, 4))})
    with pytest.raises(ValueError, match="expr annotations hold class id 9; ids run 0-6"):
        abaw_scores({"expr": np.array([0, 9, 1])}, {"expr": np.eye(7)[:3]})
    with pytest.raises(ValueError, match="expr predictions hold class id 7"):
        abaw_scores({"expr": np.array([0, 1])}, {"expr": np.array([0, 7])})


def test_abaw_scores_of_nan_predictions_are_nan_not_zero():
    rng = np.random.default_rng(1)
    t = {"va": rng.uniform(-1, 1, (20, 2)), "au": rng.integers(0, 2, (20, 8)).astype(float),
         "expr": rng.integers(0, 7, 20)}
    nan = {"va": np.full((20, 2), np.nan), "au": np.full((20, 8), np.nan), "expr": np.full((20, 7), np.nan)}
    scores = abaw_scores(t, nan)
    assert set(scores) == set(SCORE_KEYS) and all(np.isnan(v) for v in scores.values()), scores
    # One NaN row among annotated ones is enough; a NaN on an unannotated row is ignored.
    p = {"va": rng.uniform(-1, 1, (20, 2))}
    p["va"][3, 0] = np.nan
    one = abaw_scores(t, p)
    assert np.isnan(one["ccc_valence"]) and np.isfinite(one["ccc_arousal"])
    t["va"][3, 0] = -5.0
    assert np.isfinite(abaw_scores(t, p)["ccc_valence"])
