"""Measure the face framing of FER+ crops as a five-point alignment template.

FER2013 faces were cropped by their own (unpublished) detector. A model trained on them sees real photos the
way it saw its training crops only if ``keras-mtanet predict`` aligns detected faces to that same framing.
This script finds it: each FER+ face is upscaled (bicubic, ``--scale``) and pasted into a larger frame of
background noise, MTCNN (the package's default detector) runs on the frame, and the five landmarks it finds
are mapped back into the 48 px crop, in unit coordinates. The template is the per-point median over the faces
found, made mirror-symmetric (training flips faces); its spread (median absolute deviation) and the share of
faces found are printed.

    python benchmarks/ferplus_template.py [--root ../shared/data/ferplus] [--split train] [--count 1000]

The printed ``alignment_template`` goes into a FER+ preset's metadata
(``keras_mtanet/presets/registry/<name>/train.json`` -> ``metadata.json``), from where ``Predictor`` reads it.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from keras_mtanet.data import ferplus  # noqa: E402
from keras_mtanet.inference.alignment import TEMPLATE  # noqa: E402
from keras_mtanet.inference.detection import MTCNNDetector  # noqa: E402


def paste(face, scale, frame_size, rng):
    """``face`` (48 x 48 grey) upscaled by ``scale`` at a random place in a noisy RGB frame; returns the frame
    and the face's top-left corner."""
    big = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    side = big.shape[0]
    frame = rng.normal(127, 30, (frame_size, frame_size)).clip(0, 255).astype(np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 3)
    x, y = rng.integers(0, frame_size - side, 2)
    frame[y:y + side, x:x + side] = big
    return np.repeat(frame[..., None], 3, axis=2), np.array([x, y], np.float64)


def measure(root, split, count, scale, seed=0, batch=8):
    index = ferplus.read_index(root, split, check_images=False)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(index), size=min(count, len(index)), replace=False)
    detector = MTCNNDetector(min_face_size=40)
    frame_size = int(48 * scale * 1.75)
    points, found, started = [], 0, time.perf_counter()
    for lo in range(0, len(chosen), batch):
        frames, corners = [], []
        for i in chosen[lo:lo + batch]:
            face = cv2.imread(str(index.paths[i]), cv2.IMREAD_GRAYSCALE)
            frame, corner = paste(face, scale, frame_size, rng)
            frames.append(frame)
            corners.append(corner)
        for faces, corner in zip(detector.detect(frames), corners):
            if not faces:
                continue
            best = max(faces, key=lambda f: f.box[2] * f.box[3])
            found += 1
            points.append((best.landmarks - corner) / (48.0 * scale))
    points = np.stack(points)
    template = np.median(points, axis=0)
    spread = np.median(np.abs(points - template), axis=0)
    return template, spread, found, len(chosen), time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                       "ferplus"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=4.0)
    args = parser.parse_args()
    template, spread, found, total, seconds = measure(args.root, args.split, args.count, args.scale)
    print(f"FER+ {args.split}: MTCNN found {found} of {total} faces ({found / total:.1%}) pasted {args.scale:g}x "
          f"into noise frames, {seconds:.0f} s")
    print("landmark (unit coords in the 48 px crop)   median x, y    MAD x, y    package template x, y")
    names = ("left eye", "right eye", "nose tip", "left mouth", "right mouth")
    for name, t, s, p in zip(names, template, spread, TEMPLATE):
        print(f"  {name:<12} {t[0]:.4f}, {t[1]:.4f}    {s[0]:.4f}, {s[1]:.4f}    {p[0]:.4f}, {p[1]:.4f}")
    print("median template: " + json.dumps([[round(float(v), 4) for v in row] for row in template]))
    # Training flips faces left-right, so the template a preset uses is made mirror-symmetric: each point
    # averaged with its mirror image (x -> 1 - x, left and right swapped).
    mirrored = template[[1, 0, 2, 4, 3]] * [-1, 1] + [1, 0]
    symmetric = (template + mirrored) / 2
    print("alignment_template (mirror-symmetric): " + json.dumps([[round(float(v), 4) for v in row]
                                                                   for row in symmetric]))


if __name__ == "__main__":
    main()
