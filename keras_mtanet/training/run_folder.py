"""The run folder of ``keras-mtanet train``: what it holds, and how a run survives a kill at any point.

A run folder holds ``train_config.json`` and ``run.json`` (the config and the data of the run), ``log.csv`` (one
row per epoch), ``checkpoints/`` (the best epoch's weights), ``backup/`` (the last finished epoch, removed once
the preset is written) and, at the end, the preset files. ``prepare_run_folder`` decides whether a command starts,
resumes or finds the run finished; ``keras_mtanet.training.callbacks`` keeps the backup, log and best weights
consistent through a kill.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

from keras_mtanet import files
from keras_mtanet.errors import UsageError
from keras_mtanet.presets import checks
from keras_mtanet.training.callbacks import LOG_FILE, RunRecorder, VerifiedBackup, open_no_link, read_record

RUN_FILE, CONFIG_RECORD, LOCK_FILE = "run.json", "train_config.json", ".lock"
# Run record entries measured from the data once it is read: a record without them (a run killed before, or
# written by an earlier version) is not compared on them.
MEASURED = ("training_frames", "validation_frames", "annotations_sha256")
RUN_ENTRIES = {RUN_FILE, CONFIG_RECORD, LOG_FILE, LOCK_FILE, "checkpoints", "backup", "tensorboard"}


def prepare_run_folder(output, config, run, resume):
    """Check ``output`` and say what to do: ``"new"`` (an empty or new folder, or a run killed before its
    first backup), ``"resume"`` (an interrupted run with the same config and data) or ``"finished"`` (the same
    run, already complete). Anything else is a one-line ``UsageError``; nothing is deleted but the run's own
    files of a run that never finished an epoch."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: is a file; --output must be a new or empty folder, or an earlier run's")
    backup = output / "backup"
    recorded = output / CONFIG_RECORD
    if (output / checks.METADATA_FILE).exists():
        if not recorded.exists():
            raise UsageError(f"{output}: holds a preset that is not a training run; choose another --output")
        check_same_run(output, config, run, finished=True)
        return "finished"
    if backup.exists():
        check_same_run(output, config, run)
        if VerifiedBackup.latest(backup) is not None:
            return "resume"
        if RunRecorder(output).progress() > 0:
            raise UsageError(f"{backup}: no complete backup to resume from, though the run logged epochs after its "
                             "first; nothing was changed (choose another --output)")
        shutil.rmtree(backup)  # killed while writing the very first backup: the run starts over
    if resume:
        raise UsageError(f"{output}: nothing to resume (no backup/ from an interrupted run)")
    if output.is_dir():
        entries = {p.name for p in output.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
        if entries - {LOCK_FILE} and not recorded.exists():
            raise UsageError(f"{output}: is not empty and holds no training run; choose a new or empty folder")
        if entries - RUN_ENTRIES:
            strangers = ", ".join(sorted(entries - RUN_ENTRIES))
            raise UsageError(f"{output}: holds files that are not this run's ({strangers}); choose a new or empty "
                             "folder")
        if RunRecorder(output).progress() > 0:
            raise UsageError(f"{output}: holds a run that logged several epochs but has no backup/ to resume from; "
                             "nothing was changed (choose another --output)")
        # A run killed before its first epoch was backed up: its log and checkpoints start again.
        (output / LOG_FILE).unlink(missing_ok=True)
        for stale in (output / "checkpoints").glob("*.weights.h5"):
            stale.unlink()
    try:
        output.mkdir(parents=True, exist_ok=True)
        files.write_json(recorded, config)
        files.write_json(output / RUN_FILE, run)
    except OSError as error:  # a read-only place, a full disk
        raise files.write_error(output, error, UsageError) from None
    return "new"

def check_same_run(output, config, run, finished=False):
    """``UsageError`` listing what differs between this command's config and data and the run recorded in
    ``output`` (``train_config.json`` and ``run.json``)."""
    old_config = read_record(output / CONFIG_RECORD)
    old_run = read_record(output / RUN_FILE) or {}
    if not isinstance(old_config, dict):
        raise UsageError(f"{output / CONFIG_RECORD}: missing or unreadable, so the run cannot be resumed safely; "
                         "choose another --output")
    differences = []
    for key in sorted(set(old_config) | set(config)):
        if old_config.get(key) != config.get(key):
            differences.append(f"{key} {json.dumps(old_config.get(key))} -> {json.dumps(config.get(key))}")
    for key in ("data", "format", "labels", "init", "training_frames", "validation_frames", "annotations_sha256"):
        if (key in old_run or key in run) and old_run.get(key) != run.get(key) and \
                not (key in MEASURED and (key not in old_run or key not in run)):
            if key == "annotations_sha256":  # which files changed, not two digests
                changed = _changed_files(old_run.get("annotations") or {}, run.get("annotations") or {})
                differences.append(f"annotation file contents changed ({changed})")
                continue
            differences.append(f"{key} {json.dumps(old_run.get(key))} -> {json.dumps(run.get(key))}")
    if differences:
        what = "finished" if finished else "interrupted"
        raise UsageError(f"{output}: the {what} run there used other settings ({'; '.join(differences)}); "
                         "rerun with the original settings, or choose another --output")


def annotations_digest(root, paths):
    """``(digest, {path relative to root: sha256})`` of the annotation files ``paths``, each read in blocks
    (``files.sha256_file``), for the run record: a run whose labels were edited in place is not resumed."""
    root = Path(root)
    per_file = {}
    for path in paths:
        try:
            name = str(Path(path).relative_to(root))
        except ValueError:
            name = str(path)
        try:
            per_file[name] = files.sha256_file(path)
        except OSError as error:
            raise files.read_error(path, error) from None
    digest = hashlib.sha256(json.dumps(per_file, sort_keys=True).encode("utf-8")).hexdigest()
    return digest, per_file


def _changed_files(old, new, limit=3):
    """The files whose digest differs between two ``annotations`` records, a few named: for the message."""
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return "the digest differs"
    names = ", ".join(files.printable(k) for k in changed[:limit])
    return names + (f" and {len(changed) - limit} more" if len(changed) > limit else "")


def lock_run_folder(output):
    """An exclusive lock on ``output/.lock`` for as long as the returned file stays open: a second process
    training into the same folder (a job scheduler's requeue while the first still runs) gets a one-line
    error instead of writing over the first one's log and backup."""
    import fcntl

    handle = open_no_link(output / LOCK_FILE)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"{output}: another process is training into this folder") from None
    remove_leftovers(output)
    return handle


LEFTOVER_AGE_SECONDS = 60  # younger temporary files may belong to a process writing them now


def remove_leftovers(output, min_age=LEFTOVER_AGE_SECONDS):
    """Remove the temporary files and folders a killed run left in ``output``, ``backup/`` and ``checkpoints/``
    (named as ``files.temporary_name`` names them, and older than ``min_age`` seconds; nothing else). Called
    under ``lock_run_folder``, so no other training process is writing there; the age spares the records a
    process that has not reached the lock yet is writing at that moment (``prepare_run_folder``). What cannot
    be removed is left. Returns the paths removed."""
    removed, now = [], time.time()
    for folder in (output, output / "backup", output / "checkpoints"):
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            paths = list(folder.iterdir())
        except OSError:
            continue
        for path in paths:
            try:
                if not files.TEMPORARY_NAME.fullmatch(path.name) or now - path.lstat().st_mtime < min_age:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def remove_unstarted_run(output):
    """Remove ``output``, a run folder this command created, if the run logged no epoch and kept no backup (it
    failed or was stopped before its first epoch ended): nothing in it is of use. A folder holding anything but
    the run's own entries is kept. Returns whether it was removed."""
    try:
        if RunRecorder(output).rows()[0] or VerifiedBackup.latest(output / "backup") is not None:
            return False
        if any(p.name not in RUN_ENTRIES and not files.TEMPORARY_NAME.fullmatch(p.name) for p in output.iterdir()):
            return False
        shutil.rmtree(output)
    except (OSError, UsageError):
        return False
    return True


