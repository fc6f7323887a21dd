"""facial_expressions reader: a crowd-labelled expression set (an open course project, Apache-2.0; mostly Labeled
Faces in the Wild and Indian film-star crops, one of eight labels per face given by students).

Layout::

    ROOT/images/<name>
    ROOT/legend.csv    header "image,emotion,contributor"; emotion one of neutral, happiness, surprise, sadness,
                       anger, disgust, fear, contempt (any case)
    ROOT/test.csv      optional: header "image", then the held-out images (a fixed quarter of the identities:
                       measure on them, never train on them)

Expressions map to this package's seven classes; a contempt face carries no usable label and is left out and
counted, as are missing and corrupt images. A name listed twice with the same label is kept once
(``duplicate_rows``); with conflicting labels it is left out altogether (``conflicting_labels``). Splits:
``"test"`` the images ``test.csv`` names; ``"valid"`` the identities (an LFW name less its ``_NNNN`` number, or
the whole name) whose CRC-32 is 0 mod 10, among the others, so no person is in both ``train`` and ``valid``;
``"train"`` the rest; ``"all"`` every image. A malformed line is one ``DataError`` naming file and line.
"""

import os
import re
import zlib
from pathlib import Path

import numpy as np

from keras_mtanet.data.csvrows import CSVRows
from keras_mtanet.data.images import require_file, screen_image
from keras_mtanet.data.index import FrameIndex, in_split
from keras_mtanet.errors import DataError
from keras_mtanet.files import printable
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_VA

LEGEND_FILE, TEST_FILE, IMAGE_DIR = "legend.csv", "test.csv", "images"
SPLITS = ("train", "valid", "test", "all")
EMOTIONS = {"neutral": "Neutral", "happiness": "Happiness", "surprise": "Surprise", "sadness": "Sadness",
            "anger": "Anger", "disgust": "Disgust", "fear": "Fear", "contempt": None}
MAX_FILE_BYTES = 64 << 20  # the legend is about 0.5 MB; a larger file is not this set's
_NUMBERED = re.compile(r"(.+)_\d+")


def identity(name):
    """The person an image shows, as far as its name says: ``Kimi_Raikkonen_0002.jpg`` -> ``Kimi_Raikkonen``; a
    name without a trailing number is its own identity."""
    stem = os.path.splitext(name)[0]
    match = _NUMBERED.fullmatch(stem)
    return match.group(1) if match else stem


def is_validation(name):
    """The fixed validation part: the identities whose CRC-32 is 0 mod 10 (a whole person or none)."""
    return zlib.crc32(identity(name).encode("utf-8")) % 10 == 0


def _rows(path, what):
    """The non-blank rows of a CSV file of the set (``CSVRows``: ``DataError`` naming file and line), cells stripped,
    with their line numbers; a missing file, or one over ``MAX_FILE_BYTES``, is refused first."""
    require_file(path, what)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{printable(path)}: {what} larger than {MAX_FILE_BYTES >> 20} MiB; refused")
    with open(path, "rb") as f:
        reader = CSVRows(printable(path), f)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, [cell.strip() for cell in row]


def read_test_list(root):
    """The image names ``test.csv`` holds (empty without the file)."""
    path = Path(root) / TEST_FILE
    if not path.exists() and not path.is_symlink():
        return set()
    names = set()
    for line, row in _rows(path, "facial_expressions test list"):
        if line == 1 and row[0].lower() == "image":
            continue
        if len(row) != 1 or "/" in row[0] or "\\" in row[0] or row[0] in (".", ".."):
            raise DataError(f"{printable(path)}:{line}: expected one image name per line")
        names.add(row[0])
    return names


def read_index(root, split="train", check_images=True):
    """Index one split of the set (``"train"``, ``"valid"``, ``"test"``: the images ``test.csv`` names, or
    ``"all"``) under ``root``, the folder holding ``images/`` and ``legend.csv``: image paths and expression class
    ids. With ``check_images`` every listed image must be a complete JPEG/PNG; those that are not are counted and
    left out.

    Returns:
        A ``FrameIndex`` whose ``expr`` holds the class ids (``labels.EXPR_NAMES``); AUs and valence/arousal are
        unannotated; ``videos`` holds each image's identity, ``frames`` its ``legend.csv`` line.

    Raises:
        DataError: a missing root or legend, a malformed line (naming file and line), or ``"test"`` asked without a
            ``test.csv``.
    """
    if split not in SPLITS:
        raise DataError(f"unknown facial_expressions split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{printable(root)}: facial_expressions root not found (expected images/ and legend.csv)")
    legend = root / LEGEND_FILE
    held_out = read_test_list(root)
    if split == "test" and not held_out:
        raise DataError(f"{printable(root / TEST_FILE)}: no held-out list; the test split needs it")
    labels, first_line = {}, {}
    stats = {"rows": 0, "frames": 0, "duplicate_rows": 0, "conflicting_labels": 0, "contempt": 0,
             "missing_images": 0, "corrupt_images": 0}
    for line, row in _rows(legend, "facial_expressions legend"):
        if line == 1 and [cell.lower() for cell in row[:2]] == ["image", "emotion"]:
            continue
        where = f"{printable(legend)}:{line}"
        if len(row) < 2 or not row[0]:
            raise DataError(f"{where}: expected image,emotion,contributor")
        name, emotion = row[0], row[1].lower()
        if "/" in name or "\\" in name or name in (".", ".."):
            raise DataError(f"{where}: {printable(name)[:80]!r} is not a plain image name; refused")
        if emotion not in EMOTIONS:
            raise DataError(f"{where}: unknown emotion {printable(row[1])[:40]!r}; expected one of "
                            f"{', '.join(EMOTIONS)}")
        stats["rows"] += 1
        if name in labels:
            stats["duplicate_rows"] += 1
            if labels[name] != emotion:
                labels[name] = "conflict"
            continue
        labels[name], first_line[name] = emotion, line
    unknown = sorted(held_out - set(labels))
    if unknown:
        raise DataError(f"{printable(root / TEST_FILE)}: names {printable(unknown[0])}, which {LEGEND_FILE} does not "
                        f"list ({len(unknown)} such name(s))")
    image_dir = root / IMAGE_DIR
    existing = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
    paths, videos, lines, expr, skipped = [], [], [], [], []
    for name, emotion in labels.items():
        if not in_split(name, split, held_out, is_validation):
            continue
        path = image_dir / name
        if emotion == "conflict":
            stats["conflicting_labels"] += 1
            skipped.append((str(path), "listed again with another emotion"))
            continue
        if EMOTIONS[emotion] is None:
            stats["contempt"] += 1
            skipped.append((str(path), "contempt (not one of the seven classes)"))
            continue
        if not screen_image(path, name in existing, check_images, stats, skipped, "images"):
            continue
        paths.append(str(path))
        videos.append(identity(name))
        lines.append(first_line[name])
        expr.append(EXPR_NAMES.index(EMOTIONS[emotion]))
    n = stats["frames"] = len(paths)
    return FrameIndex(paths, videos, np.asarray(lines, np.int64), np.full((n, 2), UNANNOTATED_VA, np.float32),
                      np.full((n, len(AU_NAMES)), UNANNOTATED_AU, np.float32), np.asarray(expr, np.int32), stats,
                      skipped)
