import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtanet.losses import CCCLoss, MaskedBinaryCrossentropy, MaskedCategoricalCrossentropy, TaskUncertainty


def ccc_pearson(t, p):
    """CCC through Pearson's r: 2 r s_t s_p / (s_t^2 + s_p^2 + (m_t - m_p)^2), population moments."""
    r = np.corrcoef(t, p)[0, 1]
    return 2 * r * t.std() * p.std() / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)


def test_ccc_loss_matches_hand_computation_on_annotated_rows(rng):
    t = rng.uniform(-1, 1, (40, 2)).astype("float32")
    p = (0.6 * t + rng.normal(0, 0.3, t.shape)).astype("float32")
    t[:5] = -5.0
    t[5:9, 1] = -5.0  # arousal missing on a few rows, valence present
    expected = 1 - np.mean([ccc_pearson(t[5:, 0], p[5:, 0]), ccc_pearson(t[9:, 1], p[9:, 1])])
    assert float(CCCLoss()(t, p)) == pytest.approx(expected, abs=1e-5)


def test_ccc_loss_perfect_and_anticorrelated():
    t = np.array([[0.1, 0.2], [0.5, -0.3], [-0.4, 0.9]], "float32")
    assert float(CCCLoss()(t, t)) == pytest.approx(0.0, abs=1e-5)
    centred = t - t.mean(axis=0)  # CCC(t, -t) = -1 only when t has zero mean
    assert float(CCCLoss()(centred, -centred)) == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("loss,y_true,y_pred", [
    (CCCLoss(), np.full((4, 2), -5.0, "float32"), np.zeros((4, 2), "float32")),
    (MaskedBinaryCrossentropy(), -np.ones((4, 8), "float32"), np.full((4, 8), 0.3, "float32")),
    (MaskedCategoricalCrossentropy(), -np.ones((4,), "int32"), np.full((4, 7), 1 / 7, "float32")),
])
def test_batch_without_annotations_gives_zero_loss_and_zero_gradient(loss, y_true, y_pred):
    pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = loss(y_true, pred)
    grad = tape.gradient(value, pred)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad.numpy())) and np.all(grad.numpy() == 0)


def test_ccc_loss_gradient_is_finite_for_constant_predictions():
    t = np.array([[0.1, 0.2], [0.5, -0.3], [-5.0, -5.0]], "float32")
    pred = tf.Variable(np.zeros((3, 2), "float32"))
    with tf.GradientTape() as tape:
        value = CCCLoss()(t, pred)
    assert float(value) == pytest.approx(1.0)
    assert np.all(np.isfinite(tape.gradient(value, pred).numpy()))


def test_masked_bce_matches_numpy(rng):
    t = rng.integers(0, 2, (30, 8)).astype("float32")
    p = rng.uniform(0.01, 0.99, (30, 8)).astype("float32")
    t[:7] = -1
    t[10, 3] = -1
    valid = t >= 0
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(MaskedBinaryCrossentropy()(t, p)) == pytest.approx(bce[valid].mean(), rel=1e-5)
    pos_w = np.arange(1, 9, dtype="float32")
    weighted = -(pos_w * t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(MaskedBinaryCrossentropy(pos_weight=list(pos_w))(t, p)) == pytest.approx(
        weighted[valid].mean(), rel=1e-5)


def test_masked_ce_matches_numpy_for_ids_and_one_hot(rng):
    ids = rng.integers(0, 7, 25)
    p = rng.dirichlet(np.ones(7), 25).astype("float32")
    ids[[0, 3, 4]] = -1
    valid = ids >= 0
    expected = -np.log(p[np.arange(25)[valid], ids[valid]]).mean()
    assert float(MaskedCategoricalCrossentropy()(ids, p)) == pytest.approx(expected, rel=1e-5)
    assert float(MaskedCategoricalCrossentropy()(ids[:, None], p)) == pytest.approx(expected, rel=1e-5)
    one_hot = np.eye(7, dtype="float32")[np.maximum(ids, 0)]
    one_hot[~valid] = -1
    assert float(MaskedCategoricalCrossentropy()(one_hot, p)) == pytest.approx(expected, rel=1e-5)
    smoothed = np.eye(7)[ids[valid]] * 0.9 + 0.1 / 7
    expected_smooth = -(smoothed * np.log(p[valid])).sum(axis=1).mean()
    assert float(MaskedCategoricalCrossentropy(label_smoothing=0.1)(ids, p)) == pytest.approx(
        expected_smooth, rel=1e-5)


def test_sample_weight_excludes_rows(rng):
    t = rng.integers(0, 7, 12)
    p = rng.dirichlet(np.ones(7), 12).astype("float32")
    w = np.array([1.0] * 6 + [0.0] * 6, "float32")
    on_first_half = -np.log(p[np.arange(6), t[:6]]).sum() / 12
    assert float(MaskedCategoricalCrossentropy()(t, p, sample_weight=w)) == pytest.approx(on_first_half,
                                                                                       rel=1e-5)
    va_t = rng.uniform(-1, 1, (12, 2)).astype("float32")
    va_p = rng.uniform(-1, 1, (12, 2)).astype("float32")
    assert float(CCCLoss()(va_t, va_p, sample_weight=w)) == pytest.approx(float(CCCLoss()(va_t[:6], va_p[:6])),
                                                                        abs=1e-5)


@pytest.mark.parametrize("loss", [CCCLoss(), MaskedBinaryCrossentropy(pos_weight=[2.0] * 8),
                                  MaskedCategoricalCrossentropy(label_smoothing=0.1)])
def test_losses_serialise(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


def test_task_uncertainty_combination_by_hand():
    layer = TaskUncertainty(("a", "b"))
    layer.log_vars["a"].assign(np.log(4.0))
    total = float(layer.combine({"a": 2.0, "b": 3.0}))
    assert total == pytest.approx(2.0 / 4.0 + np.log(4.0) + 3.0, rel=1e-6)
    assert layer.weights_dict() == pytest.approx({"a": 0.25, "b": 1.0})


@pytest.mark.parametrize("module", ["keras_mtanet.losses", "keras_mtanet.metrics"])
def test_docstring_examples_hold(module):
    """The Example values in the docstrings are computed, not hoped for."""
    import doctest
    import importlib

    results = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False)
    assert results.attempted > 0 and results.failed == 0


def test_ccc_loss_docstring_value_by_hand():
    # Valence rows (0.1, 0.5) vs (0.2, 0.4): cov 0.02, variances 0.04 and 0.01, equal means -> CCC 0.8.
    # Arousal rows (0.2, -0.3) vs (0.1, -0.2): cov 0.0375, variances 0.0625 and 0.0225 -> CCC 15/17.
    t = np.array([[0.1, 0.2], [0.5, -0.3], [-5.0, -5.0]], "float32")
    p = np.array([[0.2, 0.1], [0.4, -0.2], [0.9, 0.9]], "float32")
    assert float(CCCLoss()(t, p)) == pytest.approx(1 - (0.8 + 15 / 17) / 2, abs=1e-5)


def test_masked_bce_masks_single_entries_across_batches(rng):
    """Per-entry masks: an unannotated AU entry is skipped alone; its row's other AUs still count."""
    t = rng.integers(0, 2, (24, 8)).astype("float32")
    p = rng.uniform(0.05, 0.95, (24, 8)).astype("float32")
    t[rng.random((24, 8)) < 0.4] = -1
    valid = t >= 0
    assert ((~valid).any(axis=1) & valid.any(axis=1)).sum() > 15
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(MaskedBinaryCrossentropy()(t, p)) == pytest.approx(bce[valid].mean(), rel=1e-5)
    for start in (0, 8, 16):
        part = slice(start, start + 8)
        assert float(MaskedBinaryCrossentropy()(t[part], p[part])) == pytest.approx(
            bce[part][valid[part]].mean(), rel=1e-5)
