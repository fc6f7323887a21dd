"""What ``keras-mtanet predict`` reads: image files, folders, globs, video files and webcams.

``expand_inputs`` turns command-line inputs into ``Source`` objects (one per image, video or webcam) and a
list of one-line problems for the inputs that name nothing usable. ``Source.frames()`` yields ``Frame``
objects; a video frame that fails to decode is skipped and counted in ``Source.corrupt_frames``.
"""

import dataclasses
import glob
import os
from pathlib import Path

import cv2
import numpy as np

from keras_mtanet.data.errors import DataError, check_image_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
# A video that yields this many undecodable frames in a row is treated as ended.
MAX_CONSECUTIVE_FAILURES = 25


@dataclasses.dataclass
class Frame:
    """One decoded frame: ``image`` is H x W x 3 uint8 RGB; ``timestamp`` is seconds (None for images)."""
    source: str
    index: int
    timestamp: float | None
    image: np.ndarray


@dataclasses.dataclass
class Source:
    """An image file, a video file, a webcam (``location`` is its index) or an in-memory image (``"array"``:
    ``location`` is an H x W x 3 uint8 RGB array)."""
    name: str
    kind: str
    location: object
    fps: float | None = None
    corrupt_frames: int = 0

    def frames(self, stride=1, max_frames=None):
        """Decoded frames; every ``stride``-th frame, at most ``max_frames``. Raises ``DataError`` when the
        source cannot be read at all."""
        if self.kind == "image":
            yield Frame(self.name, 0, None, read_image(self.location))
            return
        if self.kind == "array":
            yield Frame(self.name, 0, None, as_rgb(self.location, self.name))
            return
        yield from self._video_frames(max(1, int(stride)), max_frames)

    def _video_frames(self, stride, max_frames):
        capture = cv2.VideoCapture(self.location)
        try:
            if not capture.isOpened():
                what = "webcam" if self.kind == "webcam" else "video"
                raise DataError(f"{self.name}: cannot open as a {what} (unsupported, corrupt or missing)")
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and fps > 0 else None
            # The container's frame count (0 for webcams and streams) tells a bad frame from the end.
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            index, produced, failures = 0, 0, 0
            while max_frames is None or produced < max_frames:
                wanted = index % stride == 0
                ok = capture.grab()
                bgr = capture.retrieve()[1] if ok and wanted else None
                if not ok or (wanted and bgr is None):
                    if index >= total or failures + 1 >= MAX_CONSECUTIVE_FAILURES:
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
                raise DataError(f"{self.name}: no frame could be decoded")
        finally:
            capture.release()


def read_image(path):
    """An image file as H x W x 3 uint8 RGB; ``DataError`` naming the file when it is empty, truncated or not
    an image."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    if suffix in {".jpg", ".jpeg", ".png"}:
        problem = check_image_file(path)
        if problem:
            raise DataError(f"{path}: {problem}")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def as_rgb(image, name="image"):
    """An array as H x W x 3 uint8 RGB (a gray image is repeated; float input must already be 0-255)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise DataError(f"{name}: expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
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
        text = str(raw)
        if text.isdigit() and not os.path.exists(text):
            sources.append(webcam_source(text))
            continue
        path = Path(text).expanduser()
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
        else:
            problems.append(f"{text}: no such file or folder")
    return sources, problems
