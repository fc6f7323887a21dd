"""The image converter: what a preset's weights expect of a face crop, kept in one saved object.

It owns the crop size, the colour mode, the normalisation to [-1, 1] and the five-point alignment template.
The model applies its converter as its first layer, so ``MTANet`` takes plain 0-255 RGB crops and nobody
re-implements the normalisation; the inference code reads the crop size and template from the same object,
so preprocessing cannot drift from the weights. Presets store its config as ``image_converter.json``.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_mtanet.model import config

# ITU-R BT.601 luma, as OpenCV's and PIL's RGB -> grey conversions use.
LUMA = (0.299, 0.587, 0.114)
# Image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner, in unit
# coordinates of the crop: the widely used 112 x 112 five-point layout (ArcFace; Aff-Wild2-style crops).
DEFAULT_TEMPLATE = (np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                              [70.7299, 92.2041]]) / 112.0).tolist()


@keras.saving.register_keras_serializable(package="keras_mtanet")
class Grayscale(layers.Layer):
    """RGB -> grey (BT.601 luma) repeated over three channels: a model trained on grey faces sees colour input
    the way it saw its training images; grey input (three equal channels) passes unchanged."""

    def call(self, inputs):
        weights = ops.convert_to_tensor(LUMA, dtype=inputs.dtype)
        grey = ops.sum(inputs * weights, axis=-1, keepdims=True)
        return ops.repeat(grey, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_mtanet")
class ImageConverter(layers.Layer):
    """Face crops in [0, 255] -> the network's input: optional grey conversion, then ``x * scale + offset``.

    Args:
        image_size: (height, width) of the face crops in pixels.
        color_mode: ``"rgb"``, or ``"grayscale"`` for weights trained on grey faces (FER+): colour input is
            converted to grey (BT.601) first, so it is seen as in training.
        scale, offset: the normalisation ``x * scale + offset``; the default maps [0, 255] to [-1, 1].
        alignment_template: five (x, y) points in unit coordinates of the crop where the eyes, nose tip and
            mouth corners are placed by alignment; ``None`` is ``DEFAULT_TEMPLATE``.

    Example:
        >>> converter = ImageConverter(image_size=(112, 112), color_mode="grayscale")
        >>> converter.template_pixels().shape
        (5, 2)
    """

    def __init__(self, image_size=(112, 112), color_mode="rgb", scale=1.0 / 127.5, offset=-1.0,
                 alignment_template=None, **kwargs):
        kwargs.setdefault("name", "image_converter")
        super().__init__(**kwargs)
        image_size = tuple(int(d) for d in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (height, width) in pixels, got {image_size}.")
        config.check_value("color_mode", color_mode)
        self.image_size = image_size
        self.color_mode = color_mode
        self.scale = float(scale)
        self.offset = float(offset)
        self.alignment_template = config.check_value("alignment_template", alignment_template)
        self.grayscale = Grayscale(name="grayscale") if color_mode == "grayscale" else None

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.grayscale is not None:
            x = self.grayscale(x)
        return x * ops.cast(self.scale, x.dtype) + ops.cast(self.offset, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def template(self):
        """The alignment template in unit coordinates, (5, 2)."""
        return np.asarray(self.alignment_template if self.alignment_template is not None
                          else DEFAULT_TEMPLATE, np.float64)

    def template_pixels(self):
        """The alignment template in pixels of this converter's crop, (5, 2) as (x, y)."""
        height, width = self.image_size
        return self.template * np.array([width, height], np.float64)

    def get_config(self):
        config = super().get_config()
        config.update({"image_size": list(self.image_size), "color_mode": self.color_mode, "scale": self.scale,
                       "offset": self.offset, "alignment_template": self.alignment_template})
        return config
