"""MediaPipe Face Landmarker (Apache-2.0) on small face crops: 52 blendshapes and a few landmark distances.

The bundle (``face_landmarker.task``: face detector, 478-point landmarks, blendshapes) is a file the user
downloads from Google's MediaPipe Face Landmarker page; this code takes its path, checks its sha256 and never
downloads anything. MediaPipe is the optional extra ``pip install keras-mtanet[teacher]``.

FER+ faces are 48x48 and fill the frame, too small and too tight for the face detector: each image is upscaled
``UPSCALE`` times (bicubic) and padded with mid grey by ``PAD`` of the upscaled side on every side, so the face
takes the middle half of a 384 px image. Share of FER+ valid faces found (3,574 images, one try): upscaled x4
without padding 89.6 %, edge-replicated padding 0.25 92.6 %, grey padding 0.25 96.8 %, 0.5 96.9 % (x2: 96.9 %),
1.0 95.4 %. A face missed that way gets a second try on the contrast-equalised (CLAHE) image, which brings
valid to 97.3 %. About 11 ms an image on one CPU core.
"""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from keras_mtanet.errors import DataError
from keras_mtanet.inference import native_logs

BUNDLE_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
BUNDLE_PAGE = "https://ai.google.dev/edge/mediapipe/solutions/vision/face_landmarker"
UPSCALE = 4
PAD = 0.5
PAD_VALUE = 128
MIN_CONFIDENCE = 0.5

# MediaPipe's blendshape categories, in the order the model outputs them (ARKit names).
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight")
# Landmark measurements in an eye-aligned frame: origin between the outer eye corners (33, 263), x along them,
# y down the face, unit the corner distance, so they ignore face size and in-plane rotation. Heights are
# positive upwards. lip_gap: inner upper to inner lower lip (13-14); eye_open: upper to lower lid (159-145,
# 386-374); brow_inner, brow_outer: height of the brow's inner (55, 285) / outer (46, 276) end above the eye
# corner below it (133, 362 / 33, 263); brow_gap: distance between the inner brow ends; lower_lid: height of
# the lower lids (145, 374) above the line of the eye corners; corner_drop: how far the lip corners (61, 291)
# sit below the middle of the lips (13, 14).
GEOMETRY_NAMES = ("lip_gap", "eye_open", "brow_inner", "brow_outer", "brow_gap", "lower_lid", "corner_drop")


def geometry(points):
    """``GEOMETRY_NAMES`` values from (478, 2+) normalised landmark coordinates of a square image."""
    p = np.asarray(points, np.float64)[:, :2]
    left, right = p[33], p[263]
    axis = right - left
    scale = max(float(np.hypot(*axis)), 1e-9)
    c, s = axis / scale
    q = p - (left + right) / 2
    x = (q[:, 0] * c + q[:, 1] * s) / scale
    y = (q[:, 1] * c - q[:, 0] * s) / scale  # down the face

    def dist(a, b):
        return float(np.hypot(x[a] - x[b], y[a] - y[b]))

    corners_y = (y[33] + y[263] + y[133] + y[362]) / 4
    return np.asarray([
        dist(13, 14),
        (dist(159, 145) + dist(386, 374)) / 2,
        ((y[133] + y[362]) - (y[55] + y[285])) / 2,
        ((y[33] + y[263]) - (y[46] + y[276])) / 2,
        dist(55, 285),
        corners_y - (y[145] + y[374]) / 2,
        (y[61] + y[291]) / 2 - (y[13] + y[14]) / 2,
    ], np.float32)


@dataclasses.dataclass
class Observation:
    """What the landmarker saw in one image: ``found``; ``blendshapes`` (52,) and ``geometry`` (7,) float32,
    NaN when no face was found; ``attempt``: which preparation found it (0 plain, 1 equalised, -1 none)."""
    found: bool
    blendshapes: np.ndarray
    geometry: np.ndarray
    attempt: int = -1

    def features(self):
        """``{name: value}`` over the blendshapes and the geometry."""
        return dict(zip(BLENDSHAPE_NAMES + GEOMETRY_NAMES, np.concatenate([self.blendshapes, self.geometry])))


MAX_BUNDLE_BYTES = 64 << 20  # the bundle is 3.6 MB


def check_bundle(path):
    """The bundle's bytes after checking its sha256 against ``BUNDLE_SHA256``.

    Raises:
        DataError: the file is missing, unreadable or not the expected bundle.
    """
    path = Path(path)
    try:
        if path.exists() and (not path.is_file() or path.stat().st_size > MAX_BUNDLE_BYTES):  # /dev/zero...
            raise DataError(f"{path}: not a Face Landmarker bundle (a regular file of at most "
                            f"{MAX_BUNDLE_BYTES >> 20} MB); download face_landmarker.task from {BUNDLE_PAGE}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: Face Landmarker bundle not found; download face_landmarker.task from "
                        f"{BUNDLE_PAGE}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the Face Landmarker bundle ({error.strerror or error})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != BUNDLE_SHA256:
        raise DataError(f"{path}: sha256 {digest} is not the Face Landmarker bundle this teacher is calibrated for "
                        f"({BUNDLE_SHA256}); download face_landmarker.task from {BUNDLE_PAGE}")
    return data


def prepare(gray, upscale=UPSCALE, pad=PAD, equalize=False):
    """A small grey face (H, W) uint8 as the RGB uint8 image the landmarker gets: upscaled, padded, optionally
    contrast-equalised (CLAHE) first."""
    import cv2

    gray = np.asarray(gray, np.uint8)
    if equalize:
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(gray)
    h, w = gray.shape[:2]
    big = cv2.resize(gray, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC)
    border = int(round(pad * max(h, w) * upscale))
    if border:
        big = cv2.copyMakeBorder(big, border, border, border, border, cv2.BORDER_CONSTANT, value=PAD_VALUE)
    return np.ascontiguousarray(np.repeat(big[:, :, None], 3, axis=2))


def read_gray(path):
    """An image file as grey uint8, or ``None`` when it cannot be decoded."""
    import cv2

    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    return image


class FaceLandmarker:
    """MediaPipe's Face Landmarker with blendshapes on small grey face crops.

    Args:
        model_path: ``face_landmarker.task`` (sha256 ``BUNDLE_SHA256``).
        upscale, pad: the preparation (see the module docstring).
        retry_equalized: give a missed face a second try on the contrast-equalised image.
        min_confidence: the landmarker's face detection and presence thresholds.
        quiet: drop MediaPipe's native start-up lines (``native_logs.native_logs_dropped``), as ``keras-mtanet teach``
            does without ``--verbose``.

    Example:
        >>> with FaceLandmarker("face_landmarker.task") as landmarker:  # doctest: +SKIP
        ...     seen = landmarker.observe(read_gray("fer0032220.png"))
        >>> seen.found, seen.features()["mouthSmileLeft"]  # doctest: +SKIP
    """

    def __init__(self, model_path, upscale=UPSCALE, pad=PAD, retry_equalized=True, min_confidence=MIN_CONFIDENCE,
                 quiet=False):
        bundle = check_bundle(model_path)
        # quiet: MediaPipe's native start-up lines (absl warnings, XNNPACK notice) dropped, as the command does
        with native_logs.quiet_unless(not quiet):
            self._start(bundle, upscale, pad, retry_equalized, min_confidence)

    def _start(self, bundle, upscale, pad, retry_equalized, min_confidence):
        try:
            import mediapipe
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            from keras_mtanet.errors import DependencyError

            raise DependencyError("the AU teacher needs MediaPipe: pip install 'keras-mtanet[teacher]'") from None
        self._mp = mediapipe
        self.upscale, self.pad, self.retry_equalized = int(upscale), float(pad), bool(retry_equalized)
        self.min_confidence = float(min_confidence)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=bundle), output_face_blendshapes=True, num_faces=1,
            min_face_detection_confidence=self.min_confidence, min_face_presence_confidence=self.min_confidence)
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def settings(self):
        """What determines the outputs (recorded beside a label cache)."""
        return {"bundle_sha256": BUNDLE_SHA256, "mediapipe": getattr(self._mp, "__version__", "unknown"),
                "upscale": self.upscale, "pad": self.pad, "pad_value": PAD_VALUE,
                "retry_equalized": self.retry_equalized, "min_confidence": self.min_confidence}

    def _detect(self, rgb):
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        result = self._landmarker.detect(image)
        if not result.face_landmarks or not result.face_blendshapes:
            return None
        scores = {c.category_name: c.score for c in result.face_blendshapes[0]}
        missing = [n for n in BLENDSHAPE_NAMES if n not in scores]
        if missing:
            raise DataError(f"the Face Landmarker bundle gave no {', '.join(missing[:3])} blendshape(s); it is not "
                            "the bundle this teacher expects")
        blend = np.asarray([scores[n] for n in BLENDSHAPE_NAMES], np.float32)
        return blend, geometry([(p.x, p.y) for p in result.face_landmarks[0]])

    def observe(self, gray):
        """An ``Observation`` of one grey face image (H, W) uint8."""
        attempts = (False, True) if self.retry_equalized else (False,)
        for attempt, equalize in enumerate(attempts):
            seen = self._detect(prepare(gray, self.upscale, self.pad, equalize))
            if seen is not None:
                return Observation(True, seen[0], seen[1], attempt)
        return Observation(False, np.full(len(BLENDSHAPE_NAMES), np.nan, np.float32),
                           np.full(len(GEOMETRY_NAMES), np.nan, np.float32), -1)

    def close(self):
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
