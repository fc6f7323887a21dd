"""Per-face, per-frame prediction records and their CSV / JSON files.

One record per face per frame. A frame where no face was found gives one record with ``face_detected`` 0 and
empty (NaN) prediction fields, so every decoded frame is accounted for.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

from keras_mtanet.data.errors import DataError
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES
from keras_mtanet.metrics import AU_THRESHOLD

AU_PROB_COLUMNS = tuple(f"{au}_prob" for au in AU_NAMES)
AU_COLUMNS = AU_NAMES
EXPR_PROB_COLUMNS = tuple(f"{e}_prob" for e in EXPR_NAMES)
COLUMNS = (("source", "frame", "timestamp", "face_id", "face_detected", "x", "y", "w", "h", "score",
            "valence", "arousal") + AU_PROB_COLUMNS + AU_COLUMNS + EXPR_PROB_COLUMNS + ("expression",))
OUTPUT_SUFFIXES = (".csv", ".json")


def face_record(frame, face_id, box, score, va, au, expr):
    """A record for one face: ``box`` (x, y, w, h), model outputs ``va`` (2,), ``au`` (8,), ``expr`` (7,)."""
    record = dict.fromkeys(COLUMNS)
    record.update({"source": frame.source, "frame": frame.index, "timestamp": frame.timestamp, "face_id": face_id,
                   "face_detected": 1, "x": float(box[0]), "y": float(box[1]), "w": float(box[2]),
                   "h": float(box[3]), "score": float(score)})
    set_predictions(record, va, au, expr)
    return record


def set_predictions(record, va, au, expr):
    """Fill the prediction fields of ``record``; AU decisions and the expression follow the probabilities."""
    record["valence"], record["arousal"] = float(va[0]), float(va[1])
    for name, column, p in zip(AU_NAMES, AU_PROB_COLUMNS, au):
        record[column] = float(p)
        record[name] = int(p > AU_THRESHOLD)
    for column, p in zip(EXPR_PROB_COLUMNS, expr):
        record[column] = float(p)
    record["expression"] = EXPR_NAMES[int(np.argmax(expr))]


def empty_record(frame):
    """The record of a frame with no face: ``face_detected`` 0, every prediction field NaN or empty."""
    record = {column: math.nan for column in COLUMNS}
    record.update({"source": frame.source, "frame": frame.index, "timestamp": frame.timestamp, "face_id": None,
                   "face_detected": 0, "expression": ""})
    for name in AU_COLUMNS:
        record[name] = None
    return record


def check_output_path(path):
    """``DataError`` unless ``path`` ends in .csv or .json and its folder exists."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"{path}: the output must be a .csv or .json file")
    if not path.parent.exists():
        raise DataError(f"{path}: folder {path.parent} does not exist")


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _json_value(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class RecordWriter:
    """Writes records as they come, so a run stopped half-way keeps what it finished: CSV rows are flushed
    per call; JSON (one array of objects) is completed on ``close``."""

    def __init__(self, path):
        check_output_path(path)
        self.path = Path(path)
        self.json = self.path.suffix.lower() == ".json"
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self.count = 0
        if self.json:
            self._file.write("[")
        else:
            self._csv = csv.writer(self._file)
            self._csv.writerow(COLUMNS)

    def write(self, records):
        for record in records:
            if self.json:
                self._file.write(("," if self.count else "") + "\n"
                                 + json.dumps({c: _json_value(record[c]) for c in COLUMNS}))
            else:
                self._csv.writerow([_csv_value(record[c]) for c in COLUMNS])
            self.count += 1
        self._file.flush()

    def close(self):
        if self.json:
            self._file.write("\n]\n")
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
