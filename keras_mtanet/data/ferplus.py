"""FER+ reader (Barsoum et al., "Training Deep Networks for Facial Expression Recognition with Crowd-Sourced
Label Distribution", ICMI 2016): the FER2013 faces, 48x48 grey, each with ten crowd votes.

Layout (Microsoft's FER+ training layout)::

    ROOT/FER2013Train/label.csv, ROOT/FER2013Valid/label.csv, ROOT/FER2013Test/label.csv
        fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0       (no header)
    ROOT/FER2013Train/fer0000000.png ...

A row is the image name, its face box ``"(x, y, w, h)"`` and ten vote counts in the order of ``VOTE_NAMES``:
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF (not a face).

How the votes become targets:

- *unknown* and *NF* votes say nothing about the expression and are dropped. An image with more than half of
  its votes on them is left out (``stats["mostly_unknown"]`` / ``stats["mostly_not_face"]``, by the larger).
- *contempt* is not one of this package's seven classes. Its votes are dropped too, not moved to a neighbour
  (contempt's one-sided lip-corner raise is neither disgust nor anger). Where contempt has more votes than every
  one of the seven classes the crowd saw contempt: the image stays (for its teacher AUs and valence/arousal) but
  its expression is unannotated (``stats["contempt_majority"]``). The valence/arousal teacher does count contempt
  votes, at contempt's published coordinates (``keras_mtanet.teachers.va``).
- ``expr_soft``: the seven classes' votes divided by their sum, in ``EXPR_NAMES`` order; all zero where the
  expression is unannotated. ``expr``: the majority class, kept for the metrics: the argmax of ``expr_soft``,
  ties going to the first class in ``EXPR_NAMES`` order (as the streaming metrics' argmax of the soft targets).
- FER+ has no AU or valence/arousal labels: they are unannotated (AU -1, VA -5) unless ``labels`` holds the
  teacher cache written by ``keras-mtanet teach`` (read by ``keras_mtanet.teachers.cache.read_labels``): AU
  probabilities where the teacher found the face, -1 where it did not; valence/arousal derived from the votes,
  not rated.

Listed images that are missing or not a complete PNG/JPEG are left out and counted (``missing_images``,
``corrupt_images``); a row repeating an earlier row of the same image is counted (``duplicate_rows``) and a
repeat with other votes or box is an error. Every image left out is in ``skipped`` with its reason.
"""

import csv
import os
import re
from pathlib import Path

import numpy as np

from keras_mtanet.data.images import require_file, screen_image
from keras_mtanet.data.index import FrameIndex
from keras_mtanet.errors import DataError
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA

VOTE_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown",
              "NF")
# Column of each of our classes (EXPR_NAMES order) among the votes.
EXPR_VOTE_COLUMNS = tuple(VOTE_NAMES.index(name.lower()) for name in EXPR_NAMES)
CONTEMPT, UNKNOWN, NOT_FACE = (VOTE_NAMES.index(n) for n in ("contempt", "unknown", "NF"))
SPLIT_FOLDERS = {"train": "FER2013Train", "training": "FER2013Train", "fer2013train": "FER2013Train",
                 "valid": "FER2013Valid", "val": "FER2013Valid", "validation": "FER2013Valid",
                 "fer2013valid": "FER2013Valid", "test": "FER2013Test", "fer2013test": "FER2013Test"}
SPLITS = ("train", "valid", "test")
LABEL_FILE = "label.csv"
LEFT_OUT = ("missing_images", "corrupt_images", "duplicate_rows", "mostly_unknown", "mostly_not_face",
            "no_votes")
_BOX = re.compile(r"^\(\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\)$")


def split_folder(split):
    """The FER+ folder of a split: ``"train"``/``"valid"``/``"test"`` or the folder name itself."""
    folder = SPLIT_FOLDERS.get(str(split).strip().lower())
    if folder is None:
        raise DataError(f"unknown FER+ split {split!r}; use train, valid or test (or FER2013Train, FER2013Valid, "
                        "FER2013Test)")
    return folder


def parse_row(row, where):
    """``(name, box, votes)`` from one ``label.csv`` row; ``where`` (``"file:line"``) prefixes any error."""
    text = ",".join(row)[:120]
    if len(row) != 2 + len(VOTE_NAMES):
        raise DataError(f"{where}: malformed row, expected 12 fields (image name, \"(x, y, w, h)\" face box, "
                        f"10 vote counts), got {len(row)}: {text!r}")
    name = row[0].strip()
    if not name or "/" in name or "\\" in name:
        raise DataError(f"{where}: malformed row, the first field must be an image file name: {text!r}")
    match = _BOX.match(row[1].strip())
    if match is None:
        raise DataError(f"{where}: malformed face box {row[1]!r}, expected \"(x, y, w, h)\"")
    box = [int(v) for v in match.groups()]
    if box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        raise DataError(f"{where}: face box {row[1]!r} is outside the image or has no area")
    try:
        votes = [int(v) for v in row[2:]]
    except ValueError:
        raise DataError(f"{where}: malformed row, vote counts must be whole numbers: {text!r}") from None
    if min(votes) < 0:
        raise DataError(f"{where}: malformed row, a vote count is negative: {text!r}")
    return name, box, votes


def vote_targets(votes):
    """``(expr_soft, expr, reason)`` for one row of ten vote counts.

    ``reason`` is ``None`` for a usable image, else the ``stats`` key it is left out under. ``expr_soft`` is the
    seven-class distribution (all zero, and ``expr`` -1, when contempt has the most votes).
    """
    votes = np.asarray(votes, np.float64)
    total = votes.sum()
    if total <= 0:
        return None, None, "no_votes"
    if 2 * (votes[UNKNOWN] + votes[NOT_FACE]) > total:
        return None, None, "mostly_unknown" if votes[UNKNOWN] >= votes[NOT_FACE] else "mostly_not_face"
    seven = votes[list(EXPR_VOTE_COLUMNS)]
    if seven.sum() <= 0 or votes[CONTEMPT] > seven.max():
        return np.zeros(len(EXPR_NAMES), np.float32), UNANNOTATED_EXPR, None
    return (seven / seven.sum()).astype(np.float32), int(seven.argmax()), None


def read_index(root, split="train", labels=None, check_images=True):
    """Index one FER+ split: image paths, face boxes, vote distributions and majority classes.

    Args:
        root: the folder holding ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``.
        split: ``"train"``, ``"valid"``, ``"test"`` or a folder name.
        labels: optional teacher labels giving the AU and VA targets: ``keras_mtanet.teachers.cache.read_labels``
            of the cache ``keras-mtanet teach --output`` wrote (the teachers sit above the data readers).
        check_images: check that every listed image is a complete PNG/JPEG, leaving out (and counting) those
            that are not.

    Returns:
        A ``FrameIndex``; ``videos`` holds the split folder, ``frames`` the ``label.csv`` line of each image.
        ``stats`` counts the rows and, under ``LEFT_OUT`` keys, the images left out; ``len(index)`` is the row
        count minus their sum.

    Raises:
        DataError: a missing root, folder or label file, a malformed row or a conflicting repeat (naming file
            and line).

    Example:
        >>> index = read_index("../shared/data/ferplus", "test")  # doctest: +SKIP
        >>> index.expr_soft.shape, index.stats["mostly_unknown"]  # doctest: +SKIP
        ((3569, 7), 4)
    """
    root = Path(root)
    folder = split_folder(split)
    if not root.is_dir():
        raise DataError(f"{root}: FER+ root not found (expected FER2013Train/, FER2013Valid/, FER2013Test/ in it)")
    split_dir = root / folder
    csv_path = split_dir / LABEL_FILE
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: FER+ split folder not found")
    require_file(csv_path, "FER+ label file")
    teacher = labels
    if isinstance(teacher, (str, os.PathLike)):
        raise TypeError("labels: the teacher labels as read by keras_mtanet.teachers.cache.read_labels(path), "
                        "not the path")

    existing = {p.name for p in split_dir.iterdir()}
    paths, lines, boxes, soft, expr, au, va, skipped, raw = [], [], [], [], [], [], [], [], []
    stats = {"rows": 0, "frames": 0, **{k: 0 for k in LEFT_OUT}, "contempt_majority": 0}
    if teacher is not None:
        stats.update(teacher_found=0, teacher_missed=0, not_in_labels=0)
    seen = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                stats["rows"] += 1
                name, box, votes = parse_row(row, f"{csv_path}:{line}")
                if name in seen:
                    first, first_box, first_votes = seen[name]
                    if (first_box, first_votes) != (box, votes):
                        raise DataError(f"{csv_path}:{line}: {name} is listed again with other votes or box "
                                        f"(first on line {first})")
                    stats["duplicate_rows"] += 1
                    skipped.append((str(split_dir / name), f"listed again (first on line {first})"))
                    continue
                seen[name] = (line, box, votes)
                distribution, majority, reason = vote_targets(votes)
                path = split_dir / name
                if reason is not None:
                    stats[reason] += 1
                    skipped.append((str(path), reason.replace("_", " ")))
                    continue
                if not screen_image(path, name in existing, check_images, stats, skipped, "images"):
                    continue
                stats["contempt_majority"] += majority == UNANNOTATED_EXPR
                key = f"{folder}/{name}"
                row_au = np.full(len(AU_NAMES), UNANNOTATED_AU, np.float32)
                row_va = np.full(2, UNANNOTATED_VA, np.float32)
                if teacher is not None:
                    entry = teacher.get(key)
                    if entry is None:
                        stats["not_in_labels"] += 1
                    else:
                        stats["teacher_found" if entry.found else "teacher_missed"] += 1
                        row_au, row_va = entry.au, entry.va
                paths.append(str(path))
                lines.append(line)
                boxes.append(box)
                raw.append(votes)
                soft.append(distribution)
                expr.append(majority)
                au.append(row_au)
                va.append(row_va)
        except csv.Error as error:
            raise DataError(f"{csv_path}:{reader.line_num}: unreadable CSV ({error})") from None
        except UnicodeDecodeError:
            raise DataError(f"{csv_path}: not a text file") from None
    n = stats["frames"] = len(paths)
    return FrameIndex(paths, [folder] * n, np.asarray(lines, np.int64),
                      np.asarray(va, np.float32).reshape(n, 2), np.asarray(au, np.float32).reshape(n, len(AU_NAMES)),
                      np.asarray(expr, np.int32).reshape(n), stats, skipped,
                      boxes=np.asarray(boxes, np.int32).reshape(n, 4),
                      expr_soft=np.asarray(soft, np.float32).reshape(n, len(EXPR_NAMES)),
                      votes=np.asarray(raw, np.int64).reshape(n, len(VOTE_NAMES)))


def read_votes(root, split):
    """``{image name: (10,) vote counts}`` of one split's ``label.csv``, in file order (first of any repeat).

    Raises:
        DataError: a missing label file or a malformed row (naming file and line).
    """
    csv_path = Path(root) / split_folder(split) / LABEL_FILE
    require_file(csv_path, "FER+ label file")
    votes = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                name, _, counts = parse_row(row, f"{csv_path}:{reader.line_num}")
                votes.setdefault(name, np.asarray(counts, np.int64))
    return votes
