"""Layers that compute faster on the TensorFlow backend, with the same variables as their Keras parents.

Keras addresses weights in ``.weights.h5`` files by class name and order (``batch_normalization_3``), so the
drop-in replacements used in the trainable model keep their parents' class names: weight files stay
interchangeable with models built from stock Keras layers.

``BatchNormalization``: Keras 3's ``BatchNormalization`` computes with separate moment, multiply and add
ops, upcasting bfloat16 / float16 inputs to float32 around each of them. On the TensorFlow backend, NHWC
feature maps can go through one ``FusedBatchNormV3`` op instead (one gradient op in training), which
TensorFlow's oneDNN graph passes can also merge with the preceding convolution and a following ReLU.
Same variables, config and numbers (to float rounding) as ``keras.layers.BatchNormalization``.

``BiasConv2D``: a ``Conv2D`` whose bias is added with ``tf.nn.bias_add`` and its activation applied in the
same layer: the Conv2D + BiasAdd + Relu form that TensorFlow's graph optimizer knows how to fuse. Used by
the batch-norm-folded inference form.

``LeakyReLU``: computed as ``max(x, slope * x)``. TensorFlow 2.21's graph optimizer fails on the
training graph of conv + bias + ``LeakyRelu`` ("remapper failed: ... LeakyReluGrad ... missing node") and
then skips its fusions for the whole model; this form does not trigger it.

``PointwiseConv2D``: a 1x1 ``Conv2D`` that runs as a matrix product when its input is 1 x 1 pixel (the SE
gate's two layers): a convolution primitive on a 1 x 1 map costs far more than the matmul it amounts to.

On JAX and PyTorch each layer runs its Keras parent's code, so a model built from them has the same weights
and outputs on every backend. ``fold_batchnorm`` makes the inference form these layers serve.
"""

import keras
import numpy as np
from keras import layers

PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def fold_batchnorm(model, precision="float32"):
    """A copy of the ``MTANet`` ``model`` with every batch norm folded into the convolution before it.

    ``conv -> BN`` becomes one convolution with kernel ``k * s`` and bias ``beta - mean * s``, where
    ``s = gamma / sqrt(variance + epsilon)`` (computed in float64). Layers are matched by their fixed names
    (``stack2_block1_1_conv`` / ``stack2_block1_1_bn``, see ``blocks.conv_bn``); layers without a batch norm
    are copied. The copy is built under the ``precision`` policy (see ``PRECISION_POLICIES``) and keeps the
    model's ``metadata``.
    """
    if precision not in PRECISION_POLICIES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_POLICIES)}, got {precision!r}")
    config = {**model.get_config(), "fold_batchnorm": True}
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[precision])
    try:
        fast = type(model).from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    source = {layer.name: layer for layer in model.layers}
    for layer in fast.layers:
        if not layer.weights:
            continue
        bn = source.get(layer.name[:-len("_conv")] + "_bn") if layer.name.endswith("_conv") else None
        if bn is None:  # no batch norm to fold (or the model is folded already)
            layer.set_weights(source[layer.name].get_weights())
            continue
        gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
        kernel = np.asarray(source[layer.name].get_weights()[0], np.float64)
        scale = gamma / np.sqrt(variance + bn.epsilon)
        layer.set_weights([(kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)])
    fast.metadata = getattr(model, "metadata", None)
    return fast


@keras.saving.register_keras_serializable(package="keras_mtanet")
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with TensorFlow's fused kernel for 4-D channels-last inputs.

    Other cases (other backends, masks, renorm, other axes or ranks, no scale or centre) use the parent
    implementation.
    """

    def _can_fuse(self, inputs, mask):
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and len(inputs.shape) == 4 and axis in (-1, 3) and self.scale and self.center
                and not getattr(self, "synchronized", False))

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        gamma = tf.cast(self.gamma.value, tf.float32)
        beta = tf.cast(self.beta.value, tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                                 data_format="NHWC", is_training=True)
            # The op returns the unbiased (Bessel-corrected) variance; Keras keeps the biased one.
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum
                                        + tf.stop_gradient(variance) * (1.0 - momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean.value, tf.float32),
                variance=tf.cast(self.moving_variance.value, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_mtanet")
class PointwiseConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` with a 1x1 kernel; on a 1 x 1 input it is computed as a dense layer.

    The kernel keeps its (1, 1, in, out) shape, so weights load either way.
    """

    def call(self, inputs):
        if (keras.backend.backend() != "tensorflow" or tuple(self.kernel_size) != (1, 1)
                or tuple(inputs.shape[1:3]) != (1, 1) or self.groups != 1 or self.data_format != "channels_last"):
            return super().call(inputs)
        import tensorflow as tf

        x = tf.reshape(inputs, (-1, inputs.shape[-1]))
        y = tf.matmul(x, tf.reshape(tf.cast(self.kernel, x.dtype), (self.kernel.shape[2], self.filters)))
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, y.dtype))
        if self.activation is not None:
            y = self.activation(y)
        return tf.reshape(y, (-1, 1, 1, self.filters))


@keras.saving.register_keras_serializable(package="keras_mtanet")
class BiasConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` adding its bias with ``tf.nn.bias_add`` so conv + bias + ReLU fuse."""

    def call(self, inputs):
        if (keras.backend.backend() != "tensorflow" or not self.use_bias or self.groups != 1
                or self.data_format != "channels_last"):
            return super().call(inputs)
        import tensorflow as tf

        y = self.convolution_op(inputs, self.kernel)
        y = tf.nn.bias_add(y, tf.cast(self.bias, y.dtype))
        return self.activation(y) if self.activation is not None else y


@keras.saving.register_keras_serializable(package="keras_mtanet")
class LeakyReLU(layers.LeakyReLU):
    """``keras.layers.LeakyReLU`` (slope in [0, 1]) as ``max(x, slope * x)``; see the module docstring."""

    def call(self, inputs):
        if not 0.0 <= self.negative_slope <= 1.0:
            return super().call(inputs)
        return keras.ops.maximum(inputs, inputs * keras.ops.cast(self.negative_slope, inputs.dtype))
