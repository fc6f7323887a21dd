"""Per-face, per-frame prediction records and their CSV / JSON files.

One record per face per frame. A frame where no face was found gives one record with ``face_detected`` 0 and
empty (NaN) prediction fields, so every decoded frame is accounted for.

Files are written under a temporary name beside the target (``files.AtomicFile``) and renamed onto it when done, so
a failed run leaves an earlier file intact and a reader never sees half a file.

File names that are not valid UTF-8 (on Linux Python holds their stray bytes as lone surrogates) are written
with each such byte as a ``\\xNN`` escape (``printable``), in the CSV and JSON files and in messages alike:
the files stay valid UTF-8 for every reader, at the price of not round-tripping those bytes.
"""

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from keras_mtanet import files
from keras_mtanet.errors import DataError
from keras_mtanet.files import error_reason, printable
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES
from keras_mtanet.presets.decisions import Decisions

AU_PROB_COLUMNS = tuple(f"{au}_prob" for au in AU_NAMES)
AU_COLUMNS = AU_NAMES
EXPR_PROB_COLUMNS = tuple(f"{e}_prob" for e in EXPR_NAMES)
COLUMNS = (("source", "frame", "timestamp", "face_id", "face_detected", "x", "y", "w", "h", "score",
            "valence", "arousal") + AU_PROB_COLUMNS + AU_COLUMNS + EXPR_PROB_COLUMNS + ("expression",)
           # The decision columns: the prior the expression was decided under ("balanced" / "training"), the AU
           # thresholds used ("preset": the preset's calibrated ones, or the one number given), and the AUs the
           # preset marks unreliable.
           + ("expression_prior", "au_threshold", "unreliable_aus"))
DEFAULT_DECISIONS = Decisions()  # 0.5 for every AU, the model's own posterior: models without stored rules
OUTPUT_SUFFIXES = (".csv", ".json")


def face_record(frame, face_id, box, score, va, au, expr, decisions=DEFAULT_DECISIONS):
    """A record for one face: ``box`` (x, y, w, h) in the decoded frame's pixels (reported in the original
    image's: times ``frame.scale``), model outputs ``va`` (2,), ``au`` (8,), ``expr`` (7,), decided by
    ``decisions`` (``keras_mtanet.presets.decisions.Decisions``)."""
    box = np.asarray(box, np.float64) * getattr(frame, "scale", 1.0)
    record = dict.fromkeys(COLUMNS)
    record.update({"source": frame.source, "frame": frame.index, "timestamp": frame.timestamp, "face_id": face_id,
                   "face_detected": 1, "x": float(box[0]), "y": float(box[1]), "w": float(box[2]),
                   "h": float(box[3]), "score": float(score)})
    set_predictions(record, va, au, expr, decisions)
    return record


def set_predictions(record, va, au, expr, decisions=DEFAULT_DECISIONS):
    """Fill the prediction fields of ``record``: the probabilities as given, the AU decisions and the expression
    by ``decisions``, and the decision columns saying which rules those were."""
    record["valence"], record["arousal"] = float(va[0]), float(va[1])
    for name, column, p, on in zip(AU_NAMES, AU_PROB_COLUMNS, au, decisions.aus_on(au)):
        record[column] = float(p)
        record[name] = int(on)
    for column, p in zip(EXPR_PROB_COLUMNS, expr):
        record[column] = float(p)
    record["expression"] = EXPR_NAMES[int(decisions.expression(expr))]
    record.update(decision_fields(decisions))


def decision_fields(decisions):
    """The decision columns' values for records decided by ``decisions``."""
    return {"expression_prior": decisions.expression_prior, "au_threshold": decisions.au_rule,
            "unreliable_aus": " ".join(decisions.unreliable_aus)}


def empty_record(frame, decisions=DEFAULT_DECISIONS):
    """The record of a frame with no face: ``face_detected`` 0, every prediction field NaN or empty."""
    record = {column: math.nan for column in COLUMNS}
    record.update({"source": frame.source, "frame": frame.index, "timestamp": frame.timestamp, "face_id": None,
                   "face_detected": 0, "expression": ""})
    record.update(decision_fields(decisions))
    for name in AU_COLUMNS:
        record[name] = None
    return record


def plain(text):
    """``printable(text)`` with control characters (terminal escapes, line breaks) shown as ``\\xNN``: for text
    from untrusted files, such as a preset's description, printed to a terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in printable(text))


def check_writable(path, what="output"):
    """``DataError`` (naming ``path``) unless a file can be written at ``path``: its folder exists and takes a
    new file, and ``path`` is not a folder or a read-only file. Probes by creating and removing a temporary
    file, so read-only mounts and folders root cannot write either are caught before any work."""
    path = Path(path)
    shown = printable(path)
    if path.is_dir():
        raise DataError(f"{shown}: is a folder; give the {what} file's name")
    target = files.link_target(path)
    if not target.parent.is_dir():
        raise DataError(f"{shown}: folder {printable(target.parent)} does not exist")
    if target.exists() and not os.access(target, os.W_OK):
        raise DataError(f"{shown}: the file is read-only")
    if not files.is_special(target):  # a device or pipe is written directly (AtomicFile)
        _probe(target.parent, shown)


def _probe(folder, shown):
    """``DataError`` (naming ``shown``) unless a new file can be created in ``folder``."""
    try:
        fd, temp = files.create_temporary(Path(folder) / "probe")
        os.close(fd)
        os.unlink(temp)
    except OSError as error:
        raise DataError(f"{shown}: cannot write in folder {printable(folder)} ({error_reason(error)})") from None


def check_writable_folder(folder, what="output"):
    """``DataError`` unless ``folder`` is, or can be created as, a folder that takes new files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{printable(folder)}: is a file; the {what} must be a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{printable(folder)}: {printable(existing)} is a file, not a folder")
    _probe(existing, printable(folder))


def check_output_path(path):
    """``DataError`` unless ``path`` ends in .csv or .json and can be written (``check_writable``)."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"{printable(path)}: the output must be a .csv or .json file")
    check_writable(path)


def _csv_value(value, column=None):
    if value is None:
        return ""
    if isinstance(value, float) and column == "timestamp":
        # Microseconds, whatever the length of the video: six significant digits would give 3600, 3600,
        # 3600.01 for consecutive 240 fps frames an hour in.
        return "" if math.isnan(value) else (f"{value:.6f}".rstrip("0").rstrip(".") or "0")
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, str):
        return printable(value)
    return value


def _json_value(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return printable(value)
    return value


class RecordWriter:
    """Writes records as they come into a temporary file beside ``path``; ``close`` completes it (JSON: one
    array of objects) and renames it onto ``path``.

    ``close`` moves the file into place only when it holds at least one record: a run where every input failed
    leaves an earlier ``path`` untouched. As a context manager: closed on success and on ``KeyboardInterrupt``
    (a stopped run keeps what it finished, as valid CSV / JSON); discarded on any other exception. A write
    error (a full disk) is a ``DataError`` naming ``path``.
    """

    def __init__(self, path):
        check_output_path(path)
        self.path = Path(path)
        self.json = self.path.suffix.lower() == ".json"
        self._file = files.AtomicFile(self.path, "w", user_file=True, newline="")
        self.count = 0
        self.written = False  # whether close moved the file into place
        header = "[" if self.json else _csv_line(COLUMNS)
        self._header_bytes = len(header.encode("utf-8"))
        try:
            self._file.write(header)
            self._file.flush()
        except BaseException:
            self._file.discard()
            raise

    def _holds_records(self):
        """Whether the file holds a record, from its size: right even when an interrupt landed between a write
        and the count's update (a device or pipe falls back on the count)."""
        if self._file.temp is None:  # written in place: /dev/null's position stays 0 whatever it was given
            return self.count > 0
        try:
            return self._file.file.tell() > self._header_bytes
        except (OSError, ValueError):
            return self.count > 0

    def write(self, records):
        if not records:
            return
        # One write call per batch of records: an interrupt lands between records, never inside one.
        if self.json:
            first = not self._holds_records()
            text = "".join(("" if first and i == 0 else ",") + "\n"
                           + json.dumps({c: _json_value(record[c]) for c in COLUMNS})
                           for i, record in enumerate(records))
        else:
            text = "".join(_csv_line([_csv_value(record[c], c) for c in COLUMNS]) for record in records)
        self._file.write(text)
        self._file.flush()
        self.count += len(records)

    def close(self):
        """Complete the file and move it onto ``path`` if it holds a record (else remove it); returns whether
        it was moved."""
        if self._file.done:
            return self.written
        if not self._holds_records():
            self._file.discard()
            return False
        if self.json:
            self._file.write("\n]\n")
        self._file.commit()
        self.written = True
        return True

    def discard(self):
        """Remove the temporary file; ``path`` is left as it was."""
        self._file.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.discard()


def _csv_line(values):
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def as_table(records):
    """``records`` as a pandas DataFrame with the columns in ``COLUMNS`` order when pandas is installed, else
    the list of dicts itself."""
    try:
        import pandas as pd
    except ImportError:
        return records
    table = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    # Integer columns stay integers where faceless frames leave them empty.
    return table.astype({column: "Int64" for column in ("face_id",) + AU_COLUMNS})
