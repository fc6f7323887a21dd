"""Face detectors on real faces: detection rate, box IoU against the true box, false detections and ms per
frame for every detector in ``detection.DETECTORS``, measured in the same run.

Two sets of real photographs:
- scikit-image's astronaut() portrait (512 x 512; face box hand-read), detected ``--repeats`` times;
- FER+ test faces (``../shared/data/ferplus``, 48 x 48 grey) upscaled to 96-192 px, rotated by up to 30
  degrees and pasted, 1-4 per frame, at random places into 640 x 480 frames whose background is another
  photograph (scikit-image's coffee, rocket, hubble_deep_field, lightly blurred). The true box of a pasted
  face is its upright square (side = pasted size, same centre); a face counts as found when a detected box
  overlaps it with IoU >= ``FOUND_IOU``, each detected box matching one face at most.

Prints a markdown table for the README (detector, found %, mean IoU of found faces, false detections per
frame, ms per frame) and which detector balances rate and speed best.

    nice -n 10 python benchmarks/detectors.py [--quick] [--frames 120] [--min-face 40]
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
from skimage import data as skdata

from keras_mtanet.inference import detection

FERPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"
ASTRONAUT_BOX = (182, 64, 83, 107)  # hand-read, as in tests/conftest.py
FOUND_IOU = 0.3
FRAME = (480, 640)


def backgrounds():
    """Face-free photographs filling a 640 x 480 frame, blurred a little so the pasted faces are the sharpest
    thing in them (as a focused face in front of a background)."""
    out = []
    for name in ("coffee", "rocket", "hubble_deep_field"):
        photo = getattr(skdata, name)()
        photo = cv2.resize(photo, FRAME[::-1], interpolation=cv2.INTER_AREA)
        out.append(cv2.GaussianBlur(photo, (0, 0), 2.0))
    return out


def paste(frame, face, size, angle, centre):
    """Paste grey ``face`` scaled to ``size`` px and rotated by ``angle`` degrees (anticlockwise on screen)
    with its centre at ``centre``; returns the upright true box (x, y, w, h)."""
    rgb = np.repeat(cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=-1)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    matrix[:, 2] += np.asarray(centre) - size / 2
    cv2.warpAffine(rgb, matrix, frame.shape[1::-1], dst=frame, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return np.array([centre[0] - size / 2, centre[1] - size / 2, size, size], np.float64)


def pasted_frames(faces, n_frames, seed=0, sizes=(96, 192), max_angle=30.0, per_frame=(1, 4)):
    """``n_frames`` 640 x 480 frames with 1-4 non-overlapping pasted faces each; returns (frames, boxes)."""
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    frames, boxes, k = [], [], 0
    for i in range(n_frames):
        frame = bgs[i % len(bgs)].copy()
        placed = []
        for _ in range(rng.integers(per_frame[0], per_frame[1] + 1)):
            size = int(rng.integers(sizes[0], sizes[1] + 1))
            # The rotated square's corners reach size / sqrt(2) from the centre: keep them in the frame.
            reach = int(np.ceil(size / np.sqrt(2)))
            for _ in range(50):
                centre = (int(rng.integers(reach, FRAME[1] - reach)), int(rng.integers(reach, FRAME[0] - reach)))
                if all(np.hypot(centre[0] - c[0], centre[1] - c[1]) > reach + r for c, r, _ in placed):
                    break
            else:
                continue
            placed.append((centre, reach, size))
        frame_boxes = []
        for centre, _, size in placed:
            frame_boxes.append(paste(frame, faces[k % len(faces)], size, rng.uniform(-max_angle, max_angle), centre))
            k += 1
        frames.append(frame)
        boxes.append(frame_boxes)
    return frames, boxes


def read_fer_faces(count, seed=0):
    names = sorted((FERPLUS / "FER2013Test").glob("*.png"))
    chosen = np.random.default_rng(seed).choice(len(names), size=min(count, len(names)), replace=False)
    return [cv2.imread(str(names[i]), cv2.IMREAD_GRAYSCALE) for i in chosen]


def iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def match(found, truth):
    """Greedy one-to-one matching by IoU: (IoUs of found true faces, number of unmatched detections)."""
    pairs = sorted(((iou(f.box, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, used_t, ious = set(), set(), []
    for value, i, j in pairs:
        if value >= FOUND_IOU and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            ious.append(value)
    return ious, len(found) - len(used_f)


def evaluate(detector, frames, boxes):
    """(found share, mean IoU of found faces, false detections per frame, wall ms per frame, CPU ms per
    frame: the process's CPU time, all threads, which stays near the true cost on a busy machine)."""
    detector.detect(frames[:1])  # warm-up: graph building, first-call allocations
    ious, false, elapsed, cpu = [], 0, 0.0, 0.0
    for frame, truth in zip(frames, boxes):
        start, cpu_start = time.perf_counter(), time.process_time()
        found = detector.detect([frame])[0]
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        frame_ious, frame_false = match(found, truth)
        ious += frame_ious
        false += frame_false
    total = sum(len(t) for t in boxes)
    return (len(ious) / max(1, total), float(np.mean(ious)) if ious else float("nan"), false / len(frames),
            1000 * elapsed / len(frames), 1000 * cpu / len(frames))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 pasted frames, 10 astronaut repeats")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--min-face", type=int, default=40)
    parser.add_argument("--detectors", nargs="+", default=list(detection.DETECTORS), choices=detection.DETECTORS)
    args = parser.parse_args()
    n_frames, repeats = (40, 10) if args.quick else (args.frames, args.repeats)

    sets = {"astronaut": ([skdata.astronaut()] * repeats, [[np.array(ASTRONAUT_BOX, np.float64)]] * repeats)}
    if FERPLUS.is_dir():
        sets["FER+ pasted"] = pasted_frames(read_fer_faces(4 * n_frames), n_frames)
    else:
        print(f"FER+ is not at {FERPLUS}: astronaut only")
    n_faces = sum(len(b) for b in sets.get("FER+ pasted", ([], []))[1])
    print(f"{os.cpu_count()} CPU cores (shared with other work: timings are upper bounds); min face "
          f"{args.min_face} px; FER+ set: {n_frames} frames of 640x480, {n_faces} faces of 96-192 px rotated "
          f"up to 30 degrees; found = IoU >= {FOUND_IOU}\n")
    rows = {}
    for name in args.detectors:
        detector = detection.make_detector(name, min_face_size=args.min_face)
        rows[name] = {set_name: evaluate(detector, *frames_boxes) for set_name, frames_boxes in sets.items()}

    header = "| detector | " + " | ".join(f"{s}: found | {s}: IoU | {s}: false/frame | {s}: ms/frame (CPU)"
                                          for s in sets) + " |"
    print(header)
    print("|" + "---|" * (1 + 4 * len(sets)))
    for name, results in rows.items():
        cells = []
        for found, mean_iou, false, ms, cpu_ms in results.values():
            cells += [f"{100 * found:.0f}%", f"{mean_iou:.2f}", f"{false:.2f}", f"{ms:.1f} ({cpu_ms:.1f})"]
        print(f"| {name} | " + " | ".join(cells) + " |")

    # Balance: found share per CPU millisecond, among detectors with at most 0.1 false detections per frame
    # (a face that is not there costs a user more than a missed one: it becomes a row of made-up numbers).
    key = "FER+ pasted" if "FER+ pasted" in sets else "astronaut"
    clean = {name: r[key] for name, r in rows.items() if r[key][2] <= 0.1} or {n: r[key] for n, r in rows.items()}
    best = max(clean, key=lambda name: clean[name][0] / clean[name][4])
    print(f"\nbest balance of rate and speed on {key} (found share per CPU ms, at most 0.1 false/frame): {best} "
          f"(DEFAULT_DETECTOR is {detection.DEFAULT_DETECTOR!r})")

if __name__ == "__main__":
    main()
