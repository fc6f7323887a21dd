"""The run folder of ``keras-mtanet train``: what it holds, and how a run survives a kill at any point.

A run folder holds ``train_config.json`` and ``run.json`` (the config and the data of the run), ``log.csv`` (one
row per epoch), ``checkpoints/`` (the best epoch's weights), ``backup/`` (the last finished epoch, removed once
the preset is written) and, at the end, the preset files. ``prepare_run_folder`` decides whether a command starts,
resumes or finds the run finished; ``VerifiedBackup`` and ``RunRecorder`` keep the backup, log and best weights
consistent through a kill.
"""

import hashlib
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import keras

from keras_mtanet import files, presets
from keras_mtanet.errors import UsageError
from keras_mtanet.recipe import SCORE_KEY

RUN_FILE, CONFIG_RECORD, LOG_FILE, LOCK_FILE = "run.json", "train_config.json", "log.csv", ".lock"
# Run record entries measured from the data once it is read: a record without them (a run killed before, or
# written by an earlier version) is not compared on them.
MEASURED = ("training_frames", "validation_frames", "annotations_sha256")
RUN_ENTRIES = {RUN_FILE, CONFIG_RECORD, LOG_FILE, LOCK_FILE, "checkpoints", "backup", "tensorboard"}


def _write_json(path, value):
    """Write JSON through a temporary file beside ``path``, renamed into place (``files.write_atomic``)."""
    files.write_atomic(path, files.dump_json(value))


def _read_record(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_run_folder(output, config, run, resume):
    """Check ``output`` and say what to do: ``"new"`` (an empty or new folder, or a run killed before its
    first backup), ``"resume"`` (an interrupted run with the same config and data) or ``"finished"`` (the same
    run, already complete). Anything else is a one-line ``UsageError``; nothing is deleted but the run's own
    files of a run that never finished an epoch."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: is a file; --output must be a new or empty folder, or an earlier run's")
    backup = output / "backup"
    recorded = output / CONFIG_RECORD
    if (output / presets.METADATA_FILE).exists():
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
        _write_json(recorded, config)
        _write_json(output / RUN_FILE, run)
    except OSError as error:  # a read-only place, a full disk
        raise files.write_error(output, error, UsageError) from None
    return "new"

def check_same_run(output, config, run, finished=False):
    """``UsageError`` listing what differs between this command's config and data and the run recorded in
    ``output`` (``train_config.json`` and ``run.json``)."""
    old_config = _read_record(output / CONFIG_RECORD)
    old_run = _read_record(output / RUN_FILE) or {}
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

    handle = _open_no_link(output / LOCK_FILE)
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


def _link_refused(path):
    """The one-line error for a link found at a run file's fixed name (refused, never followed)."""
    return UsageError(f"{path}: is a link; a run folder's own files must be plain files")


def _open_no_link(path):
    """``path`` opened for appending (text, UTF-8), created 0644 if missing; a link there is refused rather
    than followed (a link planted at a run file's fixed name must not redirect the write)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if Path(path).is_symlink():
            raise _link_refused(path) from None
        raise files.write_error(path, error, UsageError) from None
    return os.fdopen(fd, "a", newline="", encoding="utf-8")


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
                state.get("weights_sha256") == files.sha256_file(weights):
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
        with files.atomic_output(latest_w) as tmp:  # a fresh temporary name: never through a planted link
            self.model.save_weights(str(tmp), overwrite=True)
            latest_s.unlink(missing_ok=True)
        _write_json(latest_s, {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                               "weights_sha256": files.sha256_file(latest_w)})


def _copy_atomic(source, target):
    with files.atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)


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

        if self.log_path.is_symlink():
            raise _link_refused(self.log_path)
        if not self.log_path.exists():
            return [], None
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
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
            with files.atomic_output(target) as tmp:
                self.model.save_weights(str(tmp), overwrite=True)
            self.best_score = score
        self._append_row({"epoch": epoch, **{k: _log_value(v) for k, v in sorted(logs.items())}})

    def _append_row(self, row):
        import csv

        new = not self.log_path.exists()
        fields = list(row) if new else self.rows()[1]
        with _open_no_link(self.log_path) as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def _write_rows(self, rows, fields):
        import csv

        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        files.write_atomic(self.log_path, text.getvalue())


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
