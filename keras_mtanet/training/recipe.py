"""A training recipe: the JSON config (``DEFAULTS``, ``load_config``, ``check_config``) and what it builds: the
model, its optimizer, learning-rate schedule and losses.

``DEFAULTS`` is the authors' recipe (Zhang & Gu 2020: 112 px, SGD with Nesterov momentum 0.9, lr 1e-3,
weight decay 1e-4, polynomial decay, batch 80, learned uncertainty task weights). The presets' ``train.json``
(``keras_mtanet/presets/registry/<name>/``) override it, e.g. the synthetic-data recipe of the synthetic preset.
Nothing here needs TensorFlow, so a JAX or PyTorch training script can build and compile the same model
(``examples/train_ferplus_jax.py``).
"""

import json

import keras
import numpy as np

from keras_mtanet import losses
from keras_mtanet.errors import UsageError
from keras_mtanet.files import MAX_JSON_BYTES, require_regular_file
from keras_mtanet.model import config as model_config
from keras_mtanet.model.config import BOOLEAN, number, one_of, whole
from keras_mtanet.model.task import MTANet

DEFAULTS = {
    "backbone": model_config.SETTINGS["backbone"].default,
    "input_size": model_config.SETTINGS["input_shape"].default[0],
    "stack_blocks": model_config.SETTINGS["stack_blocks"].default,
    "width": model_config.SETTINGS["width"].default,
    "epochs": 10,
    "batch_size": 80,
    "optimizer": "sgd",
    "learning_rate": 1e-3,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "polynomial",
    "final_learning_rate_fraction": 0.01,
    "warmup_epochs": 0,
    "task_weighting": "uncertainty",
    "au_pos_weight": "sqrt_balanced",
    "augment": True,
    "rand_augment": False,
    "random_erasing": False,
    "balance_expressions": False,
    "seed": 0,
    "mixed_precision": False,
    "strategy": "default",
    "distribution": None,
    "color_mode": model_config.SETTINGS["color_mode"].default,
    "alignment_template": model_config.SETTINGS["alignment_template"].default,
    "synthetic": {"train_videos": 14, "val_videos": 6, "frames": 90, "size": 112},
}
STRATEGIES = ("default", "mirrored", "multiworker")  # tf.distribute, TensorFlow backend (training.tf_distribute)
DISTRIBUTIONS = ("data-parallel",)  # keras.distribution, JAX backend (keras_mtanet.training.keras_distribution)
SCORE_KEY = "val_abaw_total"
CARD_KEYS = ("description", "intended_use", "limitations")  # model-card text a config may carry


def load_config(path=None, **overrides):
    """``DEFAULTS`` updated by a JSON file and then by the non-None ``overrides``, checked by ``check_config``.

    A partial ``"synthetic"`` block updates the default one key by key.
    """
    config = json.loads(json.dumps(DEFAULTS))
    if path is not None and not str(path):
        raise UsageError("empty training config name; give a JSON file (None: the default recipe)")
    if path is not None:
        require_regular_file(path, "training config", UsageError)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JSON_BYTES + 1)
            loaded = None if len(data) > MAX_JSON_BYTES else json.loads(data.decode("utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{path}: training config not found") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a folder, not a training config file") from None
        except OSError as error:
            raise UsageError(f"{path}: unreadable ({error.strerror or error})") from None
        except (UnicodeDecodeError, ValueError) as error:
            raise UsageError(f"{path}: not valid JSON ({error})") from None
        except RecursionError:
            raise UsageError(f"{path}: not a training config (JSON nested too deep)") from None
        if len(data) > MAX_JSON_BYTES:
            raise UsageError(f"{path}: training config larger than {MAX_JSON_BYTES >> 10} KiB; refused")
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}: expected a JSON object of config keys, got {type(loaded).__name__}")
        unknown = set(loaded) - set(DEFAULTS) - set(CARD_KEYS)
        if unknown:
            raise UsageError(f"{path}: unknown config key(s) {', '.join(sorted(map(str, unknown)))}")
        if isinstance(loaded.get("synthetic"), dict):
            loaded = {**loaded, "synthetic": {**config["synthetic"], **loaded["synthetic"]}}
        config.update(loaded)
    config.update({k: v for k, v in overrides.items() if v is not None})
    return check_config(config, path or "training config")


_TEXT = (lambda v: isinstance(v, str), "text")
CONFIG_CHECKS = {
    "epochs": whole(1, 100000),
    "batch_size": whole(1, 65536),
    "optimizer": one_of("sgd", "adamw"),
    "learning_rate": number(0, 10, low_open=True),
    "momentum": number(0, 0.999),
    "weight_decay": number(0, 1),
    "schedule": one_of("cosine", "polynomial", "constant"),
    "final_learning_rate_fraction": number(0, 1),
    "warmup_epochs": number(0, 100000),
    "task_weighting": one_of(*model_config.TASK_WEIGHTINGS),
    "au_pos_weight": one_of("sqrt_balanced", "none", None),
    "augment": BOOLEAN, "rand_augment": BOOLEAN, "random_erasing": BOOLEAN, "balance_expressions": BOOLEAN,
    "mixed_precision": BOOLEAN,
    "seed": whole(0, 2**32 - 1),
    "strategy": one_of(*STRATEGIES),
    "distribution": one_of(None, *DISTRIBUTIONS),
    "synthetic": (lambda v: isinstance(v, dict), "an object"),
    **{key: _TEXT for key in CARD_KEYS},
}
SYNTHETIC_CHECKS = {"train_videos": whole(1, 10000), "val_videos": whole(1, 10000), "frames": whole(1, 100000),
                    "size": whole(16, 1024)}


# The recipe keys that are the model's settings, checked by the architecture's schema (keras_mtanet.model.config).
ARCHITECTURE_KEYS = ("backbone", "stack_blocks", "width", "color_mode", "alignment_template")


def architecture_checks():
    """The checks of the recipe's architecture keys, read from ``keras_mtanet.model.config`` when called."""
    low, high = model_config.INPUT_SIDE
    checks = {key: (model_config.SETTINGS[key].ok, model_config.SETTINGS[key].wanted()) for key in ARCHITECTURE_KEYS}
    return {**checks, "input_size": whole(low, high)}


def check_config(config, where="training config"):
    """``config`` with every key's type and range checked; ``UsageError`` naming ``where`` and the first bad
    key. Keys with no check are left as they are."""
    if not isinstance(config, dict):
        raise UsageError(f"{where}: expected a JSON object of config keys, got {type(config).__name__}")
    for key, (ok, expected) in {**architecture_checks(), **CONFIG_CHECKS}.items():
        if key in config and not ok(config[key]):
            raise UsageError(f"{where}: {key} must be {expected}, got {json.dumps(config[key])[:80]}")
    synthetic_spec = config.get("synthetic", {})
    unknown = set(synthetic_spec) - set(SYNTHETIC_CHECKS)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) in \"synthetic\": {', '.join(sorted(map(str, unknown)))}")
    for key, (ok, expected) in SYNTHETIC_CHECKS.items():
        if key in synthetic_spec and not ok(synthetic_spec[key]):
            raise UsageError(f"{where}: synthetic.{key} must be {expected}, got "
                             f"{json.dumps(synthetic_spec[key])[:80]}")
    if config.get("distribution") is not None and config.get("strategy", "default") != "default":
        raise UsageError(f"{where}: distribution {config['distribution']} (keras.distribution, JAX) and strategy "
                         f"{config['strategy']} (tf.distribute, TensorFlow) exclude each other; choose one")
    return config


def au_pos_weight(au):
    """sqrt(negatives / positives) per AU over annotated entries: lifts the recall of rare AUs."""
    valid = au >= 0
    pos = np.maximum(((au > 0.5) & valid).sum(axis=0), 1)
    neg = np.maximum((valid & (au < 0.5)).sum(axis=0), 1)
    return [float(w) for w in np.sqrt(neg / pos)]


def build_model(config, model_class=MTANet):
    """The ``MTANet`` the config describes, as ``model_class``: ``MTANet`` or a subclass with the same config and
    weights (``tf_distribute.MultiWorkerMTANet`` under ``strategy: multiworker``)."""
    size = int(config["input_size"])
    return model_class(config["backbone"], input_shape=(size, size, 3), stack_blocks=config["stack_blocks"],
                       width=config["width"], color_mode=config["color_mode"],
                       alignment_template=config.get("alignment_template"))


def adopt_architecture(config, source, log=print):
    """``config`` with the architecture of the ``--init`` preset ``source`` (the input size stays the
    config's: every layer's weights are independent of it)."""
    preset = source.get_config()
    for key in ("se_ratio", "head_filters"):
        default = model_config.SETTINGS[key].default
        if preset.get(key, default) != default:
            raise UsageError(f"--init: the preset's {key} is {preset[key]}, but train builds {default}; its "
                             f"{'SE gates' if key == 'se_ratio' else 'head'} could not start from it")
    changed = {key: preset[key] for key in ARCHITECTURE_KEYS[:-1] if config.get(key) != preset[key]}
    if changed:
        log("architecture from the --init preset: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in changed.items()))
    return {**config, **changed}


def init_weights(model, source):
    """Copy into ``model`` the weights of every layer of ``source`` with the same name and weight shapes;
    returns ``(layers copied, names of the layers left as they were)``."""
    by_name = {layer.name: layer for layer in source.layers}
    copied, skipped = 0, []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = by_name.get(layer.name)
        if other is None or [tuple(w.shape) for w in other.weights] != [tuple(w.shape) for w in layer.weights]:
            skipped.append(layer.name)
            continue
        layer.set_weights(other.get_weights())
        copied += 1
    return copied, skipped


def compile_model(model, config, train_index, steps_per_epoch):
    """Compile ``model`` with the config's optimizer and learning-rate schedule (over ``epochs`` x
    ``steps_per_epoch`` steps), the task losses (AU positive weights from ``train_index.au``) and task weighting."""
    total = max(1, int(config["epochs"]) * steps_per_epoch)
    warmup = min(int(round(float(config["warmup_epochs"]) * steps_per_epoch)), total - 1)
    lr = float(config["learning_rate"])
    final = lr * float(config["final_learning_rate_fraction"])
    if config["schedule"] == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(
            lr / 100 if warmup else lr, total - warmup, alpha=final / lr, warmup_target=lr if warmup else None,
            warmup_steps=warmup)
    elif config["schedule"] == "polynomial":
        schedule = WarmupThen(keras.optimizers.schedules.PolynomialDecay(lr, total - warmup, final), lr, warmup)
    elif config["schedule"] == "constant":
        schedule = WarmupThen(None, lr, warmup)
    else:
        raise UsageError(f"unknown schedule {config['schedule']!r} (cosine, polynomial or constant)")
    if config["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config["momentum"], nesterov=True,
                                         weight_decay=config["weight_decay"])
    elif config["optimizer"] == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"])
    else:
        raise UsageError(f"unknown optimizer {config['optimizer']!r} (sgd or adamw)")
    task_losses = losses.default_losses()
    if config["au_pos_weight"] == "sqrt_balanced":
        task_losses["au"] = losses.MaskedBinaryCrossentropy(pos_weight=au_pos_weight(train_index.au))
    model.compile(optimizer=optimizer, loss=task_losses, task_weighting=config["task_weighting"])


@keras.saving.register_keras_serializable(package="keras_mtanet")
class WarmupThen(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from lr/100 to ``lr`` over ``warmup_steps``, then ``after`` (or constant ``lr``)."""

    def __init__(self, after, lr, warmup_steps):
        self.after, self.lr, self.warmup_steps = after, float(lr), int(warmup_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        if self.warmup_steps:
            ramp = self.lr * (0.01 + 0.99 * keras.ops.minimum(step / self.warmup_steps, 1.0))
        else:
            ramp = self.lr
        rest = self.lr if self.after is None else self.after(keras.ops.maximum(step - self.warmup_steps, 0.0))
        return keras.ops.where(step < self.warmup_steps, ramp, rest)

    def get_config(self):
        after = None if self.after is None else keras.saving.serialize_keras_object(self.after)
        return {"after": after, "lr": self.lr, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        return cls(None if after is None else keras.saving.deserialize_keras_object(after), config["lr"],
                   config["warmup_steps"])

