"""Training recipes: a JSON config -> a trained preset folder, with ``model.fit`` and standard callbacks.

``DEFAULTS`` is the authors' recipe (Zhang & Gu 2020: 112 px, SGD with Nesterov momentum 0.9, lr 1e-3,
weight decay 1e-4, polynomial decay, batch 80, learned uncertainty task weights). Configs in ``zoo/`` override
it, e.g. the synthetic-data recipe of the embedded default preset.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_mtanet import hub, losses, zoo
from keras_mtanet.data import affectnet, affwild2, pipeline, synthetic
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
    "balance_expressions": False,
    "seed": 0,
    "mixed_precision": False,
    "strategy": "default",
    "synthetic": {"train_videos": 14, "val_videos": 6, "frames": 90, "size": 112},
}
FORMATS = ("affwild2", "affectnet", "synthetic")
STRATEGIES = ("default", "mirrored", "multiworker")
SCORE_KEY = "val_abaw_total"
CARD_KEYS = ("description", "intended_use", "limitations")  # model-card text a config may carry


def load_config(path=None, **overrides):
    """``DEFAULTS`` updated by a JSON file and then by the non-None ``overrides``."""
    config = json.loads(json.dumps(DEFAULTS))
    if path:
        try:
            loaded = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: training config not found") from None
        except ValueError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None
        unknown = set(loaded) - set(DEFAULTS) - set(CARD_KEYS)
        if unknown:
            raise DataError(f"{path}: unknown config key(s) {', '.join(sorted(unknown))}")
        config.update(loaded)
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def au_pos_weight(au):
    """sqrt(negatives / positives) per AU over annotated entries: lifts the recall of rare AUs."""
    valid = au >= 0
    pos = np.maximum(((au > 0.5) & valid).sum(axis=0), 1)
    neg = np.maximum((valid & (au < 0.5)).sum(axis=0), 1)
    return [float(w) for w in np.sqrt(neg / pos)]


def read_split_indexes(data, data_format, config):
    """(train index, validation index, description of the data) for a data root and format."""
    if data_format not in FORMATS:
        raise DataError(f"unknown data format {data_format!r}; choose one of {', '.join(FORMATS)}")
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
    else:
        train, val = affectnet.read_index(root, "train"), affectnet.read_index(root, "val")
        described = f"AffectNet (manually annotated) at {root}: training.csv, validated on validation.csv"
    for name, index in (("training", train), ("validation", val)):
        if len(index) == 0:
            raise DataError(f"{root}: the {name} split has no usable frames")
    return train, val, described


def build_model(config):
    size = int(config["input_size"])
    return MTANet(config["backbone"], input_shape=(size, size, 3), stack_blocks=config["stack_blocks"],
                  width=config["width"])


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


def train(config, data, data_format, output, resume=False, verbose=2, tensorboard=True, log=print):
    """Train per ``config`` on ``data`` and write a preset to ``output``; returns the validation scores.

    ``output`` receives ``config.json``, ``model.weights.h5`` (the best epoch by ``val_abaw_total``),
    ``metadata.json``, ``README.md`` (a loadable preset), plus ``train_config.json``, ``log.csv``,
    ``checkpoints/`` and ``tensorboard/``. A run that was killed continues from its last finished epoch when
    started again with the same command (``backup/``) and ends after the same number of epochs.
    ``config["strategy"]``: ``"mirrored"`` runs ``tf.distribute.MirroredStrategy`` over the local devices,
    ``"multiworker"`` ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG`` (the data are sharded
    per worker, the batch size is global, only the chief writes ``output``).
    ``config["mixed_precision"]``: bfloat16 compute on CPU, float16 with loss scaling on GPU.
    """
    precision = keras.mixed_precision.dtype_policy().name
    if config["mixed_precision"]:
        import tensorflow as tf

        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
    try:
        return _train(config, data, data_format, output, resume, verbose, tensorboard, log)
    finally:
        keras.mixed_precision.set_global_policy(precision)


def _train(config, data, data_format, output, resume, verbose, tensorboard, log):
    strategy = make_strategy(config["strategy"])
    chief, workers, task = cluster_role(strategy)
    output = Path(output)
    if not chief:  # only the chief writes the run folder; other workers keep theirs in a scratch folder
        import tempfile

        output = Path(tempfile.gettempdir()) / f"keras_mtanet_worker{task}_{os.getpid()}"
    backup = output / "backup"
    if (output / zoo.METADATA_FILE).exists() and not backup.exists():
        raise DataError(f"{output}: already holds a trained preset; choose another --output")
    if resume and not backup.exists():
        raise DataError(f"{output}: nothing to resume (no backup/ from an interrupted run)")
    output.mkdir(parents=True, exist_ok=True)
    (output / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if backup.exists():
        log(f"resuming the interrupted run in {output}")

    started = time.perf_counter()
    train_index, val_index, described = read_split_indexes(data, data_format, config)

    def count(index, prefix):
        return sum(v for k, v in index.stats.items() if k.startswith(prefix))

    log(f"data: {described}; {len(train_index)} training and {len(val_index)} validation frames "
        f"({count(train_index, 'missing_')} + {count(val_index, 'missing_')} without an image, "
        f"{count(train_index, 'corrupt_')} + {count(val_index, 'corrupt_')} corrupt, skipped)")

    keras.utils.set_random_seed(int(config["seed"]))
    size, batch = int(config["input_size"]), int(config["batch_size"])
    augment = None if config["augment"] else False
    if config["augment"] and config["rand_augment"]:
        augment = pipeline.default_augmentation(config["seed"], rand_augment=True)
    train_ds = pipeline.make_dataset(train_index, size, batch, training=True, augment=augment, seed=config["seed"],
                                     balance_expressions=config["balance_expressions"])
    val_ds = pipeline.make_dataset(val_index, size, batch_size=max(batch, 64))
    steps = -(-len(train_index) // batch)

    if strategy is not None:
        log(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s) in sync, "
            f"{workers} worker(s) joined" + ("" if chief else f"; this is worker {task}, writing to {output}"))
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(config)
        compile_model(model, config, train_index, steps)
    best = output / "checkpoints" / "best.weights.h5"
    best.parent.mkdir(exist_ok=True)
    callbacks = [
        ABAWValidation(val_ds, val_index),
        keras.callbacks.ModelCheckpoint(str(best), monitor=SCORE_KEY, mode="max", save_best_only=True,
                                        save_weights_only=True),
        keras.callbacks.CSVLogger(str(output / "log.csv"), append=True),
        # Two backups: a kill while one is being written leaves the other to resume from.
        keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True, delete_checkpoint=True),
    ]
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        log("TensorBoard logs skipped: the tensorboard package is not installed (pip install tensorboard)")
    elif tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(output / "tensorboard"), write_graph=False))
    fit = lambda: model.fit(train_ds, epochs=int(config["epochs"]), callbacks=callbacks, verbose=verbose,  # noqa: E731
                            shuffle=False)
    try:
        fit()
    except OSError as error:
        # Killed while writing the very first backup: nothing valid to resume from, and no step was taken.
        if not backup.exists() or int(model.optimizer.iterations) != 0:
            raise
        log(f"the backup in {backup} is unreadable ({str(error).splitlines()[0]}); starting the run over")
        shutil.rmtree(backup)
        fit()

    if best.exists():
        model.load_weights(best)
    scores = abaw_scores(val_index.labels(), model.predict(val_ds, verbose=0))
    elapsed = time.perf_counter() - started
    meta = zoo.preset_metadata(model, described, metrics={k: round(float(v), 4) for k, v in scores.items()},
                               name=output.name, description=config.get("description"),
                               extra={"training_config": config, "training_seconds": round(elapsed, 1),
                                      "validation_frames": len(val_index)})
    card = hub.model_card_text(meta, output.name, intended_use=config.get("intended_use"),
                               limitations=config.get("limitations"))
    log(f"trained in {elapsed:.0f} s; validation: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    if chief:
        zoo.save_preset(model, output, meta, card)
        log(f"preset written to {output}; load it with keras_mtanet.load_pretrained({str(output)!r})")
    else:
        log(f"worker {task} done; the chief wrote the preset")
    return scores

