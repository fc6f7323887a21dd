"""What ``keras-mtanet predict`` reads: image files, folders, globs, video files and webcams.

``expand_inputs`` turns command-line inputs into ``Source`` objects (one per image, video or webcam) and a
list of one-line problems for the inputs that name nothing usable. ``Source.frames()`` yields ``Frame``
objects; a video frame that fails to decode is skipped and counted in ``Source.corrupt_frames``; a video file
that ends before the frame count in its header is marked (``Source.truncated_at``) with every missing frame
counted.

Memory is bounded per input: an image's size is read from its header before it is decoded, and decoded
images are kept at most ``MAX_IMAGE_PIXELS``. A larger JPEG is decoded at 1/2, 1/4 or 1/8 size (libjpeg
scales while decoding, so the full image is never in memory) and its face boxes are reported in the original
image's pixels (``Frame.scale``); a larger image of another format, a JPEG still too large at 1/8 size, or a
video with larger frames is refused with a one-line ``DataError``.

A JPEG that libjpeg decodes only in part (a truncated file with an end marker appended: libjpeg fills the rest
with grey and prints an anonymous warning) or whose header claims more pixels than its bytes can hold is refused
with a ``DataError`` naming it, so it is counted as a failed input rather than predicted as garbage.
"""

import dataclasses
import glob
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np

from keras_mtanet.data.images import JPEG_SOI, check_image_file
from keras_mtanet.errors import DataError
from keras_mtanet.files import require_regular_file, shortened, special_kind

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
# A video that yields this many undecodable frames in a row before the end its header announces is truncated.
MAX_CONSECUTIVE_FAILURES = 25
# The most pixels of a decoded image or video frame: 40 megapixels is 120 MB as RGB, and bounds the detector's
# working memory too (see the module docstring for what happens above it).
MAX_IMAGE_PIXELS = 40_000_000
# The largest image file read: an image is decoded from the whole file in memory, so a larger one (a photo padded to
# gigabytes) is refused before any of it is read. A 40-megapixel image is at most 160 MB even uncompressed (RGBA).
MAX_IMAGE_FILE_BYTES = 256 * 2 ** 20
# OpenCV takes a webcam index as a C int.
MAX_WEBCAM_INDEX = 2 ** 31 - 1
_REDUCED_JPEG = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclasses.dataclass
class Frame:
    """One decoded frame: ``image`` is H x W x 3 uint8 RGB; ``timestamp`` is seconds (None for images);
    ``scale`` is original pixels per decoded pixel (above 1 for a large JPEG decoded reduced)."""
    source: str
    index: int
    timestamp: float | None
    image: np.ndarray
    scale: float = 1.0


@dataclasses.dataclass
class Source:
    """An image file, a video file, a webcam (``location`` is its index) or an in-memory image (``"array"``:
    ``location`` is an H x W x 3 uint8 RGB array)."""
    name: str
    kind: str
    location: object
    fps: float | None = None
    corrupt_frames: int = 0
    frame_count: int | None = None   # a video file's frame count from its header
    truncated_at: int | None = None  # set when the file ends before that count: the first missing frame

    def truncation_message(self):
        """One line naming a truncated video and its missing frames, or None."""
        if self.truncated_at is None:
            return None
        return (f"{self.name}: truncated video: frames {self.truncated_at} to {self.frame_count - 1} of the "
                f"{self.frame_count} in its header could not be read")

    def frames(self, stride=1, max_frames=None):
        """Decoded frames; every ``stride``-th frame, at most ``max_frames``. Raises ``DataError`` when the
        source cannot be read at all."""
        if self.kind == "image":
            image, factor = _decode_image(self.location)
            yield Frame(self.name, 0, None, image, float(factor))
            return
        if self.kind == "array":
            yield Frame(self.name, 0, None, as_rgb(self.location, self.name))
            return
        yield from self._video_frames(max(1, int(stride)), max_frames)

    def _video_frames(self, stride, max_frames):
        if self.kind == "video":
            require_regular_file(self.location, "video")  # OpenCV would wait on a FIFO forever
        capture = cv2.VideoCapture(self.location)
        try:
            if not capture.isOpened():
                what = "webcam" if self.kind == "webcam" else "video"
                raise DataError(f"{self.name}: cannot open as a {what} (unsupported, corrupt or missing)")
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and fps > 0 else None
            width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{self.name}: frames of {width:.0f} x {height:.0f} pixels are over the "
                                f"{MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit")
            # The container's frame count (0 for webcams and streams) tells a bad frame from the end.
            total = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
            self.frame_count = total or None
            index, produced, failures = 0, 0, 0
            while max_frames is None or produced < max_frames:
                wanted = index % stride == 0
                ok = capture.grab()
                bgr = capture.retrieve()[1] if ok and wanted else None
                if not ok or (wanted and bgr is None):
                    if index >= total:
                        break
                    if failures + 1 >= MAX_CONSECUTIVE_FAILURES:
                        # The file ends early: every frame from this run of failures to the end is missing.
                        self.corrupt_frames += total - index
                        self.truncated_at = index - failures
                        break
                    self.corrupt_frames += 1
                    failures += 1
                    index += 1
                    continue
                failures = 0
                if bgr is not None:
                    timestamp = index / self.fps if self.fps else None
                    yield Frame(self.name, index, timestamp, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    produced += 1
                index += 1
            if produced == 0:
                of = f" (of the {total} in its header)" if total else ""
                raise DataError(f"{self.name}: no frame could be decoded{of}")
        finally:
            capture.release()


def read_image(path):
    """An image file as H x W x 3 uint8 RGB; ``DataError`` naming the file when it is empty, truncated, not
    an image or too large (a JPEG over ``MAX_IMAGE_PIXELS`` comes back reduced, see the module docstring)."""
    return _decode_image(path)[0]


def image_header(path):
    """``(format, width, height)`` from an image file's header, without decoding its pixels (Pillow reads
    headers lazily). ``DataError`` when the file is not an image Pillow can identify."""
    from PIL import Image, JpegImagePlugin

    try:
        with open(path, "rb") as f:
            if f.read(2) == JPEG_SOI:
                f.seek(0)
                # The JPEG parser itself: Image.open's decompression-bomb check would refuse exactly the large
                # images this size is read for.
                with JpegImagePlugin.JpegImageFile(f) as image:
                    return "JPEG", *image.size
            f.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as image:
                    return image.format, *image.size
    except Image.DecompressionBombError:
        raise DataError(f"{path}: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, far over the "
                        f"{MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit (only JPEGs are decoded reduced)") from None
    except OSError as error:
        if error.strerror:  # a file system error rather than an unknown format
            raise DataError(f"{path}: unreadable ({error.strerror})") from None
        raise DataError(f"{path}: not a readable image") from None
    except (SyntaxError, ValueError, EOFError):
        raise DataError(f"{path}: not a readable image") from None


def _decode_image(path):
    """``(H x W x 3 uint8 RGB, reduction factor)``: the image decoded at 1/factor size, factor 1, 2, 4 or 8 the
    smallest that keeps it within ``MAX_IMAGE_PIXELS``."""
    path = str(path)
    require_regular_file(path, "image")
    suffix = Path(path).suffix.lower()
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    if size > MAX_IMAGE_FILE_BYTES:
        raise DataError(f"{path}: {size / 2 ** 20:,.0f} MiB, over the {MAX_IMAGE_FILE_BYTES // 2 ** 20} MiB limit for "
                        "an image file; refused unread")
    if suffix in {".jpg", ".jpeg", ".png"}:
        problem = check_image_file(path)
        if problem:
            raise DataError(f"{path}: {problem}")
    kind, width, height = image_header(path)
    factor = 1
    while kind == "JPEG" and factor < 8 and _ceil(width, factor) * _ceil(height, factor) > MAX_IMAGE_PIXELS:
        factor *= 2
    if _ceil(width, factor) * _ceil(height, factor) > MAX_IMAGE_PIXELS:
        how = "even at 1/8 size" if kind == "JPEG" else "(only JPEGs are decoded reduced)"
        raise DataError(f"{path}: {width} x {height} pixels is over the {MAX_IMAGE_PIXELS / 1e6:g}-megapixel "
                        f"limit {how}")
    if kind == "JPEG":
        _check_jpeg_data(path, width, height)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    flags = _REDUCED_JPEG[factor] if kind == "JPEG" else cv2.IMREAD_COLOR
    if not data.size:
        bgr = None
    elif kind == "JPEG":
        bgr, warnings_seen = _imdecode_watched(data, flags)
        if bgr is not None and warnings_seen:  # libjpeg filled what it could not decode with grey
            raise DataError(f"{path}: corrupt JPEG (libjpeg: {warnings_seen[0]})")
    else:
        bgr = cv2.imdecode(data, flags)
    del data
    if bgr is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr), factor


# libjpeg's warnings that mean part of the image was not decoded (it goes on, filling the rest with grey);
# "N extraneous bytes before marker" is left out: such files decode whole.
_LIBJPEG_CORRUPT = re.compile(r"(Corrupt JPEG data: (?!\d+ extraneous bytes)|Premature end of JPEG file)")
_DECODE_LOCK = threading.Lock()  # file descriptor 2 is the process's: one watched decode at a time


def _imdecode_watched(data, flags):
    """``cv2.imdecode`` with file descriptor 2 captured, where libjpeg prints its warnings (no API reports them):
    ``(image or None, [libjpeg's corruption warnings])``. Anything else written meanwhile is written back."""
    with _DECODE_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable stderr: decode unwatched
            return cv2.imdecode(data, flags), []
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                bgr = cv2.imdecode(data, flags)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
    corrupt = [line.strip() for line in lines if _LIBJPEG_CORRUPT.match(line)]
    others = [line for line in lines if not _LIBJPEG_CORRUPT.match(line) and "extraneous bytes" not in line]
    if others:
        sys.stderr.write("".join(others))
        sys.stderr.flush()
    return bgr, corrupt


def _check_jpeg_data(path, width, height):
    """``DataError`` when a Huffman-coded JPEG (baseline, extended or progressive) is smaller than the least its
    header's size needs: every 8 x 8 block of its first component costs at least one bit. A header claiming
    30000 x 30000 pixels on a 100 KB file is refused before anything is decoded."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            size = os.fstat(f.fileno()).st_size
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    at = 2
    while at + 4 <= len(head) and head[at] == 0xFF:
        marker, length = head[at + 1], int.from_bytes(head[at + 2:at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            blocks = _ceil(width, 8) * _ceil(height, 8)
            if size * 8 < blocks:
                raise DataError(f"{path}: corrupt JPEG: its header claims {width} x {height} pixels, more than "
                                f"its {size:,} bytes can hold")
            return
        if marker == 0xDA or length < 2:  # the scan, or a broken segment: no frame header to go by
            return
        at += 2 + length


def _ceil(size, factor):
    return -(-int(size) // factor)


def as_rgb(image, name="image"):
    """An array as H x W x 3 uint8 RGB (a gray image is repeated; float input must already be 0-255)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise DataError(f"{name}: expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        if image.dtype.kind not in "biuf":
            raise DataError(f"{name}: expected numbers for pixels, got dtype {image.dtype}")
        bad = int(np.count_nonzero(~np.isfinite(image))) if image.dtype.kind == "f" else 0
        if bad:
            raise DataError(f"{name}: {bad} pixel value(s) are NaN or infinite; expected 0-255")
        image = np.clip(np.rint(image.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def webcam_source(index):
    """The webcam with this index (an int, or its decimal text)."""
    return Source(f"webcam:{index}", "webcam", int(index))


def _source_for(path):
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return Source(str(path), "video", str(path))
    return Source(str(path), "image", str(path))


def _media_in(folder):
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)


def expand_inputs(inputs):
    """Command-line inputs -> ``(sources, problems)``.

    A file is an image unless its suffix is a video one; a folder contributes its images and videos
    (recursively, sorted); a pattern with ``*``, ``?`` or ``[`` is a glob; a whole number is a webcam index.
    ``problems`` holds a one-line message for each input that names nothing usable.
    """
    sources, problems = [], []
    for raw in inputs:
        text = os.fsdecode(raw) if isinstance(raw, (bytes, os.PathLike)) else str(raw)
        if not text:  # Path("") is the current folder: never read it unasked
            problems.append("'': empty input name; give an image, folder, glob, video or webcam index")
            continue
        if text.isdigit() and not os.path.exists(text):
            if int(text) > MAX_WEBCAM_INDEX:
                problems.append(f"{text}: no such file or folder, and too large for a webcam index "
                                f"(at most {MAX_WEBCAM_INDEX})")
            else:
                sources.append(webcam_source(text))
            continue
        path = Path(text).expanduser()
        try:
            path.is_dir()
        except OSError as error:  # a name too long for the file system
            problems.append(f"{shortened(text)}: name too long ({len(text)} "
                            f"characters; {error.strerror})")
            continue
        if path.is_dir():
            found = _media_in(path)
            if not found:
                problems.append(f"{text}: folder has no image or video files")
            sources.extend(_source_for(p) for p in found)
        elif path.is_file():
            sources.append(_source_for(path))
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
            files = [p for p in matches if p.is_file()]
            for p in matches:
                if p.is_dir():
                    files.extend(_media_in(p))
            if not files:
                problems.append(f"{text}: no file matches")
            sources.extend(_source_for(p) for p in files)
        elif os.path.lexists(path) and (kind := special_kind(path)):
            problems.append(f"{text}: is not a regular file ({kind}); give image or video files")
        else:
            problems.append(f"{text}: no such file or folder")
    return sources, problems
