"""Aff-Wild2 (ABAW 2020) file format: the one place that reads and writes it.

On-disk layout::

    ROOT/annotations/VA_Set/{Training_Set,Validation_Set}/<video>.txt     "valence,arousal" then one line a frame
    ROOT/annotations/EXPR_Set/{Training_Set,Validation_Set}/<video>.txt   "Neutral,Anger,...,Surprise" then ids
    ROOT/annotations/AU_Set/{Training_Set,Validation_Set}/<video>.txt     "AU1,AU2,...,AU25" then 0/1 lists
    ROOT/cropped_aligned/<video>/<i:05d>.jpg                             frame i (1-based) of <video>

Line i after the header belongs to frame i. A video can be annotated for one, two or three tasks; frames are
merged across tasks, and a task that does not cover a frame gives the unannotated code (VA -5, AU -1,
EXPR -1), which the masked losses skip. Frames without a crop are skipped and counted; corrupt crops (not a
complete JPEG) are skipped and counted too. Videos with two people carry ``_left`` / ``_right`` suffixes,
each with its own crop folder, and are simply two videos here.

ABAW prediction files (``OUT/{VA_Set,EXPR_Set,AU_Set}/<video>.txt``) use the same header and one line a
frame; they print valence/arousal with 6 decimals where the annotation files use 6 significant digits.
The synthetic data writer and ``evaluate`` write through ``write_annotation_file`` and ``write_crop``.
"""

import collections.abc
from pathlib import Path

import numpy as np

from keras_mtanet.data.images import screen_image
from keras_mtanet.data.index import FrameIndex
from keras_mtanet.errors import DataError, first_line
from keras_mtanet.files import AtomicFile, require_regular_file
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA, VA_NAMES

TASK_DIRS = {"va": "VA_Set", "expr": "EXPR_Set", "au": "AU_Set"}
HEADERS = {"va": VA_NAMES, "expr": EXPR_NAMES, "au": AU_NAMES}
SPLIT_ALIASES = {"train": "Training_Set", "training": "Training_Set", "training_set": "Training_Set",
                 "val": "Validation_Set", "valid": "Validation_Set", "validation": "Validation_Set",
                 "validation_set": "Validation_Set"}
SPLITS = ("Training_Set", "Validation_Set")
UNANNOTATED = {"va": UNANNOTATED_VA, "au": UNANNOTATED_AU, "expr": UNANNOTATED_EXPR}
# Valence/arousal: 6 significant digits in annotation files, 6 decimals in prediction files (the formats each
# writer has always used, so files written before and after this module wrote both are byte-identical).
ANNOTATION_VA_FORMAT = "%.6g"
PREDICTION_VA_FORMAT = "%.6f"


def resolve_split(split):
    key = str(split).strip()
    return SPLIT_ALIASES.get(key.lower(), key)


def annotation_path(root, task, split, video):
    """``ROOT/annotations/<VA|AU|EXPR>_Set/<split>/<video>.txt``."""
    return Path(root) / "annotations" / TASK_DIRS[task] / resolve_split(split) / f"{video}.txt"


def prediction_path(out_dir, task, video):
    """The ABAW prediction file of ``video`` for ``task``: ``OUT/<VA|AU|EXPR>_Set/<video>.txt``."""
    return Path(out_dir) / TASK_DIRS[task] / f"{video}.txt"


def crop_folder(root, video):
    return Path(root) / "cropped_aligned" / video


def crop_name(frame):
    """File name of the crop of 1-based ``frame``: ``00001.jpg`` for the first."""
    return f"{frame:05d}.jpg"


def format_annotation_line(task, value, va_format=ANNOTATION_VA_FORMAT):
    """One line of an annotation (or prediction) file for ``task``: ``va_format`` for each of valence and
    arousal, a class id for EXPR, eight integers for AU."""
    if task == "va":
        return f"{va_format % value[0]},{va_format % value[1]}"
    if task == "expr":
        return str(int(value))
    return ",".join(str(int(v)) for v in value)


def write_annotation_file(path, task, values, va_format=ANNOTATION_VA_FORMAT):
    """Write the header of ``task`` and one line per row of ``values`` to ``path`` (parent folders created).

    The file is written under a temporary name and renamed, so a failed run leaves no half file."""
    path = Path(path)
    _make_folder(path.parent)
    lines = [",".join(HEADERS[task])] + [format_annotation_line(task, v, va_format) for v in values]
    with AtomicFile(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_crop(root, video, frame, data):
    """Write encoded image bytes ``data`` as the crop of 1-based ``frame`` of ``video`` (temporary name, then
    renamed)."""
    folder = crop_folder(root, video)
    _make_folder(folder)
    with AtomicFile(folder / crop_name(frame), "wb") as f:
        f.write(data)


def _make_folder(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file in the way, or no permission
        raise DataError(f"{folder}: cannot create folder ({error.strerror or first_line(error)})") from None


def read_annotations(root, split):
    """``{task: {video: labels}}`` for every annotation file of a split, parsed by ``parse_annotation_file``."""
    annotations = {}
    for task, folder in TASK_DIRS.items():
        ann_dir = Path(root) / "annotations" / folder / resolve_split(split)
        for ann_file in sorted(ann_dir.glob("*.txt")) if ann_dir.is_dir() else ():
            annotations.setdefault(task, {})[ann_file.stem] = parse_annotation_file(ann_file, task)
    return annotations


# Lines are parsed in blocks of this many into numpy arrays, so a file of millions of frames costs its arrays
# (8 bytes a VA frame) plus one block of text, never a Python list of every line and value.
PARSE_BLOCK_LINES = 1 << 16
MAX_LINE_CHARS = 1 << 16  # far above any real line; a longer one is refused before it is held whole


def parse_annotation_file(path, task):
    """Parse one annotation file into an array: (T, 2) float32 for VA, (T, 8) float32 for AU, (T,) int32 for
    EXPR. A wrong header, a malformed line or an out-of-range value raises ``DataError`` naming file and line.

    The file is read line by line and parsed in blocks (``PARSE_BLOCK_LINES``), so memory stays near the size of
    the arrays returned whatever the file's length.
    """
    path = Path(path)
    require_regular_file(path, "annotation file")
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:  # \n, \r\n or \r line ends
            return _parse_lines(path, task, f)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read annotation file ({first_line(error)})") from None


def _parse_lines(path, task, f):
    names = HEADERS[task]
    header_line = _read_line(path, f, 1)
    if not header_line:
        raise DataError(f"{path}:1: empty annotation file (expected header {','.join(names)!r})")
    header = [h.strip() for h in header_line.split(",")]
    if header != list(names):
        raise DataError(f"{path}:1: header {header_line.strip()!r} is not {','.join(names)!r}")
    width = len(names) if task != "expr" else 1
    blocks, block, number, blank_at = [], [], 1, None
    while True:
        line = _read_line(path, f, number + 1)
        if not line:
            break
        number += 1
        line = line.strip()
        if not line:
            blank_at = blank_at or number  # allowed only if nothing but blank lines follows
            continue
        if blank_at is not None:
            raise DataError(f"{path}:{blank_at}: empty line inside the annotations")
        block.append(line)
        if len(block) == PARSE_BLOCK_LINES:
            blocks.append(_parse_block(path, task, block, number - len(block) + 1, width))
            block = []
    if block:
        blocks.append(_parse_block(path, task, block, number - len(block) + 1, width))
    dtype = np.int32 if task == "expr" else np.float32
    shape = (0,) if task == "expr" else (0, width)
    return np.concatenate(blocks) if blocks else np.zeros(shape, dtype)


def _read_line(path, f, number):
    line = f.readline(MAX_LINE_CHARS + 1)
    if len(line) > MAX_LINE_CHARS:
        raise DataError(f"{path}:{number}: line longer than {MAX_LINE_CHARS} characters; not an annotation line")
    return line


def _parse_block(path, task, lines, first, width):
    """Consecutive stripped lines (the first is line ``first`` of the file) -> their values, checked."""
    fields = ",".join(lines).split(",")
    try:
        if len(fields) != width * len(lines) or any(line.count(",") != width - 1 for line in lines):
            raise ValueError
        values = np.array(list(map(float, fields)), np.float64).reshape(len(lines), width)
    except ValueError:
        for number, line in enumerate(lines, start=first):  # the first line at fault, with its message
            parts = line.split(",")
            if len(parts) != width:
                raise DataError(f"{path}:{number}: expected {width} comma-separated value(s), got {line!r}") from None
            try:
                [float(part) for part in parts]
            except ValueError:
                raise DataError(f"{path}:{number}: not a number in {line!r}") from None
        raise
    if task == "va":
        good = (((values >= -1.0) & (values <= 1.0)) | (values == UNANNOTATED_VA)).all(axis=1)
    elif task == "au":
        good = np.isin(values, (0.0, 1.0, float(UNANNOTATED_AU))).all(axis=1)
    else:
        v = values[:, 0]
        good = ((v == UNANNOTATED_EXPR) | ((v >= 0) & (v < len(EXPR_NAMES)))) & (v == np.floor(v))
    if not good.all():
        bad = int(np.argmin(good))
        _check_row(path, first + bad, task, [float(x) for x in lines[bad].split(",")], lines[bad])
        raise AssertionError("unreachable: the row check disagrees with the block check")  # pragma: no cover
    if task == "expr":
        return values[:, 0].astype(np.int32)
    return values.astype(np.float32)


def _check_row(path, number, task, row, line):
    if task == "va":
        if not all(v == UNANNOTATED_VA or -1.0 <= v <= 1.0 for v in row) or any(np.isnan(row)):
            raise DataError(f"{path}:{number}: valence/arousal must lie in [-1, 1] or be -5, got {line!r}")
    elif task == "au":
        if not all(v in (0.0, 1.0, float(UNANNOTATED_AU)) for v in row):
            raise DataError(f"{path}:{number}: AU values must be 0, 1 or -1, got {line!r}")
    else:
        v = row[0]
        if not (v == UNANNOTATED_EXPR or 0 <= v < len(EXPR_NAMES)) or v != int(v):  # nan, inf: range first
            raise DataError(f"{path}:{number}: expression must be an id 0-{len(EXPR_NAMES) - 1} or -1, "
                            f"got {line!r}")


def read_index(root, split="Training_Set", tasks=("va", "au", "expr"), check_images=True, videos=None):
    """Index the frames of one split of an Aff-Wild2-layout data set.

    Args:
        root: the folder holding ``annotations/`` and ``cropped_aligned/``.
        split: ``"Training_Set"`` / ``"Validation_Set"`` (or ``"train"`` / ``"val"``).
        tasks: the tasks to read; frames annotated only for other tasks are left out.
        check_images: check that every crop is a complete JPEG (SOI and EOI markers), skipping and
            counting those that are not. Costs two small reads a frame.
        videos: optional iterable of video names to keep.

    Returns:
        A ``FrameIndex``.

    Raises:
        DataError: a missing root or split, or a malformed annotation file (naming file and line).
    """
    root = Path(root)
    split = resolve_split(split)
    if not root.is_dir():
        raise DataError(f"{root}: Aff-Wild2 root not found (expected annotations/ and cropped_aligned/ in it)")
    annotations = root / "annotations"
    crops = root / "cropped_aligned"
    if not annotations.is_dir():
        raise DataError(f"{annotations}: no annotations folder under the Aff-Wild2 root")
    if not crops.is_dir():
        raise DataError(f"{crops}: no cropped_aligned folder under the Aff-Wild2 root")
    unknown = set(tasks) - set(TASK_DIRS)
    if unknown or not tasks:
        raise DataError(f"unknown task(s) {sorted(unknown)}; choose from {sorted(TASK_DIRS)}")

    per_task = {}
    for task in tasks:
        folder = annotations / TASK_DIRS[task] / split
        if folder.is_dir():
            per_task[task] = {p.stem: p for p in sorted(folder.glob("*.txt"))}
    if not per_task:
        present = sorted({p.name for t in TASK_DIRS.values() for p in (annotations / t).glob("*")
                          if p.is_dir()})
        raise DataError(f"{annotations}: split {split!r} not found in any of "
                        f"{', '.join(TASK_DIRS[t] for t in tasks)} (splits present: {', '.join(present) or 'none'})")

    names = sorted(set().union(*[set(v) for v in per_task.values()]))
    if videos is not None:
        wanted = set(videos)
        names = [n for n in names if n in wanted]

    paths, video_of, frame_no, va, au, expr, skipped = [], [], [], [], [], [], SkippedFrames()
    stats = {"videos": 0, "annotated_frames": 0, "frames": 0, "missing_crops": 0, "corrupt_crops": 0}
    for video in names:
        parsed = {task: parse_annotation_file(files[video], task) for task, files in per_task.items()
                  if video in files}
        length = max(len(v) for v in parsed.values())
        stats["videos"] += 1
        stats["annotated_frames"] += length
        folder = crop_folder(root, video)
        # Frame numbers with a crop file, from the folder's names: nothing is made per frame without one.
        present = np.zeros(length + 1, bool)
        for name in (p.name for p in folder.iterdir()) if folder.is_dir() else ():
            stem = name[:-4]
            if name.endswith(".jpg") and stem.isdigit() and int(stem) <= length and crop_name(int(stem)) == name:
                present[int(stem)] = True
        present = present[1:]
        missing = np.flatnonzero(~present) + 1
        stats["missing_crops"] += len(missing)
        skipped.add_frames(folder, missing, "no crop")
        keep = []
        for frame in np.flatnonzero(present) + 1:
            path = folder / crop_name(frame)
            if screen_image(path, True, check_images, stats, skipped, "crops"):
                keep.append(frame)
                paths.append(str(path))
        keep = np.asarray(keep, np.int64)
        video_of.extend([video] * len(keep))
        frame_no.append(keep)
        for out, task, shape, fill, dtype in ((va, "va", (2,), UNANNOTATED_VA, np.float32),
                                              (au, "au", (len(AU_NAMES),), UNANNOTATED_AU, np.float32),
                                              (expr, "expr", (), UNANNOTATED_EXPR, np.int32)):
            out.append(_column(parsed.get(task), keep, shape, fill, dtype))
    stats["frames"] = len(paths)

    def joined(parts, shape, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,) + shape, dtype)

    return FrameIndex(paths, video_of, joined(frame_no, (), np.int64), joined(va, (2,), np.float32),
                      joined(au, (len(AU_NAMES),), np.float32), joined(expr, (), np.int32), stats, skipped)


class SkippedFrames(collections.abc.Sequence):
    """``FrameIndex.skipped`` of an Aff-Wild2 index: the ``(path, reason)`` of every annotated frame left out,
    the frames without a crop held as one array of frame numbers per video (a video annotated for millions of
    frames without crops costs 8 bytes a frame, not a path and a tuple). Reads like a list; ``append`` adds
    one ``(path, reason)``."""

    def __init__(self):
        self._parts = []  # (folder, frame numbers, reason) or (None, [(path, reason)], None)
        self._length = 0

    def add_frames(self, folder, frames, reason):
        if len(frames):
            self._parts.append((folder, np.asarray(frames, np.int64), reason))
            self._length += len(frames)

    def append(self, item):
        if not self._parts or self._parts[-1][0] is not None:
            self._parts.append((None, [], None))
        self._parts[-1][1].append(item)
        self._length += 1

    def __len__(self):
        return self._length

    def __iter__(self):
        for folder, items, reason in self._parts:
            if folder is None:
                yield from items
            else:
                for frame in items:
                    yield str(folder / crop_name(int(frame))), reason

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError("SkippedFrames index out of range")
        for folder, items, reason in self._parts:
            if i < len(items):
                return items[i] if folder is None else (str(folder / crop_name(int(items[i]))), reason)
            i -= len(items)

    def __eq__(self, other):
        return isinstance(other, collections.abc.Sequence) and list(self) == list(other)

    def __repr__(self):
        return f"SkippedFrames({len(self)} frames)"


def _column(values, frames, shape, fill, dtype):
    """A task's values at the 1-based ``frames``, the unannotated code where its file ends before them."""
    out = np.full((len(frames),) + shape, fill, dtype)
    if values is not None:
        inside = frames <= len(values)
        out[inside] = values[frames[inside] - 1]
    return out
