"""The Keras callbacks of a training run: ABAW validation scores after each epoch, and the backup, log and best
weights kept consistent through a kill at any point (``keras_mtanet.training.run_folder`` holds the folder).
"""

import contextlib
import io
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import keras

from keras_mtanet import files
from keras_mtanet.errors import UsageError
from keras_mtanet.metrics import abaw_scores
from keras_mtanet.training.recipe import SCORE_KEY

LOG_FILE = "log.csv"  # one row per epoch, in the run folder


def read_record(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def link_refused(path):
    """The one-line error for a link found at a run file's fixed name (refused, never followed)."""
    return UsageError(f"{path}: is a link; a run folder's own files must be plain files")


def open_no_link(path):
    """``path`` opened for appending (text, UTF-8), created 0644 if missing; a link there is refused rather
    than followed (a link planted at a run file's fixed name must not redirect the write)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if Path(path).is_symlink():
            raise link_refused(path) from None
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
        state = read_record(state_file)
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
        files.write_json(latest_s, {"epoch": self._current_epoch, "batch": self._last_batch_seen,
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
            raise link_refused(self.log_path)
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
        with open_no_link(self.log_path) as f:
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


@contextlib.contextmanager
def whole_pass():
    """Keras's "Your input ran out of data" warning silenced: an evaluation dataset leaves its length unknown
    (undecodable frames are dropped, ``pipeline.make_dataset``), so its end is the normal end of a pass, not a
    shortfall."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        yield



class ABAWValidation(keras.callbacks.Callback):
    """Computes ``abaw_scores`` on a validation split after every epoch.

    Adds ``val_<score>`` entries to the logs and ``val_abaw_total`` = VA score + EXPR score + AU score, the
    quantity the best checkpoint keeps. ``replica``: a ``distribution.LocalReplica`` that predicts in place of
    a model distributed over several processes.
    """

    def __init__(self, dataset, index, replica=None):
        super().__init__()
        self.dataset, self.index, self.replica = dataset, index, replica

    def on_epoch_end(self, epoch, logs=None):
        with whole_pass():
            if self.replica is None:
                predictions = self.model.predict(self.dataset, verbose=0)
            else:
                predictions = self.replica.predict(self.model, self.dataset)
        scores = abaw_scores(self.index.labels(), predictions)
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in scores.items()})
            # A task without labels in the validation split (GENKI-4K has only AU12, FER+ without --labels only
            # expressions) scores NaN and does not count, so the best epoch is still found.
            logs[SCORE_KEY] = sum(scores[k] for k in ("va_score", "expr_score", "au_score")
                                  if k in scores and math.isfinite(scores[k]))
