"""SE-ResNet backbones; the depths (block type, blocks per stack) are data in ``keras_mtanet.model.config``.

``SEResNetBackbone`` is the feature extractor as a config-only, registered Keras model (keras-hub's
``Backbone``): normalised images in, the last stack's feature map (stride 32) out. ``MTANet`` holds one as
``model.backbone``.

Reference: Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
"""

import keras

from keras_mtanet.model import blocks, config
from keras_mtanet.model.config import backbone_spec, scaled
from keras_mtanet.presets import folder as preset_folder


def se_resnet_features(x, name="se_resnet50", stack_blocks=None, se_ratio=16, width=1.0, folded=False):
    """Apply the SE-ResNet ``name`` to tensor ``x`` and return the last stack's feature map (stride 32).

    Args:
        x: a Keras tensor (N, H, W, C), already normalised.
        name: one of ``config.BACKBONES``.
        stack_blocks: optional four block counts replacing the standard ones (tiny test models).
        se_ratio: SE reduction ratio; 0 gives a plain ResNet.
        width: multiplier on every stack's filter count (1.0 is the standard network).
        folded: batch norms folded into the convolutions (the inference form; see ``blocks.conv_bn``).
    """
    spec = backbone_spec(name, stack_blocks)
    width = config.check_value("width", width)
    x = blocks.stem(x, filters=scaled(64, width), folded=folded)
    for i, (filters, count) in enumerate(zip(config.STACK_FILTERS, spec["stacks"])):
        x = blocks.stack(x, spec["block"], scaled(filters, width), count, strides=1 if i == 0 else 2,
                         se_ratio=se_ratio, name=f"stack{i + 1}", folded=folded)
    return x


@keras.saving.register_keras_serializable(package="keras_mtanet")
class SEResNetBackbone(keras.Model):
    """An SE-ResNet feature extractor: normalised images (N, H, W, 3) -> feature map (N, H/32, W/32, C).

    Every constructor argument is in ``get_config()``, so ``from_config(get_config())`` rebuilds it.

    Args:
        variant: one of ``config.BACKBONES`` (``"se_resnet18"``, ``"se_resnet34"``, ``"se_resnet50"``,
            ``"se_resnet101"``).
        image_shape: (height, width, 3) of its input; ``None`` sizes are allowed.
        stack_blocks: optional four block counts replacing the variant's (e.g. ``(1, 1, 1, 1)`` for tests).
        se_ratio: squeeze-and-excitation reduction ratio (16 in SE-ResNet; 0 gives a plain ResNet).
        width: multiplier on every stack's filter count.
        folded: the inference form, each batch norm folded into its convolution (see
            ``MTANet.inference_model``); not for training.

    Example:
        >>> backbone = SEResNetBackbone("se_resnet18", image_shape=(112, 112, 3))
        >>> backbone.output.shape
        (None, 4, 4, 512)
        >>> tuned = SEResNetBackbone.from_preset("mtanet_se_resnet18_ferplus_112")  # a task preset's backbone
    """

    def __init__(self, variant="se_resnet50", image_shape=(224, 224, 3), stack_blocks=None, se_ratio=16,
                 width=1.0, folded=False, **kwargs):
        spec = backbone_spec(variant, stack_blocks)  # validates the name and block counts
        se_ratio = config.check_value("se_ratio", se_ratio)  # width: se_resnet_features checks it
        image_shape = tuple(None if d is None else int(d) for d in image_shape)
        inputs = keras.Input(shape=image_shape, name="backbone_input")
        outputs = se_resnet_features(inputs, variant, stack_blocks=stack_blocks, se_ratio=se_ratio,
                                     width=width, folded=folded)
        kwargs.setdefault("name", variant)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.variant = variant
        self.image_shape = image_shape
        self.stack_blocks = None if stack_blocks is None else [int(b) for b in stack_blocks]
        self.se_ratio = int(se_ratio)
        self.width = float(width)
        self.folded = bool(folded)
        self.block_type = spec["block"]

    def get_config(self):
        return {"variant": self.variant, "image_shape": list(self.image_shape), "stack_blocks": self.stack_blocks,
                "se_ratio": self.se_ratio, "width": self.width, "folded": self.folded, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The backbone of a task preset (a registry name, ``"hf://org/repo@rev"`` or a local folder), with its
        trained weights. ``kwargs`` go to ``keras_mtanet.load_pretrained`` (revision, cache_dir, token...). The
        task class is the one the preset's metadata names, found in the Keras registry (``keras_mtanet.MTANet``
        registers itself when imported; ``keras_mtanet.SEResNetBackbone`` imports it)."""
        return preset_folder.load(preset, **kwargs).backbone

    def apply_to(self, x):
        """Apply this backbone's layers to the Keras tensor ``x`` as part of a bigger functional graph.

        Unlike ``self(x)``, the layers join the outer model directly (they are shared with this backbone, not
        nested inside it), so the outer model's weight layout is that of a model built from the blocks
        themselves: ``MTANet`` files written before ``SEResNetBackbone`` existed still load.
        """
        produced = {}
        steps = []
        for layer in self.layers:  # topological order; read each layer's own graph before it is shared
            if isinstance(layer, keras.layers.InputLayer):
                produced[id(layer.output)] = x
            else:
                steps.append((layer, layer.input, layer.output))
        for layer, layer_input, layer_output in steps:
            args = keras.tree.map_structure(lambda t: produced[id(t)], layer_input)
            produced[id(layer_output)] = layer(args)
        return produced[id(self.output)]
