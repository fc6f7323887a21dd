"""The one schema of MTANet's architecture: every setting with its default and its bounds, the SE-ResNet
depths, and the weight and activation counts a config implies.

The constructors (``MTANet``, ``SEResNetBackbone``, ``ImageConverter``), the checks of untrusted presets (through
``MTANet.check_config``, found by ``keras_mtanet.presets`` in the Keras registry), the training recipe
(``keras_mtanet.training.recipe``) and the command line all read ``SETTINGS`` here at call time, so a bound is
changed in one place.
"""

import math
from typing import Callable, NamedTuple

from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, VA_NAMES

# A depth is an entry: the block type and blocks per stack (Hu, Shen & Sun, CVPR 2018; He et al., CVPR 2016).
BACKBONES = {
    "se_resnet18": {"block": "basic", "stacks": (2, 2, 2, 2)},
    "se_resnet34": {"block": "basic", "stacks": (3, 4, 6, 3)},
    "se_resnet50": {"block": "bottleneck", "stacks": (3, 4, 6, 3)},
    "se_resnet101": {"block": "bottleneck", "stacks": (3, 4, 23, 3)},
}
STACK_FILTERS = (64, 128, 256, 512)
COLOR_MODES = ("rgb", "grayscale")
TASK_WEIGHTINGS = ("fixed", "uncertainty")  # MTANet.compile: fixed loss weights or learned uncertainty


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Setting(NamedTuple):
    """One architecture setting: its default, a test of a value (JSON types: lists, not tuples) and what the
    test wants, in words, for messages (or a function giving them, for rules that read a bound when they run)."""
    default: object
    ok: Callable[[object], bool]
    expected: str | Callable[[], str]

    def wanted(self):
        return self.expected() if callable(self.expected) else self.expected


# Rule builders: (test, what it wants in words). The training recipe builds its own keys' rules with them too.
def whole(low, high=None):
    return (lambda v: is_int(v) and v >= low and (high is None or v <= high),
            f"a whole number from {low}" + (f" to {high}" if high is not None else " up"))


def number(low, high=None, low_open=False):
    def ok(v):
        return is_number(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
    bound = f"above {low}" if low_open else f"from {low}"
    return ok, f"a number {bound}" + (f" to {high}" if high is not None else "")


def one_of(*choices):
    return lambda v: v in choices, "one of " + ", ".join("null" if c is None else str(c) for c in choices)


BOOLEAN = (lambda v: isinstance(v, bool), "true or false")


def _template_ok(value):
    low, high = TEMPLATE_RANGE
    return (isinstance(value, list) and len(value) == 5
            and all(isinstance(p, list) and len(p) == 2 and all(is_number(c) and low <= c <= high for c in p)
                    for p in value))


def _blocks_ok(value):
    low, high = STACK_BLOCK_RANGE
    return value is None or (isinstance(value, list) and len(value) == len(STACK_FILTERS)
                             and all(is_int(b) and low <= b <= high for b in value))


def _shape_ok(value):
    low, high = INPUT_SIDE
    return (isinstance(value, list) and len(value) == 3 and all(is_int(v) for v in value)
            and low <= value[0] <= high and low <= value[1] <= high and value[2] == 3)


INPUT_SIDE = (16, 1024)  # pixels, each side of the input crop
STACK_BLOCK_RANGE = (1, 64)  # blocks per stack when stack_blocks overrides a depth
TEMPLATE_RANGE = (-1.0, 2.0)  # alignment template coordinates, in units of the crop (0..1 inside it)

# MTANet's config keys (``MTANet.get_config()``, a preset's config.json) and their rules.
SETTINGS = {
    "backbone": Setting("se_resnet50", lambda v: isinstance(v, str) and v in BACKBONES,
                        "one of " + ", ".join(BACKBONES)),
    "input_shape": Setting([112, 112, 3], _shape_ok,
                           lambda: f"[height, width, 3] with sides from {INPUT_SIDE[0]} to {INPUT_SIDE[1]}"),
    "stack_blocks": Setting(None, _blocks_ok, lambda: f"null or four block counts from {STACK_BLOCK_RANGE[0]} to "
                                                      f"{STACK_BLOCK_RANGE[1]}"),
    "width": Setting(1.0, *number(0.01, 4.0)),
    "se_ratio": Setting(16, *whole(0, 4096)),
    "head_filters": Setting(512, *whole(1, 8192)),
    "dropout": Setting(0.5, *number(0.0, 0.99)),
    "negative_slope": Setting(0.3, *number(-10.0, 10.0)),
    # Older configs carry the output sizes; the outputs are fixed to the label sets (keras_mtanet.labels).
    "num_aus": Setting(len(AU_NAMES), *whole(len(AU_NAMES), len(AU_NAMES))),
    "num_expressions": Setting(len(EXPR_NAMES), *whole(len(EXPR_NAMES), len(EXPR_NAMES))),
    "fold_batchnorm": Setting(False, *BOOLEAN),
    "color_mode": Setting("rgb", *one_of(*COLOR_MODES)),
    "alignment_template": Setting(None, lambda v: v is None or _template_ok(v),
                                  lambda: "null or five [x, y] points in unit coordinates of the crop, each from "
                                          f"{TEMPLATE_RANGE[0]} to {TEMPLATE_RANGE[1]}"),
    "name": Setting("mtanet", lambda v: isinstance(v, str) and 0 < len(v) <= 128, "a short text"),
    "trainable": Setting(True, *BOOLEAN),
}


def plain(value):
    """``value`` in JSON's types (tuples as lists, numpy scalars as Python numbers), as the rules test them."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    return value


def check_value(key, value):
    """``value`` for setting ``key`` in JSON's types, or ``ValueError`` saying what the setting must be."""
    rule = SETTINGS[key]
    value = plain(value)
    if not rule.ok(value):
        raise ValueError(f"{key} must be {rule.wanted()}, got {value!r}")
    return value


def check(config):
    """A whole config (a dict from JSON: a preset's config.json) checked key by key and completed with the
    defaults; ``ValueError`` names the first unknown or bad key."""
    if not isinstance(config, dict):
        raise ValueError(f"expected a JSON object, got {type(config).__name__}")
    unknown = sorted(map(str, set(config) - set(SETTINGS)))
    if unknown:
        raise ValueError(f"unknown model config key(s) {', '.join(unknown)}")
    full = {key: rule.default for key, rule in SETTINGS.items()} | config
    return {key: check_value(key, value) for key, value in full.items()}


def backbone_spec(name, stack_blocks=None):
    """The block type and per-stack block counts of depth ``name``; ``stack_blocks`` overrides the counts."""
    check_value("backbone", name)
    spec = dict(BACKBONES[name])
    if stack_blocks is not None:
        spec["stacks"] = tuple(check_value("stack_blocks", stack_blocks))
    return spec


def scaled(filters, width):
    """A stack's filter count at ``width`` (at least 8)."""
    return max(8, int(round(filters * width)))


def parameters(config):
    """The number of weights (trainable and not) an ``MTANet`` built from ``config`` holds, computed from the
    config alone, so a preset's config can be checked against its weights file before anything is built."""
    config = check(config)
    folded, width, ratio = config["fold_batchnorm"], config["width"], config["se_ratio"]

    def conv_bn(cin, cout, k):  # a convolution without bias and its batch norm, or the folded conv + bias
        return k * k * cin * cout + (cout if folded else 4 * cout)

    def se(channels):
        if not ratio:
            return 0
        reduced = max(1, channels // ratio)
        return channels * reduced + reduced + reduced * channels + channels

    spec = backbone_spec(config["backbone"], config["stack_blocks"])
    channels = scaled(64, width)
    total = conv_bn(3, channels, 7)
    for i, (filters, count) in enumerate(zip(STACK_FILTERS, spec["stacks"])):
        filters = scaled(filters, width)
        for b in range(count):
            strides = 2 if i > 0 and b == 0 else 1
            out = filters if spec["block"] == "basic" else 4 * filters
            if strides != 1 or channels != out:
                total += conv_bn(channels, out, 1)
            if spec["block"] == "basic":
                total += conv_bn(channels, filters, 3) + conv_bn(filters, filters, 3)
            else:
                total += conv_bn(channels, filters, 1) + conv_bn(filters, filters, 3) + conv_bn(filters, out, 1)
            total += se(out)
            channels = out
    head = config["head_filters"]
    total += 2 * (channels * head + head)
    for outputs in (len(VA_NAMES), len(AU_NAMES), len(EXPR_NAMES)):
        total += 2 * head * outputs + outputs
    return total + 3  # the three learned task log-variances (losses.TaskUncertainty)


def activation_bytes(config):
    """The float32 bytes of every layer output an ``MTANet`` built from ``config`` computes for one image (each
    convolution's, the pooled stem's and each block's sum): what a forward pass may hold, computed from the config
    alone. Grows as input size^2 x width x depth."""
    config = check(config)
    height, width = config["input_shape"][:2]
    spec = backbone_spec(config["backbone"], config["stack_blocks"])
    h, w = -(-height // 2), -(-width // 2)
    channels = scaled(64, config["width"])
    total = h * w * channels  # the stem's convolution
    h, w = -(-h // 2), -(-w // 2)
    total += h * w * channels  # its pooling
    for i, (filters, count) in enumerate(zip(STACK_FILTERS, spec["stacks"])):
        filters = scaled(filters, config["width"])
        for b in range(count):
            if i > 0 and b == 0:
                h, w = -(-h // 2), -(-w // 2)
            out = filters if spec["block"] == "basic" else 4 * filters
            inner = 1 if spec["block"] == "basic" else 2  # convolutions of `filters` channels before the last
            total += h * w * (inner * filters + out * (3 if b == 0 else 2))  # + projection, the sum
            channels = out
    return 4 * total
