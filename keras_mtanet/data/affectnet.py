"""AffectNet reader (Mollahosseini et al., 2017), manually annotated part.

Layout::

    ROOT/training.csv, ROOT/validation.csv
        subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
    ROOT/Manually_Annotated_Images/<subDirectory_filePath>

AffectNet's expression codes are 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger,
7 Contempt, 8 None, 9 Uncertain, 10 No-Face. They are remapped to this package's 7 classes; Contempt and the
non-expression codes become -1 (unannotated). AffectNet writes valence/arousal -2 for images without a
valid rating; those become -5. Any other value outside [-1, 1] is refused (naming file and line). AffectNet
has no AU labels: AU is -1 throughout. The face box crops each image.
"""

import math
import os
from pathlib import Path

import numpy as np

from keras_mtanet.data.csvrows import CSVRows
from keras_mtanet.data.images import require_file, screen_image
from keras_mtanet.data.index import FrameIndex
from keras_mtanet.errors import DataError
from keras_mtanet.files import printable
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA

AFFECTNET_TO_EXPR = {0: EXPR_NAMES.index("Neutral"), 1: EXPR_NAMES.index("Happiness"),
                     2: EXPR_NAMES.index("Sadness"), 3: EXPR_NAMES.index("Surprise"), 4: EXPR_NAMES.index("Fear"),
                     5: EXPR_NAMES.index("Disgust"), 6: EXPR_NAMES.index("Anger")}
AFFECTNET_CODES = range(11)
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal")
SPLIT_FILES = {"train": "training.csv", "training": "training.csv", "training_set": "training.csv",
               "val": "validation.csv", "validation": "validation.csv", "validation_set": "validation.csv"}
IMAGE_DIR = "Manually_Annotated_Images"
UNRATED = -2  # AffectNet's valence/arousal for an image without a valid rating


def _inside(path, root):
    """Whether ``path`` lies inside ``root``, by the names alone (``..`` folded; links inside the data set, such
    as an image folder linked to another disk, are the data set's own and stay allowed)."""
    root = os.path.abspath(root)
    return os.path.commonpath([root, os.path.abspath(path)]) == root


def _rating(value):
    return value == UNRATED or -1.0 <= value <= 1.0


def read_index(root, split="train", check_images=True):
    """Index an AffectNet split: image paths, face boxes and labels in this package's conventions.

    Raises:
        DataError: a missing root, CSV or column, or a malformed row (naming file and line).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: AffectNet root not found (expected training.csv / validation.csv in it)")
    name = SPLIT_FILES.get(str(split).lower())
    if name is None:
        raise DataError(f"unknown AffectNet split {split!r}; use 'train' or 'val'")
    csv_path = root / name
    require_file(csv_path, "AffectNet split file")
    image_root = root / IMAGE_DIR if (root / IMAGE_DIR).is_dir() else root

    paths, groups, lines, boxes, va, expr, skipped = [], [], [], [], [], [], []
    stats = {"rows": 0, "frames": 0, "missing_images": 0, "corrupt_images": 0, "expression_unmapped": 0}
    with open(csv_path, "rb") as f:
        reader = CSVRows(csv_path, f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{csv_path}:1: empty file")
        header = [h.strip() for h in header]
        missing = [c for c in COLUMNS if c != "facial_landmarks" and c not in header]
        if missing:
            raise DataError(f"{csv_path}:1: missing column(s) {', '.join(missing)}")
        col = {c: header.index(c) for c in COLUMNS if c in header}
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            stats["rows"] += 1
            try:
                rel = row[col["subDirectory_filePath"]].strip()
                box = [float(row[col[c]]) for c in ("face_x", "face_y", "face_width", "face_height")]
                code = float(row[col["expression"]])
                valence, arousal = float(row[col["valence"]]), float(row[col["arousal"]])
                if not all(math.isfinite(v) for v in box + [code]):  # inf, 1e400: no int
                    raise ValueError("not finite")
                box, code = [int(v) for v in box], int(code)
            except (IndexError, ValueError, OverflowError):
                raise DataError(f"{csv_path}:{line}: malformed row {','.join(row)[:120]!r}") from None
            if not rel:
                raise DataError(f"{csv_path}:{line}: empty subDirectory_filePath")
            if code not in AFFECTNET_CODES:
                raise DataError(f"{csv_path}:{line}: expression code {code} is not one of 0-10")
            if not all(_rating(v) for v in (valence, arousal)):
                raise DataError(f"{csv_path}:{line}: valence/arousal must lie in [-1, 1] or be {UNRATED} "
                                f"(unrated), got {valence:g}, {arousal:g}")
            if box[2] <= 0 or box[3] <= 0:
                raise DataError(f"{csv_path}:{line}: face box {box} has no area")
            path = image_root / rel
            if not _inside(path, root):  # absolute, or ../ climbing out: refused
                raise DataError(f"{csv_path}:{line}: image path {printable(rel)!r} lies outside the data root "
                                f"{printable(root)}; refused")
            if not screen_image(path, path.is_file(), check_images, stats, skipped, "images"):
                continue
            mapped = AFFECTNET_TO_EXPR.get(code, UNANNOTATED_EXPR)
            stats["expression_unmapped"] += mapped == UNANNOTATED_EXPR
            rated = -1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0
            paths.append(str(path))
            groups.append(rel.split("/")[0])
            lines.append(line)
            boxes.append(box)
            va.append((valence, arousal) if rated else (UNANNOTATED_VA, UNANNOTATED_VA))
            expr.append(mapped)
    stats["frames"] = len(paths)
    n = len(paths)
    return FrameIndex(paths, groups, np.asarray(lines, np.int64), np.asarray(va, np.float32).reshape(n, 2),
                      np.full((n, len(AU_NAMES)), UNANNOTATED_AU, np.float32), np.asarray(expr, np.int32),
                      stats, skipped, boxes=np.asarray(boxes, np.int32).reshape(n, 4))
