"""Training: a JSON config -> a trained preset folder, with ``model.fit`` and standard callbacks.

``train`` runs a recipe end to end. Its parts: the config and what it builds (``keras_mtanet.training.recipe``),
the run folder (``run_folder``) and its callbacks (``callbacks``), tf.distribute strategies (``tf_distribute``,
TensorFlow only) and data parallelism on ``keras.distribution`` (``keras_distribution``, JAX).
"""

import contextlib
import importlib.util
import shutil
import time
from pathlib import Path

import keras

from keras_mtanet import files
from keras_mtanet.data import affectnet, affwild2, facial_expressions, ferplus, genki4k, synthetic
from keras_mtanet.data import augment as augmentation
from keras_mtanet.data.formats import formats_for
from keras_mtanet.errors import DataError, UsageError
from keras_mtanet.metrics import abaw_scores
from keras_mtanet.model.task import MTANet, load_pretrained
from keras_mtanet.presets import card, checks
from keras_mtanet.presets import folder as preset_folder
from keras_mtanet.teachers import cache
from keras_mtanet.training.callbacks import ABAWValidation, RunRecorder, VerifiedBackup, whole_pass
from keras_mtanet.training.recipe import adopt_architecture, build_model, compile_model, init_weights
from keras_mtanet.training.run_folder import (
    RUN_FILE,
    annotations_digest,
    check_same_run,
    lock_run_folder,
    prepare_run_folder,
    remove_unstarted_run,
)


def annotation_files(data, data_format, labels=None):
    """The files holding the labels a run trains and validates on (the Aff-Wild2 annotation files of both
    splits, AffectNet's two CSVs, FER+'s two ``label.csv`` and the teacher labels), for the run record's
    fingerprint: editing any of them in place is a different run, not one to resume."""
    root = Path(data)
    if data_format in ("affwild2", "synthetic"):
        found = [p for task in affwild2.TASK_DIRS.values() for split in affwild2.SPLITS
                 for p in sorted((root / "annotations" / task / split).glob("*.txt"))]
    elif data_format == "affectnet":
        found = [root / affectnet.SPLIT_FILES[s] for s in ("train", "val")]
    elif data_format == "genki4k":
        found = [root / genki4k.LABEL_FILE, root / genki4k.TEST_FILE]
    elif data_format == "facial_expressions":
        found = [root / facial_expressions.LEGEND_FILE, root / facial_expressions.TEST_FILE]
    else:
        found = [root / ferplus.split_folder(s) / ferplus.LABEL_FILE for s in ("train", "valid")]
    if labels is not None:
        found.append(Path(labels))
    return [p for p in found if p.is_file()]


def read_split_indexes(data, data_format, config, labels=None):
    """(train index, validation index, description of the data) for a data root and format.

    ``labels``: the teacher cache (``keras-mtanet teach``) giving FER+ its AU and valence/arousal targets.
    """
    if data_format not in formats_for("train"):
        raise UsageError(f"unknown data format {data_format!r}; choose one of {', '.join(formats_for('train'))}")
    if labels is not None and data_format != "ferplus":
        raise UsageError("--labels (a teacher label cache) applies to --format ferplus only")
    root = Path(data)
    if data_format == "synthetic":
        spec = config["synthetic"]
        if not (root / "annotations").is_dir():
            synthetic.check_data_root(root)  # never into a user's own folder
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
    elif data_format in ("genki4k", "facial_expressions"):
        reader = genki4k if data_format == "genki4k" else facial_expressions
        train, val = reader.read_index(root, "train"), reader.read_index(root, "valid")
        kind = ("GENKI-4K (human smile labels as AU12)" if reader is genki4k
                else "facial_expressions (crowd expression labels)")
        described = f"{kind} at {root}: its train split, validated on its valid split (the held-out test list left out)"
    else:
        teacher = None if labels is None else cache.read_labels(labels)
        train, val = ferplus.read_index(root, "train", teacher), ferplus.read_index(root, "valid", teacher)
        described = (f"FER+ (FER2013 faces, crowd-vote distributions) at {root}: FER2013Train, validated on "
                     "FER2013Valid; " + (f"AUs and derived valence/arousal from the teacher labels {labels}"
                                         if labels else "expressions only (no --labels)"))
    for name, index in (("training", train), ("validation", val)):
        if len(index) == 0:
            raise DataError(f"{root}: the {name} split has no usable frames")
    return train, val, described


def train(config, data, data_format, output, resume=False, verbose=2, tensorboard=True, log=print, labels=None,
          init=None):
    """Train per ``config`` on ``data`` and write a preset to ``output``; returns the validation scores.

    ``output`` receives ``config.json``, ``model.weights.h5`` (the best epoch by ``val_abaw_total``),
    ``metadata.json``, ``README.md`` (a loadable preset), plus ``train_config.json``, ``log.csv``,
    ``checkpoints/`` and ``tensorboard/``. A run that was killed continues from its last finished epoch when
    started again with the same command (``backup/``) and ends after the same number of epochs.
    ``config["distribution"]``: ``"data-parallel"`` runs ``keras.distribution.DataParallel`` on the JAX backend,
    over the local devices or over the processes of a job (``keras_mtanet.training.keras_distribution``: each
    process reads its own slice of every batch, the batch size is global, only process 0 writes ``output``).
    ``config["strategy"]`` (TensorFlow): ``"mirrored"`` runs ``tf.distribute.MirroredStrategy`` over the local
    devices, ``"multiworker"`` ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG`` (the data are
    sharded per worker, the batch size is global, only the chief writes ``output``).
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


class _Role:
    """How this process takes part: alone, as a tf.distribute worker or as a process of a data-parallel job."""

    def __init__(self, config):
        self.strategy = self.job = None
        self.chief, self.workers, self.task = True, 1, 0
        if config.get("distribution") is not None:
            from keras_mtanet.training import keras_distribution as distribution

            self.job = distribution.join(config["distribution"])  # first: before any JAX computation
            self.chief, self.workers, self.task = self.job.chief, self.job.processes, self.job.process
            self.job.shard(int(config["batch_size"]))  # a batch the processes cannot share: said before any write
        elif config["strategy"] != "default":
            from keras_mtanet.training import tf_distribute  # TensorFlow: only when a strategy runs

            self.strategy = tf_distribute.make_strategy(config["strategy"])
            self.chief, self.workers, self.task = tf_distribute.cluster_role(self.strategy)

    def scope(self):
        if self.job is not None:
            return self.job.distribution.scope()
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self, output):
        if self.job is not None:
            said = self.job.describe()
        elif self.strategy is not None:
            said = (f"strategy: {type(self.strategy).__name__}, {self.strategy.num_replicas_in_sync} replica(s) in "
                    f"sync, {self.workers} worker(s) joined")
        else:
            return None
        return said + ("" if self.chief else f"; this is worker {self.task}, writing to {output}")


def _train(config, data, data_format, output, resume, verbose, tensorboard, log, labels=None, init=None):
    role = _Role(config)
    source = None
    if init is not None:
        source = load_pretrained(init)
        config = adopt_architecture(config, source, log)
    output = Path(output)
    if not role.chief:
        # Only the chief writes the run folder; the other workers keep their backups in a scratch folder named
        # after the run folder and the worker, so that a restarted job resumes every worker at the same epoch.
        import hashlib
        import tempfile

        tag = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:16]
        output = Path(tempfile.gettempdir()) / f"keras_mtanet_worker{role.task}_{tag}"
    run = {"data": str(Path(data).resolve()), "format": data_format}
    if labels is not None:
        run["labels"] = str(Path(labels).resolve())
    if init is not None:
        run["init"] = str(Path(init).resolve()) if Path(init).expanduser().is_dir() else str(init)
    created = not (output.exists() or output.is_symlink())
    state = prepare_run_folder(output, config, run, resume)
    if state == "finished":
        meta = checks.read_metadata(output)
        log(f"{output}: this run has already finished and its preset is written; nothing to do (choose another "
            "--output for a new run)")
        return dict(meta.get("metrics") or {})
    lock = lock_run_folder(output)
    try:
        return _train_locked(config, data, data_format, output, state, run, role, labels, init, source, verbose,
                             tensorboard, log)
    except BaseException:
        if created:  # a run that failed before its first epoch leaves no folder behind (only one it made)
            remove_unstarted_run(output)
        raise
    finally:
        lock.close()


def _train_locked(config, data, data_format, output, state, run, role, labels, init, source, verbose,
                  tensorboard, log):
    backup = output / "backup"
    if state == "resume":
        log(f"resuming the interrupted run in {output}")

    started = time.perf_counter()
    train_index, val_index, described = read_split_indexes(data, data_format, config, labels)
    digest, per_file = annotations_digest(data, annotation_files(data, data_format, labels))
    run.update(training_frames=len(train_index), validation_frames=len(val_index), annotations_sha256=digest,
               annotations=per_file)
    if state == "resume":
        check_same_run(output, config, run)
    files.write_json(output / RUN_FILE, run)

    def count(index, prefix):
        return sum(v for k, v in index.stats.items() if k.startswith(prefix))

    log(f"data: {described}; {len(train_index)} training and {len(val_index)} validation frames "
        f"({count(train_index, 'missing_')} + {count(val_index, 'missing_')} without an image, "
        f"{count(train_index, 'corrupt_')} + {count(val_index, 'corrupt_')} corrupt, skipped)")

    keras.utils.set_random_seed(int(config["seed"]))
    size, batch, seed = int(config["input_size"]), int(config["batch_size"]), int(config["seed"])
    from keras_mtanet.data import datasets  # tf.data: TensorFlow is needed from here on

    augment = None if config["augment"] else False
    if config["augment"] and (config["rand_augment"] or config["random_erasing"] or role.job is not None):
        # The processes of a data-parallel job share the shuffling seed but draw different augmentations.
        augment = augmentation.default_augmentation(seed + role.task if role.job is not None else seed,
                                                    rand_augment=config["rand_augment"],
                                                    random_erasing=config["random_erasing"])
    sharding, steps = {}, -(-len(train_index) // batch)
    if role.job is not None:
        # Each process reads its own slice of every global batch, in a fixed order and whole batches only, so
        # that the processes' slices add up to the batches of a one-process run.
        sharding, steps = {"drop_remainder": True, "deterministic": True}, len(train_index) // batch
        batch, sharding["shard"] = role.job.shard(batch)
        if steps == 0:
            raise UsageError(f"batch_size {config['batch_size']} is larger than the {len(train_index)} training "
                             "frames; a data-parallel run takes whole batches only")
        log(f"process {role.task} reads its own slice of every batch: {batch} of {config['batch_size']} frames, "
            f"{steps} batches per epoch")
    train_ds = datasets.make_dataset(train_index, size, batch, training=True, augment=augment, seed=seed,
                                     balance_expressions=config["balance_expressions"], **sharding)
    val_ds = datasets.make_dataset(val_index, size, batch_size=max(int(config["batch_size"]), 64))

    said = role.describe(output)
    if said:
        log(said)
    with role.scope():
        model_class = MTANet
        if config["strategy"] == "multiworker":
            from keras_mtanet.training.tf_distribute import MultiWorkerMTANet as model_class
        model = build_model(config, model_class)
        if source is not None:
            copied, skipped = init_weights(model, source)
            log(f"initialised from {init}: {copied} layers copied" +
                (f", {len(skipped)} left at their initial values ({', '.join(skipped[:5])}"
                 f"{', ...' if len(skipped) > 5 else ''})" if skipped else ""))
            del source
        compile_model(model, config, train_index, steps)
    replica = None
    if role.job is not None:
        from keras_mtanet.training.keras_distribution import LocalReplica

        replica = LocalReplica(lambda: build_model(config))
    recorder = RunRecorder(output)
    callbacks = [
        ABAWValidation(val_ds, val_index, replica),
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
    with role.job.distribution.scope() if role.job is not None else contextlib.nullcontext():
        model.fit(train_ds, epochs=int(config["epochs"]), callbacks=callbacks, verbose=verbose, shuffle=False)

    recorder.prune()
    best = recorder.best_file()
    model = model if replica is None else replica.copy(model)  # the distribution has ended with fit
    if best is not None:
        model.load_weights(best)
    with whole_pass():
        scores = abaw_scores(val_index.labels(), model.predict(val_ds, verbose=0))
    elapsed = time.perf_counter() - started
    meta = preset_folder.preset_metadata(model, described, metrics={k: round(float(v), 4) for k, v in scores.items()},
                               name=output.name, description=config.get("description"),
                               extra={"training_config": config, "training_seconds": round(elapsed, 1),
                                      "validation_frames": len(val_index),
                                      **({"alignment_template": config["alignment_template"]}
                                         if config["alignment_template"] is not None else {})})
    card_text = card.model_card_text(meta, output.name, intended_use=config.get("intended_use"),
                               limitations=config.get("limitations"))
    log(f"trained in {elapsed:.0f} s; validation: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    if role.chief:
        preset_folder.save_preset(model, output, meta, card_text)
        log(f"preset written to {output}; load it with keras_mtanet.load_pretrained({str(output)!r})")
    else:
        log(f"worker {role.task} done; the chief wrote the preset")
    shutil.rmtree(backup, ignore_errors=True)  # only now: the preset is complete
    if not role.chief:
        shutil.rmtree(output, ignore_errors=True)  # the scratch folder's work is done
    return scores
