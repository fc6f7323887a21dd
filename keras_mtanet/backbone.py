"""SE-ResNet backbones. A depth is an entry in ``BACKBONES``: the block type and blocks per stack."""

import keras

from keras_mtanet import blocks

BACKBONES = {
    "se_resnet18": {"block": "basic", "stacks": (2, 2, 2, 2)},
    "se_resnet34": {"block": "basic", "stacks": (3, 4, 6, 3)},
    "se_resnet50": {"block": "bottleneck", "stacks": (3, 4, 6, 3)},
    "se_resnet101": {"block": "bottleneck", "stacks": (3, 4, 23, 3)},
}
STACK_FILTERS = (64, 128, 256, 512)


def backbone_spec(name, stack_blocks=None):
    """The block type and per-stack block counts of ``name``; ``stack_blocks`` overrides the counts."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    spec = dict(BACKBONES[name])
    if stack_blocks is not None:
        stack_blocks = tuple(int(b) for b in stack_blocks)
        if len(stack_blocks) != len(STACK_FILTERS) or min(stack_blocks) < 1:
            raise ValueError(f"stack_blocks must be four positive integers, got {stack_blocks}.")
        spec["stacks"] = stack_blocks
    return spec


def se_resnet_features(x, name="se_resnet50", stack_blocks=None, se_ratio=16, width=1.0, folded=False):
    """Apply the SE-ResNet ``name`` to tensor ``x`` and return the last stack's feature map (stride 32).

    Args:
        x: a Keras tensor (N, H, W, C), already normalised.
        name: one of ``BACKBONES``.
        stack_blocks: optional four block counts replacing the standard ones (tiny test models).
        se_ratio: SE reduction ratio; 0 gives a plain ResNet.
        width: multiplier on every stack's filter count (1.0 is the standard network).
        folded: batch norms folded into the convolutions (the inference form; see ``blocks.conv_bn``).
    """
    spec = backbone_spec(name, stack_blocks)
    x = blocks.stem(x, filters=_scaled(64, width), folded=folded)
    for i, (filters, count) in enumerate(zip(STACK_FILTERS, spec["stacks"])):
        x = blocks.stack(x, spec["block"], _scaled(filters, width), count, strides=1 if i == 0 else 2,
                         se_ratio=se_ratio, name=f"stack{i + 1}", folded=folded)
    return x


def SEResNet(name="se_resnet50", input_shape=(224, 224, 3), stack_blocks=None, se_ratio=16, width=1.0):
    """A standalone SE-ResNet feature extractor (no classifier) as a functional ``keras.Model``.

    Example:
        >>> backbone = SEResNet("se_resnet18", input_shape=(112, 112, 3))
        >>> backbone.output.shape
        (None, 4, 4, 512)
    """
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = se_resnet_features(inputs, name, stack_blocks=stack_blocks, se_ratio=se_ratio, width=width)
    return keras.Model(inputs, outputs, name=name)


def _scaled(filters, width):
    return max(8, int(round(filters * width)))
