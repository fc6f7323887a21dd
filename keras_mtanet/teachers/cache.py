"""The teacher label cache: one CSV row per image with its teacher AUs, derived valence/arousal and what the
landmarker measured, so a training run reads targets without running MediaPipe.

Columns: ``image`` (``FER2013Train/fer0000000.png``, relative to the data root), ``found`` (1 when the landmarker
found the face), the 8 AU probabilities (-1 when not found), ``valence``, ``arousal`` (-5 when no vote names an
emotion), then the 52 blendshape scores and the landmark measurements (empty when not found), kept so the AU
mapping can be revisited without rerunning the landmarker (``features``, ``au.au_probabilities``).
"""

import collections
import csv
import heapq
import math
from pathlib import Path

import numpy as np

from keras_mtanet import files
from keras_mtanet.errors import DataError
from keras_mtanet.labels import AU_NAMES, UNANNOTATED_AU, UNANNOTATED_VA, VA_NAMES
from keras_mtanet.teachers.landmarker import BLENDSHAPE_NAMES, GEOMETRY_NAMES

COLUMNS = ("image", "found", *AU_NAMES, *VA_NAMES, *BLENDSHAPE_NAMES, *GEOMETRY_NAMES)
Entry = collections.namedtuple("Entry", "found au va")


def format_row(image, found, au, va, blendshapes, geometry):
    """One cache row as a list of strings."""
    def number(v, spec):
        return "" if v is None or math.isnan(v) else format(float(v), spec)

    if not found:
        au = [UNANNOTATED_AU] * len(AU_NAMES)
    if (len(au), len(va), len(blendshapes), len(geometry)) != (len(AU_NAMES), 2, len(BLENDSHAPE_NAMES),
                                                             len(GEOMETRY_NAMES)):
        raise ValueError(f"format_row: {image}: expected {len(AU_NAMES)} AUs, 2 VA, {len(BLENDSHAPE_NAMES)} "
                         f"blendshapes and {len(GEOMETRY_NAMES)} measurements")
    # Six significant digits keep the tiny blendshape scores (cheekSquint lives around 1e-6) the mapping uses.
    return [image, "1" if found else "0", *(number(v, ".4f") for v in au), *(number(v, ".4f") for v in va),
            *(number(v, ".6g") for v in blendshapes), *(number(v, ".6g") for v in geometry)]


def read_rows(path):
    """``{image: list of strings}`` of a cache file, checking the header and every row (see ``iter_rows``)."""
    return {row[0]: row for row in iter_rows(path)}


def iter_rows(path):
    """The checked rows (lists of strings) of a cache file, one at a time, so a caller may stream them.

    Raises:
        DataError: a missing file, a wrong header or a malformed row (naming file and line).
    """
    path = Path(path)
    files.require_regular_file(path, "teacher label file")
    try:
        f = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: teacher label file not found (write it with keras-mtanet teach)") from None
    except OSError as error:
        raise files.read_error(path, error) from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header != list(COLUMNS):
                shown = ",".join(header or [])[:80]
                raise DataError(f"{path}:1: not a keras-mtanet teacher label file (header {shown!r})")
            for row in reader:
                if not row:
                    continue
                _check(path, reader.line_num, row)
                yield row
        except csv.Error as error:
            raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({error})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a text file") from None
        except OSError as error:
            raise files.read_error(path, error) from None


def _check(path, line, row):
    where = f"{path}:{line}"
    if len(row) != len(COLUMNS):
        raise DataError(f"{where}: expected {len(COLUMNS)} fields, got {len(row)}")
    if not row[0] or row[1] not in ("0", "1"):
        raise DataError(f"{where}: malformed row (image {row[0]!r}, found {row[1]!r}; found must be 0 or 1)")
    try:
        au = [float(v) for v in row[2:2 + len(AU_NAMES)]]
        va = [float(v) for v in row[2 + len(AU_NAMES):2 + len(AU_NAMES) + 2]]
    except ValueError:
        raise DataError(f"{where}: an AU or valence/arousal value is not a number") from None
    if not all(v == UNANNOTATED_AU or 0.0 <= v <= 1.0 for v in au):
        raise DataError(f"{where}: AU values must be probabilities in [0, 1] or -1")
    if row[1] == "0" and any(v != UNANNOTATED_AU for v in au):
        raise DataError(f"{where}: a face the teacher did not find must have unannotated AUs (-1)")
    if not all(v == UNANNOTATED_VA or -1.0 <= v <= 1.0 for v in va):
        raise DataError(f"{where}: valence/arousal must lie in [-1, 1] or be -5")


def entry(row):
    """The ``Entry`` (found, AU (8,), VA (2,) float32) of a checked row."""
    au = np.asarray(row[2:2 + len(AU_NAMES)], np.float32)
    va = np.asarray(row[2 + len(AU_NAMES):4 + len(AU_NAMES)], np.float32)
    return Entry(row[1] == "1", au, va)


def read_labels(path):
    """``{image: Entry}`` of a cache file (see ``read_rows`` for errors)."""
    return {image: entry(row) for image, row in read_rows(path).items()}


def features(row):
    """The blendshape and landmark values of a row as ``{name: float}`` (NaN when the face was not found)."""
    start = 2 + len(AU_NAMES) + len(VA_NAMES)
    names = BLENDSHAPE_NAMES + GEOMETRY_NAMES
    return {n: float(v) if v else float("nan") for n, v in zip(names, row[start:start + len(names)])}


def write_rows(path, rows, user_file=False):
    """Write a header and ``rows`` (lists of strings) to ``path`` through a temporary file and a rename.

    ``rows`` may be any iterable, a generator included: each row goes to the file as it comes, so writing a
    merged cache keeps no more than one row in memory. A failure while writing leaves ``path`` as it was.
    ``user_file``: ``path`` is an output the user named (``teach --output``), written as ``predict`` writes its
    outputs (through a link the user made, keeping the file's permissions); otherwise it is one of the package's
    own files, and a link planted there is replaced, never written through (``files.AtomicFile``'s rule).

    Raises:
        DataError: one line naming ``path`` when it cannot be written (an error reading ``rows`` is raised as is).
    """
    failed_reading = []

    def pulled():  # an error while reading the rows is theirs, not the output file's
        try:
            yield from rows
        except OSError:
            failed_reading.append(True)
            raise

    opened = files.AtomicFile(path, "w", user_file=user_file, error=None, newline="")
    try:
        with opened as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in pulled():
                writer.writerow(row)
    except OSError as error:  # a full disk, a read-only folder
        if failed_reading:
            raise
        raise files.write_error(path, error) from None


def merge_sorted(paths, key):
    """The rows of cache files each sorted by ``key(row)``, merged in that order, streamed (``heapq.merge``).

    Where several files hold the same image, the row of the file listed last is kept, as a dict update would.
    """
    runs = [_in_order(p, key) for p in paths]
    previous = None
    for row in heapq.merge(*runs, key=lambda r: (key(r), r[0])):
        if previous is not None and previous[0] != row[0]:
            yield previous
        previous = row
    if previous is not None:
        yield previous


def _in_order(path, key):
    previous = None
    for row in iter_rows(path):
        k = (key(row), row[0])
        if previous is not None and k < previous:
            raise DataError(f"{path}: rows out of order at image {row[0]} (a cache keeps split order, then "
                            "image name); write it again with keras-mtanet teach")
        previous = k
        yield row
