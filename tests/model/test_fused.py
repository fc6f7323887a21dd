"""The faster layers compute what their Keras parents compute; the inference form matches the model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtanet import MTANet
from keras_mtanet.model import fused
from tests.conftest import TINY


def test_fused_batch_norm_matches_keras_in_training_and_inference(rng):
    x = rng.normal(2.0, 3.0, (6, 5, 4, 8)).astype("float32")
    ours = fused.BatchNormalization(momentum=0.9, epsilon=1e-5)
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [rng.uniform(0.5, 1.5, 8), rng.normal(0, 1, 8), rng.normal(0, 1, 8), rng.uniform(0.5, 2, 8)]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    for training in (True, False, True):
        with tf.GradientTape(persistent=True) as tape:
            xt = tf.constant(x)
            tape.watch(xt)
            a, b = ours(xt, training=training), theirs(xt, training=training)
            loss_a, loss_b = tf.reduce_sum(a * a), tf.reduce_sum(b * b)
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(tape.gradient(loss_a, xt), tape.gradient(loss_b, xt), atol=1e-3)
        np.testing.assert_allclose(tape.gradient(loss_a, ours.gamma), tape.gradient(loss_b, theirs.gamma), rtol=1e-4)
        # The moving statistics move the same way (Keras keeps the biased variance).
        for mine, keras_ in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(mine, keras_, rtol=1e-5, atol=1e-6)
    expected_mean = weights[2] * 0.9 ** 2 + 0.1 * 0.9 * x.mean((0, 1, 2)) + 0.1 * x.mean((0, 1, 2))
    np.testing.assert_allclose(ours.moving_mean, expected_mean, rtol=1e-5)


def test_pointwise_conv_bias_conv_and_leaky_relu_match_keras(rng):
    x = rng.normal(size=(5, 1, 1, 12)).astype("float32")
    ours, theirs = fused.PointwiseConv2D(4, 1, activation="relu"), keras.layers.Conv2D(4, 1, activation="relu")
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    assert ours.kernel.shape == (1, 1, 12, 4)
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-6)
    big = rng.normal(size=(2, 3, 3, 12)).astype("float32")  # not 1 x 1: the convolution itself
    np.testing.assert_allclose(ours(big), theirs(big), atol=1e-6)
    np.testing.assert_allclose(fused.LeakyReLU(negative_slope=0.3)(big), keras.layers.LeakyReLU(0.3)(big), atol=0)
    conv = fused.BiasConv2D(3, 3, padding="same", activation="relu")
    plain = keras.layers.Conv2D(3, 3, padding="same", activation="relu")
    conv.build(big.shape)
    plain.build(big.shape)
    conv.set_weights([w + 0.1 for w in plain.get_weights()])
    plain.set_weights(conv.get_weights())
    np.testing.assert_allclose(conv(big), plain(big), atol=1e-5)


def trained_tiny(rng):
    """A tiny model whose batch norms have non-trivial statistics and scales."""
    model = MTANet(**TINY)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


def test_inference_model_folds_batch_norm_and_matches(rng):
    model = trained_tiny(rng)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = model.predict_on_batch(x)
    fast = model.inference_model()
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in fast.layers)
    assert fast.get_config()["fold_batchnorm"] is True
    out = fast.predict_on_batch(x)
    for key in expected:
        np.testing.assert_allclose(out[key], expected[key], atol=1e-4)
    half = model.inference_model("bfloat16")
    out = half.predict_on_batch(x)
    assert out["va"].dtype == np.float32  # outputs stay float32
    np.testing.assert_allclose(out["expr"].sum(1), 1.0, atol=1e-5)
    assert np.abs(out["va"] - expected["va"]).max() < 0.1
    with pytest.raises(ValueError, match="precision must be one of"):
        model.inference_model("int4")
