"""Squeeze-and-excitation residual blocks as pure functions over Keras tensors.

Layer names take a fixed prefix (``stack2_block1_...``) so that name-based work stays readable and stable:
batch-norm folding (``fused.fold_batchnorm``), ports of other weights, per-layer inspection. (Keras 3
``.weights.h5`` files are keyed by layer class and order, not by these names.) Strided convolutions pad
explicitly and symmetrically, as PyTorch does, so weights ported from a PyTorch SE-ResNet give the same
activations; stride-1 convolutions use ``"same"``, which is identical there.

Reference: Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018; He et al., "Deep Residual Learning
for Image Recognition", CVPR 2016.
"""

from keras import layers

from keras_mtanet.model import fused

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def conv_bn(x, filters, kernel_size, strides=1, activation="relu", name=None, folded=False):
    """Convolution (no bias) -> batch norm -> optional ReLU, padding like PyTorch's ``padding=k//2``.

    ``folded``: the inference form, where the batch norm is folded into the convolution's kernel and bias
    (``MTANet.inference_model``): one convolution with a bias, and no batch-norm layer.
    """
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if folded:  # conv + bias + ReLU in one layer: one fused kernel
        return fused.BiasConv2D(filters, kernel_size, strides=strides, padding=padding, activation=activation,
                                name=f"{name}_conv")(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = fused.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def se_block(x, se_ratio=16, name=None, folded=False):
    """Squeeze-and-excitation: channel gates from global context, applied by broadcasting.

    Pooling keeps the (1, 1, C) shape and the two bottleneck layers are 1x1 convolutions, so no reshape is
    needed; they hold the same parameters as the paper's fully connected layers. In the inference form
    (``folded``) they run as matrix products (``fused.PointwiseConv2D``).
    """
    channels = x.shape[-1]
    reduced = max(1, channels // se_ratio)
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
    conv = fused.PointwiseConv2D if folded else layers.Conv2D
    s = conv(reduced, 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = conv(channels, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_excite")([x, s])


def _shortcut(x, filters, strides, name, folded):
    if strides == 1 and x.shape[-1] == filters:
        return x
    return conv_bn(x, filters, 1, strides=strides, activation=None, name=f"{name}_proj", folded=folded)


def basic_block(x, filters, strides=1, se_ratio=16, name=None, folded=False):
    """Two 3x3 convolutions (ResNet-18/34) with an SE gate before the residual addition."""
    shortcut = _shortcut(x, filters, strides, name, folded)
    y = conv_bn(x, filters, 3, strides=strides, name=f"{name}_1", folded=folded)
    y = conv_bn(y, filters, 3, activation=None, name=f"{name}_2", folded=folded)
    if se_ratio:
        y = se_block(y, se_ratio, name=name, folded=folded)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def bottleneck_block(x, filters, strides=1, se_ratio=16, name=None, folded=False):
    """1x1 -> 3x3 (strided, as in ResNet v1.5) -> 1x1 expanding 4x, with an SE gate before the addition."""
    out_filters = 4 * filters
    shortcut = _shortcut(x, out_filters, strides, name, folded)
    y = conv_bn(x, filters, 1, name=f"{name}_1", folded=folded)
    y = conv_bn(y, filters, 3, strides=strides, name=f"{name}_2", folded=folded)
    y = conv_bn(y, out_filters, 1, activation=None, name=f"{name}_3", folded=folded)
    if se_ratio:
        y = se_block(y, se_ratio, name=name, folded=folded)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def stack(x, block, filters, blocks, strides, se_ratio=16, name=None, folded=False):
    """``blocks`` residual blocks; the first one carries the stride and the projection shortcut."""
    block_fn = BLOCKS[block]
    for i in range(blocks):
        x = block_fn(x, filters, strides=strides if i == 0 else 1, se_ratio=se_ratio,
                     name=f"{name}_block{i + 1}", folded=folded)
    return x


def stem(x, filters=64, name="stem", folded=False):
    """7x7/2 convolution and 3x3/2 max pooling: a quarter of the input resolution."""
    x = conv_bn(x, filters, 7, strides=2, name=name, folded=folded)
    x = layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)


__all__ = ["conv_bn", "se_block", "basic_block", "bottleneck_block", "stack", "stem"]
