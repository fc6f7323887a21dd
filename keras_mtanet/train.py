"""Training recipes: a JSON config -> a trained preset folder, with ``model.fit`` and standard callbacks.

``DEFAULTS`` is the authors' recipe (Zhang & Gu 2020: 112 px, SGD with Nesterov momentum 0.9, lr 1e-3,
weight decay 1e-4, polynomial decay, batch 80, learned uncertainty task weights). Configs in ``zoo/`` override
it, e.g. the synthetic-data recipe of the embedded default preset.
"""

import contextlib
import importlib.util
import json
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_mtanet import hub, losses, zoo
from keras_mtanet.backbone import BACKBONES
from keras_mtanet.data import affectnet, affwild2, ferplus, synthetic
from keras_mtanet.data import augment as augmentation
from keras_mtanet.data.errors import DataError
from keras_mtanet.metrics import abaw_scores
from keras_mtanet.model import MTANet

DEFAULTS = {
    "backbone": "se_resnet50",
    "input_size": 112,
    "stack_blocks": None,
    "width": 1.0,
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
    "color_mode": "rgb",
    "alignment_template": None,
    "synthetic": {"train_videos": 14, "val_videos": 6, "frames": 90, "size": 112},
}
FORMATS = ("affwild2", "affectnet", "ferplus", "synthetic")
STRATEGIES = ("default", "mirrored", "multiworker")
SCORE_KEY = "val_abaw_total"
CARD_KEYS = ("description", "intended_use", "limitations")  # model-card text a config may carry


def load_config(path=None, **overrides):
    """``DEFAULTS`` updated by a JSON file and then by the non-None ``overrides``, checked by ``check_config``.

    A partial ``"synthetic"`` block updates the default one key by key.
    """
    config = json.loads(json.dumps(DEFAULTS))
    if path:
        try:
            with open(path, "rb") as f:
                loaded = json.loads(f.read(1 << 20).decode("utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: training config not found") from None
        except IsADirectoryError:
            raise DataError(f"{path}: is a folder, not a training config file") from None
        except OSError as error:
            raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
        except (UnicodeDecodeError, ValueError) as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(loaded, dict):
            raise DataError(f"{path}: expected a JSON object of config keys, got {type(loaded).__name__}")
        unknown = set(loaded) - set(DEFAULTS) - set(CARD_KEYS)
        if unknown:
            raise DataError(f"{path}: unknown config key(s) {', '.join(sorted(map(str, unknown)))}")
        if isinstance(loaded.get("synthetic"), dict):
            loaded = {**loaded, "synthetic": {**config["synthetic"], **loaded["synthetic"]}}
        config.update(loaded)
    config.update({k: v for k, v in overrides.items() if v is not None})
    return check_config(config, path or "training config")


def _int(low, high=None):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high), \
        f"a whole number from {low}" + (f" to {high}" if high is not None else " up")


def _number(low, high=None, low_open=False):
    def ok(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and (high is None or v <= high)
    bound = f"above {low}" if low_open else f"from {low}"
    return ok, f"a number {bound}" + (f" to {high}" if high is not None else "")


def _one_of(*choices):
    return lambda v: v in choices, "one of " + ", ".join("null" if c is None else str(c) for c in choices)


_BOOL = (lambda v: isinstance(v, bool), "true or false")
_TEXT = (lambda v: isinstance(v, str), "text")
CONFIG_CHECKS = {
    "backbone": _one_of(*BACKBONES),
    "input_size": _int(16, 1024),
    "stack_blocks": (lambda v: v is None or (isinstance(v, list) and len(v) == 4 and all(
        isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 64 for b in v)),
        "null or a list of four block counts from 1 to 64"),
    "width": _number(0.01, 4.0),
    "epochs": _int(1, 100000),
    "batch_size": _int(1, 65536),
    "optimizer": _one_of("sgd", "adamw"),
    "learning_rate": _number(0, 10, low_open=True),
    "momentum": _number(0, 0.999),
    "weight_decay": _number(0, 1),
    "schedule": _one_of("cosine", "polynomial", "constant"),
    "final_learning_rate_fraction": _number(0, 1),
    "warmup_epochs": _number(0, 100000),
    "task_weighting": _one_of("fixed", "uncertainty"),
    "au_pos_weight": _one_of("sqrt_balanced", "none", None),
    "augment": _BOOL, "rand_augment": _BOOL, "random_erasing": _BOOL, "balance_expressions": _BOOL,
    "mixed_precision": _BOOL,
    "seed": _int(0, 2**32 - 1),
    "strategy": _one_of(*STRATEGIES),
    "color_mode": _one_of("rgb", "grayscale"),
    "alignment_template": (lambda v: v is None or (isinstance(v, list) and len(v) == 5 and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                    and -1 <= c <= 2 for c in p) for p in v)),
        "null or five [x, y] points in unit coordinates of the crop"),
    "synthetic": (lambda v: isinstance(v, dict), "an object"),
    **{key: _TEXT for key in CARD_KEYS},
}
SYNTHETIC_CHECKS = {"train_videos": _int(1, 10000), "val_videos": _int(1, 10000), "frames": _int(1, 100000),
                    "size": _int(16, 1024)}


def check_config(config, where="training config"):
    """``config`` with every key's type and range checked; ``DataError`` naming ``where`` and the first bad
    key. Keys with no check are left as they are."""
    if not isinstance(config, dict):
        raise DataError(f"{where}: expected a JSON object of config keys, got {type(config).__name__}")
    for key, (ok, expected) in CONFIG_CHECKS.items():
        if key in config and not ok(config[key]):
            raise DataError(f"{where}: {key} must be {expected}, got {json.dumps(config[key])[:80]}")
    synthetic_spec = config.get("synthetic", {})
    unknown = set(synthetic_spec) - set(SYNTHETIC_CHECKS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) in \"synthetic\": {', '.join(sorted(map(str, unknown)))}")
    for key, (ok, expected) in SYNTHETIC_CHECKS.items():
        if key in synthetic_spec and not ok(synthetic_spec[key]):
            raise DataError(f"{where}: synthetic.{key} must be {expected}, got "
                            f"{json.dumps(synthetic_spec[key])[:80]}")
    return config


def au_pos_weight(au):
    """sqrt(negatives / positives) per AU over annotated entries: lifts the recall of rare AUs."""
    valid = au >= 0
    pos = np.maximum(((au > 0.5) & valid).sum(axis=0), 1)
    neg = np.maximum((valid & (au < 0.5)).sum(axis=0), 1)
    return [float(w) for w in np.sqrt(neg / pos)]


def read_split_indexes(data, data_format, config, labels=None):
    """(train index, validation index, description of the data) for a data root and format.

    ``labels``: the teacher cache (``keras-mtanet teach``) giving FER+ its AU and valence/arousal targets.
    """
    if data_format not in FORMATS:
        raise DataError(f"unknown data format {data_format!r}; choose one of {', '.join(FORMATS)}")
    if labels is not None and data_format != "ferplus":
        raise DataError("--labels (a teacher label cache) applies to --format ferplus only")
    root = Path(data)
    if data_format == "synthetic":
        spec = config["synthetic"]
        if not (root / "annotations").is_dir():
            synthetic.write_affwild2(root, spec["train_videos"], spec["val_videos"], spec["frames"], spec["size"],
                                     seed=config["seed"])
        described = (f"keras_mtanet synthetic cartoon faces (keras_mtanet.data.synthetic, seed {config['seed']}): "
                     f"{spec['train_videos']} training and {spec['val_videos']} validation videos of "
                     f"{spec['frames']} frames, {spec['size']} px, in the Aff-Wild2 layout")
        data_format = "affwild2"
    else:
        described = None
    if data_format == "affwild2":
        train, val = affwild2.read_index(root, "Training_Set"), affwild2.read_index(root, "Validation_Set")
        described = described or f"Aff-Wild2 (ABAW 2020 layout) at {root}: Training_Set, validated on Validation_Set"
    elif data_format == "affectnet":
        train, val = affectnet.read_index(root, "train"), affectnet.read_index(root, "val")
        described = f"AffectNet (manually annotated) at {root}: training.csv, validated on validation.csv"
    else:
        train, val = ferplus.read_index(root, "train", labels), ferplus.read_index(root, "valid", labels)
        described = (f"FER+ (FER2013 faces, crowd-vote distributions) at {root}: FER2013Train, validated on "
                     "FER2013Valid; " + (f"AUs and derived valence/arousal from the teacher labels {labels}"
                                         if labels else "expressions only (no --labels)"))
    for name, index in (("training", train), ("validation", val)):
        if len(index) == 0:
            raise DataError(f"{root}: the {name} split has no usable frames")
    return train, val, described


def build_model(config):
    size = int(config["input_size"])
    return MTANet(config["backbone"], input_shape=(size, size, 3), stack_blocks=config["stack_blocks"],
                  width=config["width"], color_mode=config["color_mode"])


ARCHITECTURE_KEYS = {"backbone": "backbone", "stack_blocks": "stack_blocks", "width": "width",
                     "color_mode": "color_mode"}


def adopt_architecture(config, source, log=print):
    """``config`` with the architecture of the ``--init`` preset ``source`` (the input size stays the
    config's: every layer's weights are independent of it)."""
    preset = source.get_config()
    for key in ("se_ratio", "head_filters"):
        default = zoo.MODEL_CONFIG_DEFAULTS[key]
        if preset.get(key, default) != default:
            raise DataError(f"--init: the preset's {key} is {preset[key]}, but train builds {default}; its "
                            f"{'SE gates' if key == 'se_ratio' else 'head'} could not start from it")
    changed = {key: preset[ckey] for key, ckey in ARCHITECTURE_KEYS.items() if config.get(key) != preset[ckey]}
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
        raise DataError(f"unknown schedule {config['schedule']!r} (cosine, polynomial or constant)")
    if config["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config["momentum"], nesterov=True,
                                         weight_decay=config["weight_decay"])
    elif config["optimizer"] == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"])
    else:
        raise DataError(f"unknown optimizer {config['optimizer']!r} (sgd or adamw)")
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


def make_strategy(name):
    """``None`` (Keras's default), ``tf.distribute.MirroredStrategy`` over the local devices, or
    ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``."""
    import tensorflow as tf

    if name == "default":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise DataError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DataError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def cluster_role(strategy):
    """``(is_chief, number of workers, task id)``; a single process is its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return True, 1, 0
    workers = sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in spec)
    return chief, workers, resolver.task_id


class ABAWValidation(keras.callbacks.Callback):
    """Computes ``abaw_scores`` on a validation split after every epoch.

    Adds ``val_<score>`` entries to the logs and ``val_abaw_total`` = VA score + EXPR score + AU score, the
    quantity the best checkpoint keeps.
    """

    def __init__(self, dataset, index):
        super().__init__()
        self.dataset, self.index = dataset, index

    def on_epoch_end(self, epoch, logs=None):
        scores = abaw_scores(self.index.labels(), self.model.predict(self.dataset, verbose=0))
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in scores.items()})
            logs[SCORE_KEY] = sum(scores[k] for k in ("va_score", "expr_score", "au_score") if k in scores)


def train(config, data, data_format, output, resume=False, verbose=2, tensorboard=True, log=print, labels=None,
          init=None):
    """Train per ``config`` on ``data`` and write a preset to ``output``; returns the validation scores.

    ``output`` receives ``config.json``, ``model.weights.h5`` (the best epoch by ``val_abaw_total``),
    ``metadata.json``, ``README.md`` (a loadable preset), plus ``train_config.json``, ``log.csv``,
    ``checkpoints/`` and ``tensorboard/``. A run that was killed continues from its last finished epoch when
    started again with the same command (``backup/``) and ends after the same number of epochs.
    ``config["strategy"]``: ``"mirrored"`` runs ``tf.distribute.MirroredStrategy`` over the local devices,
    ``"multiworker"`` ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG`` (the data are sharded
    per worker, the batch size is global, only the chief writes ``output``).
    ``config["mixed_precision"]``: bfloat16 compute on CPU, float16 with loss scaling on GPU.
    ``init``: a preset (name, ``hf://`` address or folder) to start from: its architecture (backbone, width,
    blocks, colour mode) replaces the config's, and every layer whose weights have the same shapes, the task
    heads included when the label sets match, starts from its weights.
    ``labels``: with ``data_format="ferplus"``, the teacher label cache (``keras-mtanet teach``) that gives the
    FER+ images AU and derived valence/arousal targets beside their vote distributions.
    """
    precision = keras.mixed_precision.dtype_policy().name
    if config["mixed_precision"]:
        import tensorflow as tf

        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
    try:
        return _train(config, data, data_format, output, resume, verbose, tensorboard, log, labels, init)
    finally:
        keras.mixed_precision.set_global_policy(precision)


def _train(config, data, data_format, output, resume, verbose, tensorboard, log, labels=None, init=None):
    source = None
    if init is not None:
        source = hub.load_pretrained(init)
        config = adopt_architecture(config, source, log)
    strategy = make_strategy(config["strategy"])
    chief, workers, task = cluster_role(strategy)
    output = Path(output)
    if not chief:
        # Only the chief writes the run folder; the other workers keep their backups in a scratch folder named
        # after the run folder and the worker, so that a restarted job resumes every worker at the same epoch.
        import hashlib
        import tempfile

        tag = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:16]
        output = Path(tempfile.gettempdir()) / f"keras_mtanet_worker{task}_{tag}"
    run = {"data": str(Path(data).resolve()), "format": data_format}
    if labels is not None:
        run["labels"] = str(Path(labels).resolve())
    if init is not None:
        run["init"] = str(Path(init).resolve()) if Path(init).expanduser().is_dir() else str(init)
    state = prepare_run_folder(output, config, run, resume)
    if state == "finished":
        meta = zoo.read_metadata(output)
        log(f"{output}: this run has already finished and its preset is written; nothing to do (choose another "
            "--output for a new run)")
        return dict(meta.get("metrics") or {})
    lock = lock_run_folder(output)
    try:
        return _train_locked(config, data, data_format, output, state, run, strategy, chief, workers, task,
                             labels, init, source, verbose, tensorboard, log)
    finally:
        lock.close()


def lock_run_folder(output):
    """An exclusive lock on ``output/.lock`` for as long as the returned file stays open: a second process
    training into the same folder (a job scheduler's requeue while the first still runs) gets a one-line
    error instead of writing over the first one's log and backup."""
    import fcntl

    handle = open(output / LOCK_FILE, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DataError(f"{output}: another process is training into this folder") from None
    return handle


def _train_locked(config, data, data_format, output, state, run, strategy, chief, workers, task, labels, init,
                  source, verbose, tensorboard, log):
    backup = output / "backup"
    if state == "resume":
        log(f"resuming the interrupted run in {output}")

    started = time.perf_counter()
    train_index, val_index, described = read_split_indexes(data, data_format, config, labels)
    run.update(training_frames=len(train_index), validation_frames=len(val_index))
    if state == "resume":
        check_same_run(output, config, run)
    _write_json(output / RUN_FILE, run)

    def count(index, prefix):
        return sum(v for k, v in index.stats.items() if k.startswith(prefix))

    log(f"data: {described}; {len(train_index)} training and {len(val_index)} validation frames "
        f"({count(train_index, 'missing_')} + {count(val_index, 'missing_')} without an image, "
        f"{count(train_index, 'corrupt_')} + {count(val_index, 'corrupt_')} corrupt, skipped)")

    keras.utils.set_random_seed(int(config["seed"]))
    size, batch = int(config["input_size"]), int(config["batch_size"])
    from keras_mtanet.data import pipeline  # tf.data: TensorFlow is needed from here on

    augment = None if config["augment"] else False
    if config["augment"] and (config["rand_augment"] or config["random_erasing"]):
        augment = augmentation.default_augmentation(config["seed"], rand_augment=config["rand_augment"],
                                                random_erasing=config["random_erasing"])
    train_ds = pipeline.make_dataset(train_index, size, batch, training=True, augment=augment, seed=config["seed"],
                                     balance_expressions=config["balance_expressions"])
    val_ds = pipeline.make_dataset(val_index, size, batch_size=max(batch, 64))
    steps = -(-len(train_index) // batch)

    if strategy is not None:
        log(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s) in sync, "
            f"{workers} worker(s) joined" + ("" if chief else f"; this is worker {task}, writing to {output}"))
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(config)
        if source is not None:
            copied, skipped = init_weights(model, source)
            log(f"initialised from {init}: {copied} layers copied" +
                (f", {len(skipped)} left at their initial values ({', '.join(skipped[:5])}"
                 f"{', ...' if len(skipped) > 5 else ''})" if skipped else ""))
            del source
        compile_model(model, config, train_index, steps)
    recorder = RunRecorder(output)
    callbacks = [
        ABAWValidation(val_ds, val_index),
        # Before the backup: the log row and best weights of an epoch are written before its backup, and the
        # recorder drops both again if the run resumes before that epoch (see RunRecorder).
        recorder,
        # Two backups, each a verified pair: a kill while one is being written leaves the other to resume
        # from. The backup is removed only once the preset is written, so a kill in between resumes with
        # nothing left to train.
        VerifiedBackup(str(backup)),
    ]
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        log("TensorBoard logs skipped: the tensorboard package is not installed (pip install tensorboard)")
    elif tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(output / "tensorboard"), write_graph=False))
    fit = lambda: model.fit(train_ds, epochs=int(config["epochs"]), callbacks=callbacks, verbose=verbose,  # noqa: E731
                            shuffle=False)
    fit()

    recorder.prune()
    best = recorder.best_file()
    if best is not None:
        model.load_weights(best)
    scores = abaw_scores(val_index.labels(), model.predict(val_ds, verbose=0))
    elapsed = time.perf_counter() - started
    meta = zoo.preset_metadata(model, described, metrics={k: round(float(v), 4) for k, v in scores.items()},
                               name=output.name, description=config.get("description"),
                               extra={"training_config": config, "training_seconds": round(elapsed, 1),
                                      "validation_frames": len(val_index),
                                      **({"alignment_template": config["alignment_template"]}
                                         if config["alignment_template"] is not None else {})})
    card = hub.model_card_text(meta, output.name, intended_use=config.get("intended_use"),
                               limitations=config.get("limitations"))
    log(f"trained in {elapsed:.0f} s; validation: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    if chief:
        zoo.save_preset(model, output, meta, card)
        log(f"preset written to {output}; load it with keras_mtanet.load_pretrained({str(output)!r})")
    else:
        log(f"worker {task} done; the chief wrote the preset")
    shutil.rmtree(backup, ignore_errors=True)  # only now: the preset is complete
    if not chief:
        shutil.rmtree(output, ignore_errors=True)  # the scratch folder's work is done
    return scores


RUN_FILE, CONFIG_RECORD, LOG_FILE, LOCK_FILE = "run.json", "train_config.json", "log.csv", ".lock"
RUN_ENTRIES = {RUN_FILE, CONFIG_RECORD, LOG_FILE, LOCK_FILE, "checkpoints", "backup", "tensorboard"}


def _write_json(path, value):
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def _read_record(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare_run_folder(output, config, run, resume):
    """Check ``output`` and say what to do: ``"new"`` (an empty or new folder, or a run killed before its
    first backup), ``"resume"`` (an interrupted run with the same config and data) or ``"finished"`` (the same
    run, already complete). Anything else is a one-line ``DataError``; nothing is deleted but the run's own
    files of a run that never finished an epoch."""
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: is a file; --output must be a new or empty folder, or an earlier run's")
    backup = output / "backup"
    recorded = output / CONFIG_RECORD
    if (output / zoo.METADATA_FILE).exists():
        if not recorded.exists():
            raise DataError(f"{output}: holds a preset that is not a training run; choose another --output")
        check_same_run(output, config, run, finished=True)
        return "finished"
    if backup.exists():
        check_same_run(output, config, run)
        if VerifiedBackup.latest(backup) is not None:
            return "resume"
        if RunRecorder(output).progress() > 0:
            raise DataError(f"{backup}: no complete backup to resume from, though the run logged epochs after its "
                            "first; nothing was changed (choose another --output)")
        shutil.rmtree(backup)  # killed while writing the very first backup: the run starts over
    if resume:
        raise DataError(f"{output}: nothing to resume (no backup/ from an interrupted run)")
    if output.is_dir():
        entries = {p.name for p in output.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
        if entries - {LOCK_FILE} and not recorded.exists():
            raise DataError(f"{output}: is not empty and holds no training run; choose a new or empty folder")
        if entries - RUN_ENTRIES:
            raise DataError(f"{output}: holds files that are not this run's ({', '.join(sorted(entries - RUN_ENTRIES))}"
                            "); choose a new or empty folder")
        if RunRecorder(output).progress() > 0:
            raise DataError(f"{output}: holds a run that logged several epochs but has no backup/ to resume from; "
                            "nothing was changed (choose another --output)")
        # A run killed before its first epoch was backed up: its log and checkpoints start again.
        (output / LOG_FILE).unlink(missing_ok=True)
        for stale in (output / "checkpoints").glob("*.weights.h5"):
            stale.unlink()
    output.mkdir(parents=True, exist_ok=True)
    _write_json(recorded, config)
    _write_json(output / RUN_FILE, run)
    return "new"


def check_same_run(output, config, run, finished=False):
    """``DataError`` listing what differs between this command's config and data and the run recorded in
    ``output`` (``train_config.json`` and ``run.json``)."""
    old_config = _read_record(output / CONFIG_RECORD)
    old_run = _read_record(output / RUN_FILE) or {}
    if not isinstance(old_config, dict):
        raise DataError(f"{output / CONFIG_RECORD}: missing or unreadable, so the run cannot be resumed safely; "
                        "choose another --output")
    differences = []
    for key in sorted(set(old_config) | set(config)):
        if old_config.get(key) != config.get(key):
            differences.append(f"{key} {json.dumps(old_config.get(key))} -> {json.dumps(config.get(key))}")
    for key in ("data", "format", "labels", "init", "training_frames", "validation_frames"):
        if (key in old_run or key in run) and old_run.get(key) != run.get(key) and \
                not (key.endswith("_frames") and (key not in old_run or key not in run)):
            differences.append(f"{key} {json.dumps(old_run.get(key))} -> {json.dumps(run.get(key))}")
    if differences:
        what = "finished" if finished else "interrupted"
        raise DataError(f"{output}: the {what} run there used other settings ({'; '.join(differences)}); "
                        "rerun with the original settings, or choose another --output")


class VerifiedBackup(keras.callbacks.BackupAndRestore):
    """Keras's ``BackupAndRestore`` made safe against a kill at any point.

    Each backup is a pair, weights and a small JSON (epoch, batch, sha256 of the weights), each written under a
    temporary name and renamed; the previous pair is kept beside it. Resuming takes the newest pair whose
    weights match their JSON, so a kill while a backup is written resumes from the one before.
    """

    PAIRS = (("latest.weights.h5", "latest.json"), ("previous.weights.h5", "previous.json"))

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=False)

    @classmethod
    def latest(cls, backup_dir):
        """``(weights path, state)`` of the newest consistent pair in ``backup_dir``, or ``None``."""
        for weights, state_file in cls.PAIRS:
            state = cls._verified(Path(backup_dir) / weights, Path(backup_dir) / state_file)
            if state is not None:
                return Path(backup_dir) / weights, state
        return None

    @staticmethod
    def _verified(weights, state_file):
        """The pair's state if its weights are the ones it names, else ``None``."""
        state = _read_record(state_file)
        if isinstance(state, dict) and isinstance(state.get("epoch"), int) and weights.is_file() and \
                state.get("weights_sha256") == zoo.sha256_file(weights):
            return state
        return None

    def on_train_begin(self, logs=None):
        found = self.latest(self.backup_dir)
        if found is None:
            return
        weights, state = found
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(weights))
        self.model._initial_epoch = state["epoch"]

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (latest_w, latest_s), (previous_w, previous_s) = ((folder / w, folder / j) for w, j in self.PAIRS)
        if self._verified(latest_w, latest_s) is not None:
            # The newest pair becomes the previous one: state first, so that a kill in between leaves a
            # previous pair that does not verify rather than one that lies.
            previous_s.unlink(missing_ok=True)
            _copy_atomic(latest_w, previous_w)
            _copy_atomic(latest_s, previous_s)
        tmp = folder / ".tmp.weights.h5"
        self.model.save_weights(str(tmp), overwrite=True)
        latest_s.unlink(missing_ok=True)
        os.replace(tmp, latest_w)
        _write_json(latest_s, {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                               "weights_sha256": zoo.sha256_file(latest_w)})


def _copy_atomic(source, target):
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class RunRecorder(keras.callbacks.Callback):
    """The run's ``log.csv`` rows and best weights, kept consistent with its backup through any kill.

    Each epoch end (before the backup of that epoch is written) appends the epoch's log row and, when the
    validation score is the best so far, writes ``checkpoints/best-e<epoch>.weights.h5`` (to a temporary name,
    then renamed). When the backup of an epoch exists, older best files are removed. When a run resumes at
    epoch E, rows and best files of epochs >= E (written before a kill that came ahead of their backup) are
    dropped, so no epoch is logged twice, and the best score is restored from the remaining rows: the first
    epoch after a resume replaces the best weights only if it beats every earlier epoch.
    """

    def __init__(self, folder, monitor=SCORE_KEY):
        super().__init__()
        self.folder, self.monitor = Path(folder), monitor
        self.log_path, self.checkpoints = self.folder / LOG_FILE, self.folder / "checkpoints"
        self.best_score, self._started = -math.inf, False

    def rows(self):
        """The complete rows of ``log.csv`` (a row cut short by a kill is left out)."""
        import csv

        if not self.log_path.exists():
            return [], None
        text = self.log_path.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]  # cut short by a kill
        reader = csv.DictReader(lines)
        rows = [r for r in reader if None not in r and None not in r.values() and _is_epoch(r.get("epoch"))]
        return rows, reader.fieldnames

    def progress(self):
        """How many epochs after the first this run has logged or kept best weights of (0 for a run that
        never got past its first epoch)."""
        epochs = [int(r["epoch"]) for r in self.rows()[0]]
        epochs += [_epoch_of(p) for p in self.best_files()] if self.checkpoints.is_dir() else []
        return max(epochs, default=0)

    def best_files(self):
        files = [p for p in self.checkpoints.glob("best-e*.weights.h5") if _epoch_of(p) is not None]
        return sorted(files, key=_epoch_of)

    def best_file(self):
        files = self.best_files()
        return files[-1] if files else None

    def prune(self):
        """Keep only the newest best file (call when every epoch so far is backed up)."""
        for stale in self.best_files()[:-1]:
            stale.unlink(missing_ok=True)

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            self.prune()  # the backup of the previous epoch has been written
            return
        self._started = True
        rows, fields = self.rows()
        kept = [r for r in rows if int(r["epoch"]) < epoch]
        if kept:
            self._write_rows(kept, fields)  # also drops a row a kill cut short
        else:
            self.log_path.unlink(missing_ok=True)
        for ahead in (p for p in self.best_files() if _epoch_of(p) >= epoch):
            ahead.unlink()
        self.prune()
        scores = [float(r[self.monitor]) for r in kept if r.get(self.monitor) not in (None, "")]
        self.best_score = max((v for v in scores if math.isfinite(v)), default=-math.inf)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        score = float(logs.get(self.monitor, math.nan))
        if math.isfinite(score) and score > self.best_score:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            target = self.checkpoints / f"best-e{epoch:04d}.weights.h5"
            tmp = self.checkpoints / f".tmp-e{epoch:04d}.weights.h5"
            self.model.save_weights(tmp, overwrite=True)
            os.replace(tmp, target)
            self.best_score = score
        self._append_row({"epoch": epoch, **{k: _log_value(v) for k, v in sorted(logs.items())}})

    def _append_row(self, row):
        import csv

        new = not self.log_path.exists()
        fields = list(row) if new else self.rows()[1]
        with open(self.log_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def _write_rows(self, rows, fields):
        import csv

        tmp = self.log_path.with_name(f".{LOG_FILE}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.log_path)


def _is_epoch(text):
    return isinstance(text, str) and text.isdigit()


def _epoch_of(path):
    digits = path.name[len("best-e"):-len(".weights.h5")]
    return int(digits) if digits.isdigit() else None


def _log_value(value):
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)
