"""GENKI-4K reader (The MPLab GENKI-4K Dataset, Machine Perception Laboratory, UC San Diego; cite
"http://mplab.ucsd.edu, The MPLab GENKI-4K Dataset."): 4,000 real colour face photographs with a human smile label.

Layout::

    ROOT/files/file0001.jpg ... file4000.jpg
    ROOT/labels.txt    line N belongs to fileNNNN.jpg: "smile yaw pitch roll" (smile 1 or 0; head pose in radians)
    ROOT/test.txt      optional: the held-out files, one name per line (measure on them; never train on them)

A smile is AU12 (lip corner puller) by FACS, so the smile label is the image's AU12 target; every other AU,
the expression and valence/arousal are unannotated. Splits: ``"test"`` is the files ``test.txt`` names;
``"valid"`` a fixed tenth of the others (every file whose number ends in 0), for choosing and calibrating;
``"train"`` the rest; ``"all"`` every file. A malformed line is one ``DataError`` naming file and line; missing
and corrupt images are counted in ``stats`` and left out.
"""

import math
import os
import re
from pathlib import Path

import numpy as np

from keras_mtanet.data.images import require_file, screen_image
from keras_mtanet.data.index import FrameIndex, in_split
from keras_mtanet.errors import DataError
from keras_mtanet.files import printable, require_regular_file
from keras_mtanet.labels import AU_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA

LABEL_FILE, TEST_FILE, IMAGE_DIR = "labels.txt", "test.txt", "files"
SPLITS = ("train", "valid", "test", "all")
AU12 = AU_NAMES.index("AU12")
MAX_LINES = 1_000_000  # far beyond the 4,000 the set has: a longer labels.txt is not GENKI-4K
_NAME = re.compile(r"file(\d{4,})\.jpg")


def image_name(number):
    """The file of 1-based ``number``: ``file0001.jpg``."""
    return f"file{number:04d}.jpg"


def is_validation(number):
    """The fixed validation tenth: files whose 1-based number ends in 0."""
    return number % 10 == 0


def read_test_list(root):
    """The 1-based numbers ``test.txt`` names (empty without the file); a line that is not a GENKI file name is a
    ``DataError`` naming file and line."""
    path = Path(root) / TEST_FILE
    require_regular_file(path, "GENKI-4K test list")
    if not path.exists():
        return set()
    numbers = set()
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        try:
            for line_number, line in enumerate(f, 1):
                name = line.strip()
                if not name:
                    continue
                match = _NAME.fullmatch(name)
                if match is None:
                    raise DataError(f"{printable(path)}:{line_number}: {printable(name)[:80]!r} is not a GENKI-4K "
                                    "file name (fileNNNN.jpg)")
                numbers.add(int(match.group(1)))
        except UnicodeDecodeError:
            raise DataError(f"{printable(path)}: not UTF-8 text") from None
    return numbers


def parse_line(line, where):
    """``(smile, yaw, pitch, roll)`` of one ``labels.txt`` line; ``DataError`` naming ``where`` otherwise."""
    fields = line.split()
    if len(fields) != 4:
        raise DataError(f"{where}: expected 'smile yaw pitch roll', got {len(fields)} field(s)")
    if fields[0] not in ("0", "1"):
        raise DataError(f"{where}: smile must be 0 or 1, got {printable(fields[0])[:20]!r}")
    try:
        pose = [float(v) for v in fields[1:]]
    except ValueError:
        raise DataError(f"{where}: head pose must be three numbers (radians)") from None
    if not all(math.isfinite(v) and abs(v) <= 2 * math.pi for v in pose):
        raise DataError(f"{where}: head pose must be three finite angles in radians")
    return (int(fields[0]), *pose)


def read_index(root, split="train", check_images=True):
    """Index one GENKI-4K split: image paths, AU12 targets from the smile labels, and the head pose.

    Args:
        root: the folder holding ``files/`` and ``labels.txt``.
        split: ``"train"``, ``"valid"``, ``"test"`` (the files ``test.txt`` names) or ``"all"``.
        check_images: check that every listed image is a complete JPEG/PNG, leaving out (and counting) those
            that are not.

    Returns:
        A ``FrameIndex``: ``au[:, AU12]`` is the smile label, every other target unannotated; ``videos`` holds
        ``"genki4k"``, ``frames`` the ``labels.txt`` line; ``stats["pose"]`` the (N, 3) yaw, pitch, roll.

    Raises:
        DataError: a missing root or label file, a malformed line (naming file and line), or ``"test"`` asked
            without a ``test.txt``.
    """
    if split not in SPLITS:
        raise DataError(f"unknown GENKI-4K split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    labels_path = root / LABEL_FILE
    if not root.is_dir():
        raise DataError(f"{printable(root)}: GENKI-4K root not found (expected files/ and labels.txt in it)")
    require_file(labels_path, "GENKI-4K label file")
    held_out = read_test_list(root)
    if split == "test" and not held_out:
        raise DataError(f"{printable(root / TEST_FILE)}: no held-out list; the test split needs it")
    image_dir = root / IMAGE_DIR
    existing = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
    stats = {"rows": 0, "frames": 0, "smiling": 0, "missing_images": 0, "corrupt_images": 0,
             "held_out_named": len(held_out)}
    paths, lines, au, pose, skipped = [], [], [], [], []
    with open(labels_path, encoding="utf-8-sig") as f:
        try:
            for number, line in enumerate(f, 1):
                if number > MAX_LINES:
                    raise DataError(f"{printable(labels_path)}: more than {MAX_LINES:,} lines; not GENKI-4K labels")
                smile, *angles = parse_line(line, f"{printable(labels_path)}:{number}")
                stats["rows"] += 1
                if not in_split(number, split, held_out, is_validation):
                    continue
                name = image_name(number)
                path = image_dir / name
                if not screen_image(path, name in existing, check_images, stats, skipped, "images"):
                    continue
                row = np.full(len(AU_NAMES), UNANNOTATED_AU, np.float32)
                row[AU12] = smile
                stats["smiling"] += smile
                paths.append(str(path))
                lines.append(number)
                au.append(row)
                pose.append(angles)
        except UnicodeDecodeError:
            raise DataError(f"{printable(labels_path)}: not UTF-8 text") from None
    unknown = sorted(n for n in held_out if n > stats["rows"])
    if unknown:
        raise DataError(f"{printable(root / TEST_FILE)}: names {image_name(unknown[0])}, which labels.txt has no "
                        f"line for ({len(unknown)} such name(s))")
    n = stats["frames"] = len(paths)
    stats["pose"] = np.asarray(pose, np.float32).reshape(n, 3)
    return FrameIndex(paths, ["genki4k"] * n, np.asarray(lines, np.int64),
                      np.full((n, 2), UNANNOTATED_VA, np.float32), np.asarray(au, np.float32).reshape(n, len(AU_NAMES)),
                      np.full(n, UNANNOTATED_EXPR, np.int32), stats, skipped)


def write_layout(root, smiles, images, poses=None, test=()):
    """Write a GENKI-4K-layout folder (for tests and tutorials): ``images`` (encoded JPEG bytes) as
    ``files/fileNNNN.jpg``, ``labels.txt`` from ``smiles`` (and ``poses``, default zeros), ``test.txt`` naming the
    1-based numbers ``test``. Returns ``root``."""
    from keras_mtanet.files import write_atomic

    root = Path(root)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    poses = np.zeros((len(smiles), 3)) if poses is None else np.asarray(poses)
    for number, data in enumerate(images, 1):
        write_atomic(root / IMAGE_DIR / image_name(number), data)
    write_atomic(root / LABEL_FILE, "".join(f"{int(s)} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n"
                                            for s, p in zip(smiles, poses)))
    write_atomic(root / TEST_FILE, "".join(f"{image_name(n)}\n" for n in test))
    return root
