"""Soft targets end to end: vote distributions and AU probabilities in the losses, the metrics and a fit."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from keras_mtanet.losses import MaskedBinaryCrossentropy, MaskedCategoricalCrossentropy
from keras_mtanet.metrics import AUF1, AUAccuracy, ExprAccuracy, ExprF1, abaw_scores, expr_ids

PRED = np.array([[0.4, 0.1, 0.1, 0.1, 0.2, 0.05, 0.05],
                 [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4],
                 [0.7, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],
                 [0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1],
                 [0.1, 0.1, 0.1, 0.1, 0.5, 0.05, 0.05]], np.float32)
# A soft row, a one-hot row, an all-zero row (masked), a row with the unannotated code (masked), raw vote counts.
SOFT = np.array([[0.5, 0, 0, 0, 0.5, 0, 0],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 0],
                 [-1, -1, -1, -1, -1, -1, -1],
                 [2, 0, 0, 0, 6, 0, 1]], np.float32)
# By hand: -sum(t * log p) for the three annotated rows; the vote counts are normalised to (2/9, 6/9, 1/9).
CE = [-(0.5 * math.log(0.4) + 0.5 * math.log(0.2)),
      -math.log(0.4),
      -(2 / 9 * math.log(0.1) + 6 / 9 * math.log(0.5) + 1 / 9 * math.log(0.05))]


def test_cross_entropy_on_soft_and_masked_rows():
    assert float(MaskedCategoricalCrossentropy()(SOFT, PRED)) == pytest.approx(sum(CE) / 3, rel=1e-5)
    # Sample weights scale rows; the mean still divides by the number of annotated rows.
    weights = np.array([2.0, 1.0, 5.0, 5.0, 0.5], np.float32)
    expected = (2 * CE[0] + CE[1] + 0.5 * CE[2]) / 3
    assert float(MaskedCategoricalCrossentropy()(SOFT, PRED, sample_weight=weights)) == pytest.approx(expected,
                                                                                                       rel=1e-5)
    # Label smoothing 0.7 keeps 30 % of the target and spreads 10 % on each class.
    smooth = 0.7
    target = np.array([0, 0, 0, 0, 0, 0, 1.0]) * (1 - smooth) + smooth / 7
    row1 = -float(np.sum(target * np.log(PRED[1])))
    got = MaskedCategoricalCrossentropy(label_smoothing=smooth)(SOFT[1:3], PRED[1:3])
    assert float(got) == pytest.approx(row1, rel=1e-5)


def test_cross_entropy_with_no_annotated_row_is_zero():
    assert float(MaskedCategoricalCrossentropy()(SOFT[2:4], PRED[2:4])) == 0.0


def test_binary_cross_entropy_on_au_probabilities():
    y = np.array([[0.8, -1.0], [0.2, 1.0]], np.float32)
    p = np.array([[0.6, 0.9], [0.5, 0.7]], np.float32)
    terms = [-(0.8 * math.log(0.6) + 0.2 * math.log(0.4)), math.log(2.0), -math.log(0.7)]
    assert float(MaskedBinaryCrossentropy()(y, p)) == pytest.approx(sum(terms) / 3, rel=1e-5)
    # A positive weight multiplies the target's positive term only: 0.8 log 0.6 for the soft entry.
    weighted = [-(3 * 0.8 * math.log(0.6) + 0.2 * math.log(0.4)), -(3 * 0.2 * math.log(0.5) + 0.8 * math.log(0.5)),
                -3 * math.log(0.7)]
    got = MaskedBinaryCrossentropy(pos_weight=[3.0, 3.0])(y, p)
    assert float(got) == pytest.approx(sum(weighted) / 3, rel=1e-5)


def test_expression_metrics_score_distributions_by_argmax():
    ids = expr_ids(SOFT)
    np.testing.assert_array_equal(ids, [0, 6, -1, -1, 4])  # 0.5/0.5 tie -> first class
    f1, acc = ExprF1(), ExprAccuracy()
    for m in (f1, acc):  # two batches, as in an epoch
        m.update_state(SOFT[:2], PRED[:2])
        m.update_state(SOFT[2:], PRED[2:])
    valid = ids >= 0
    pred = PRED.argmax(axis=1)
    assert float(acc.result()) == pytest.approx(accuracy_score(ids[valid], pred[valid]))
    assert float(f1.result()) == pytest.approx(f1_score(ids[valid], pred[valid], average="macro"))
    # Here: rows 0, 1 and 4 predicted 0, 6, 4 -> all right.
    assert float(acc.result()) == 1.0
    scores = abaw_scores({"expr": SOFT}, {"expr": PRED})
    assert scores["expr_acc"] == 1.0 and scores["expr_f1"] == 1.0


def test_au_metrics_threshold_soft_targets_at_one_half():
    y = np.array([[0.7, 0.5, -1.0], [0.3, 0.9, 0.51], [0.6, -1.0, 0.2], [0.0, 0.4, 1.0]], np.float32)
    p = np.array([[0.9, 0.6, 0.9], [0.2, 0.4, 0.8], [0.4, 0.9, 0.1], [0.6, 0.3, 0.7]], np.float32)
    f1, acc = AUF1(num_aus=3), AUAccuracy(num_aus=3)
    for m in (f1, acc):
        m.update_state(y, p)
    # By hand, per AU (truth > 0.5, prediction > 0.5, -1 skipped):
    # AU a: truth 1,0,1,0 pred 1,0,0,1 -> tp 1 fp 1 fn 1 -> F1 0.5; AU b: truth 0,1,0 (0.5 is not active),
    # pred 1,0,0 -> tp 0 -> F1 0; AU c: truth 1,0,1 pred 1,0,1 -> F1 1. Accuracy: 2 + 1 + 3 right of 10.
    assert float(f1.result()) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert float(acc.result()) == pytest.approx(6 / 10)
    truth = np.where(y >= 0, (y > 0.5).astype(float), -1)
    per_au = [f1_score(truth[truth[:, j] >= 0, j], p[truth[:, j] >= 0, j] > 0.5) for j in range(3)]
    assert float(f1.result()) == pytest.approx(np.mean(per_au))
    assert abaw_scores({"au": y}, {"au": p})["au_f1"] == pytest.approx(np.mean(per_au))


def test_fit_and_evaluate_on_soft_targets():
    import keras
    from conftest import tiny_model

    rng = np.random.default_rng(0)
    n = 12
    x = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    votes = rng.integers(0, 4, (n, 7)).astype("float32")
    votes[[2, 7]] = 0  # masked rows inside the batches
    au = rng.uniform(0, 1, (n, 8)).astype("float32")
    au[[1, 5]] = -1
    y = {"va": rng.uniform(-1, 1, (n, 2)).astype("float32"), "au": au,
         "expr": votes / np.maximum(votes.sum(1, keepdims=True), 1)}
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    logs = model.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    scores = abaw_scores(y, model.predict(x, batch_size=6, verbose=0))
    assert logs["expr_acc"] == pytest.approx(scores["expr_acc"], abs=1e-6)
    assert logs["expr_f1"] == pytest.approx(scores["expr_f1"], abs=1e-6)
    assert logs["au_f1"] == pytest.approx(scores["au_f1"], abs=1e-6)
