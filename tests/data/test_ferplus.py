import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_mtanet import cli
from keras_mtanet.data import datasets, ferplus, tfrecord
from keras_mtanet.data.index import FrameIndex
from keras_mtanet.errors import DataError
from keras_mtanet.labels import EXPR_NAMES
from keras_mtanet.presets import checks
from keras_mtanet.teachers import cache

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "ferplus"
N, A, D, F, H, SA, SU = (EXPR_NAMES.index(n) for n in EXPR_NAMES)  # our class ids, for readable expectations


def grey_png(path, value):
    path.write_bytes(tf.io.encode_png(np.full((48, 48, 1), value, np.uint8)).numpy())


# name, votes (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF)
ROWS = [
    ("happy.png", (2, 6, 1, 0, 0, 0, 0, 0, 1, 0)),
    ("notface.png", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10)),
    ("gone.png", (9, 1, 0, 0, 0, 0, 0, 0, 0, 0)),
    ("twice.png", (0, 0, 0, 0, 7, 3, 0, 0, 0, 0)),
    ("twice.png", (0, 0, 0, 0, 7, 3, 0, 0, 0, 0)),
    ("contempt.png", (3, 0, 0, 0, 0, 0, 0, 5, 2, 0)),
    ("tie.png", (0, 0, 4, 4, 2, 0, 0, 0, 0, 0)),
    ("unknown.png", (4, 0, 0, 0, 0, 0, 0, 0, 6, 0)),
    ("half.png", (0, 0, 0, 0, 0, 0, 5, 0, 3, 2)),
    ("broken.png", (10, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
]


def write_split(root, folder="FER2013Train", rows=ROWS):
    split = root / folder
    split.mkdir(parents=True, exist_ok=True)
    for i, (name, _) in enumerate(rows):
        if name != "gone.png":
            grey_png(split / name, 20 * i)
    (split / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # no IEND: truncated
    with open(split / "label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        for name, votes in rows:
            writer.writerow([name, "(0, 0, 48, 48)", *votes])
    return split


@pytest.fixture
def ferplus_root(tmp_path):
    write_split(tmp_path)
    return tmp_path


def test_votes_become_distributions_and_majority_classes(ferplus_root):
    index = ferplus.read_index(ferplus_root, "train")
    names = [Path(p).name for p in index.paths]
    assert names == ["happy.png", "twice.png", "contempt.png", "tie.png", "half.png"]
    # Contempt, unknown and NF votes are dropped; the seven classes' votes are normalised (EXPR_NAMES order).
    expected = np.zeros((5, 7), np.float32)
    expected[0, [N, H, SU]] = [2 / 9, 6 / 9, 1 / 9]
    expected[1, [A, D]] = [0.7, 0.3]
    # contempt.png: contempt (5) outvotes every class -> expression unannotated (all-zero row, id -1)
    expected[3, [SU, SA, A]] = [0.4, 0.4, 0.2]
    expected[4, F] = 1.0  # 5 of 10 votes unknown/NF is not "mostly": kept, only its fear votes count
    np.testing.assert_allclose(index.expr_soft, expected, atol=1e-6)
    # Ties go to the first class in EXPR_NAMES order: Sadness (5) before Surprise (6).
    np.testing.assert_array_equal(index.expr, [H, A, -1, SA, F])
    np.testing.assert_array_equal(index.frames, [1, 4, 6, 7, 9])
    assert np.all(index.au == -1) and np.all(index.va == -5)
    np.testing.assert_array_equal(index.boxes, [[0, 0, 48, 48]] * 5)
    s = index.stats
    assert (s["rows"], s["frames"], s["missing_images"], s["corrupt_images"], s["duplicate_rows"],
            s["mostly_unknown"], s["mostly_not_face"], s["no_votes"], s["contempt_majority"]) == (10, 5, 1, 1, 1, 1, 1,
                                                                                                 0, 1)
    assert s["rows"] - sum(s[k] for k in ferplus.LEFT_OUT) == len(index)
    reasons = {Path(p).name: why for p, why in index.skipped}
    assert reasons == {"notface.png": "mostly not face", "gone.png": "no image", "twice.png": "listed again (first "
                       "on line 4)", "unknown.png": "mostly unknown", "broken.png": "truncated PNG (no IEND chunk)"}


def test_split_names(ferplus_root):
    for split in ("train", "Training", "FER2013Train", "fer2013train"):
        assert len(ferplus.read_index(ferplus_root, split)) == 5
    write_split(ferplus_root, "FER2013Test", ROWS[:1])
    assert len(ferplus.read_index(ferplus_root, "test")) == 1
    with pytest.raises(DataError, match="unknown FER\\+ split 'public'"):
        ferplus.read_index(ferplus_root, "public")
    with pytest.raises(DataError, match="FER2013Valid: FER\\+ split folder not found"):
        ferplus.read_index(ferplus_root, "valid")
    with pytest.raises(DataError, match="FER\\+ root not found"):
        ferplus.read_index(ferplus_root / "nope", "train")
    (ferplus_root / "FER2013Test" / "label.csv").unlink()
    with pytest.raises(DataError, match="FER2013Test/label.csv: FER\\+ label file not found"):
        ferplus.read_index(ferplus_root, "test")


@pytest.mark.parametrize("line, message", [
    ('a.png,"(0, 0, 48, 48)",1,2,3', "malformed row, expected 12 fields"),
    ('a.png,"(0, 0, 48)",1,0,0,0,0,0,0,0,0,0', "malformed face box"),
    ('a.png,"(0, 0, 0, 48)",1,0,0,0,0,0,0,0,0,0', "has no area"),
    ('a.png,"(0, 0, 48, 48)",1,x,0,0,0,0,0,0,0,0', "vote counts must be whole numbers"),
    ('a.png,"(0, 0, 48, 48)",1,-1,0,0,0,0,0,0,0,0', "a vote count is negative"),
    ('sub/a.png,"(0, 0, 48, 48)",1,0,0,0,0,0,0,0,0,0', "must be an image file name"),
    ('happy.png,"(0, 0, 48, 48)",1,9,0,0,0,0,0,0,0,0', "happy.png is listed again with other votes or box "
                                                        "\\(first on line 1\\)"),
])
def test_a_malformed_row_names_file_and_line(ferplus_root, line, message):
    csv_path = ferplus_root / "FER2013Train" / "label.csv"
    csv_path.write_text('happy.png,"(0, 0, 48, 48)",2,6,1,0,0,0,0,0,1,0\n\n' + line + "\n")
    with pytest.raises(DataError, match=f"^{csv_path}:3: .*{message}"):
        ferplus.read_index(ferplus_root, "train")


def test_teacher_labels_fill_au_and_va(ferplus_root, tmp_path):
    labels = tmp_path / "labels.csv"
    blend = [0.5] * 52
    cache.write_rows(labels, [
        cache.format_row("FER2013Train/happy.png", True, [0.1, 0.2, 0.3, 0.4, 0.9, 0.0, 1.0, 0.55], [0.5, 0.25],
                         blend, [0.1] * 7),
        cache.format_row("FER2013Train/tie.png", False, [0.7] * 8, [-0.1, 0.3], [float("nan")] * 52,
                         [float("nan")] * 7),
    ])
    index = ferplus.read_index(ferplus_root, "train", labels=cache.read_labels(labels))
    np.testing.assert_allclose(index.au[0], [0.1, 0.2, 0.3, 0.4, 0.9, 0.0, 1.0, 0.55])
    np.testing.assert_allclose(index.va[0], [0.5, 0.25])
    np.testing.assert_array_equal(index.au[3], [-1] * 8)  # not found: unannotated AUs, never zeros
    np.testing.assert_allclose(index.va[3], [-0.1, 0.3])
    np.testing.assert_array_equal(index.au[[1, 2, 4]], -1)  # not in the cache
    np.testing.assert_array_equal(index.va[[1, 2, 4]], -5)
    s = index.stats
    assert (s["teacher_found"], s["teacher_missed"], s["not_in_labels"]) == (1, 1, 3)

    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:2] + [lines[2].replace(",0,-1.0000", ",0,0.5000", 1)]) + "\n")
    with pytest.raises(DataError, match=f"^{labels}:3: a face the teacher did not find must have unannotated AUs"):
        cache.read_labels(labels)
    labels.write_text("image,found\n")
    with pytest.raises(DataError, match=f"^{labels}:1: not a keras-mtanet teacher label file"):
        cache.read_labels(labels)
    with pytest.raises(DataError, match="teacher label file not found"):
        cache.read_labels(tmp_path / "none.csv")
    with pytest.raises(TypeError, match="labels: the teacher labels as read by"):  # a path is not the labels
        ferplus.read_index(ferplus_root, "train", labels=tmp_path / "none.csv")


def test_pipeline_feeds_distributions(ferplus_root):
    index = ferplus.read_index(ferplus_root, "train")
    images, labels = next(iter(datasets.make_dataset(index, image_size=24, batch_size=8)))
    assert images.shape == (5, 24, 24, 3)
    np.testing.assert_allclose(images.numpy()[:, :, :, 0], images.numpy()[:, :, :, 2])  # grey to RGB
    np.testing.assert_allclose(labels["expr"].numpy(), index.expr_soft)
    np.testing.assert_allclose(labels["au"].numpy(), index.au)
    assert index.labels()["expr"] is index.expr  # the metrics keep the majority classes


def test_tfrecords_keep_distributions_beside_hard_shards(ferplus_root, tmp_path):
    index = ferplus.read_index(ferplus_root, "train")
    out = tmp_path / "records"
    tfrecord.write_tfrecords(index, out, num_shards=2, prefix="ferplus")
    png = ferplus_root / "FER2013Train" / "happy.png"
    hard = FrameIndex([str(png)] * 2, ["v", "v"], np.array([1, 2]), np.full((2, 2), -5, np.float32),
                      np.full((2, 8), -1, np.float32), np.array([3, -1], np.int32), {}, [])
    tfrecord.write_tfrecords(hard, out, num_shards=1, prefix="hard")
    assert not tfrecord.has_soft_targets([out / "hard-00000-of-00001.tfrecord"])

    got = []
    for _, labels in datasets.make_dataset(str(out / "*.tfrecord"), image_size=16, batch_size=16):
        got.extend(labels["expr"].numpy())
    got = np.asarray(got)
    assert got.shape == (7, 7)
    one_hot_fear = np.eye(7)[F]
    expected = list(index.expr_soft) + [one_hot_fear, np.zeros(7)]  # a hard id -1 becomes an all-zero row
    rounded = sorted(map(tuple, np.round(np.asarray(got, np.float64), 5)))
    assert rounded == sorted(map(tuple, np.round(np.asarray(expected, np.float64), 5)))


def test_train_cli_learns_all_three_tasks_from_votes_and_teacher_labels(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for folder, n in (("FER2013Train", 16), ("FER2013Valid", 8)):
        split = tmp_path / "fer" / folder
        split.mkdir(parents=True)
        lines = []
        for i in range(n):
            name = f"{folder[7:].lower()}{i:02d}.png"
            split.joinpath(name).write_bytes(tf.io.encode_png(rng.integers(0, 255, (48, 48, 1), np.uint8)).numpy())
            votes = rng.multinomial(10, [0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05, 0, 0, 0])
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
            found = i % 4 != 0
            rows.append(cache.format_row(f"{folder}/{name}", found, rng.uniform(0, 1, 8), rng.uniform(-1, 1, 2),
                                         rng.uniform(0, 1, 52), rng.uniform(0, 1, 7)))
        (split / "label.csv").write_text("\n".join(lines) + "\n")
    cache.write_rows(tmp_path / "labels.csv", rows)
    recipe = {"backbone": "se_resnet18", "input_size": 32, "stack_blocks": [1, 1, 1, 1], "width": 0.25, "epochs": 1,
              "batch_size": 8, "optimizer": "adamw", "learning_rate": 0.003, "schedule": "constant"}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    code = cli.main(["train", "--data", str(tmp_path / "fer"), "--format", "ferplus", "--labels",
                     str(tmp_path / "labels.csv"), "--output", str(tmp_path / "run"), "--config",
                     str(tmp_path / "recipe.json"), "--no-tensorboard"])
    assert code == 0
    meta = checks.read_metadata(tmp_path / "run")
    for key in ("va_score", "au_score", "expr_score"):
        assert np.isfinite(meta["metrics"][key]), key
    assert "FER+" in meta["training_data"] and "teacher labels" in meta["training_data"]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"FER+ not found at {SHARED}")
@pytest.mark.parametrize("split, folder", [("train", "FER2013Train"), ("valid", "FER2013Valid"),
                                           ("test", "FER2013Test")])
def test_real_ferplus_counts(split, folder):
    index = ferplus.read_index(SHARED, split)
    lines = [line for line in (SHARED / folder / "label.csv").read_text().splitlines() if line.strip()]
    votes = np.asarray([[int(v) for v in line.rsplit('"', 1)[1].strip(",").split(",")] for line in lines])
    assert index.stats["rows"] == len(lines)
    assert len(index) == len(lines) - sum(index.stats[k] for k in ferplus.LEFT_OUT)
    # Left out for unknown/NF: more than half of the ten votes, counted here straight from the file.
    assert index.stats["mostly_unknown"] + index.stats["mostly_not_face"] == int((2 * votes[:, 8:].sum(1) >
                                                                                  votes.sum(1)).sum())
    sums = index.expr_soft.sum(axis=1)
    assert np.allclose(sums[index.expr >= 0], 1.0) and np.all(sums[index.expr < 0] == 0)
    # Where one of our classes has a strict majority of FER+'s ten columns, the reader's class is that one.
    names = [line.split(",", 1)[0] for line in lines]
    kept = {Path(p).name: e for p, e in zip(index.paths, index.expr)}
    columns = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
    ours = [EXPR_NAMES.index(c.capitalize()) for c in columns]
    top = votes.max(axis=1)
    strict = (votes == top[:, None]).sum(axis=1) == 1
    checked = 0
    for name, v, s in zip(names, votes, strict):
        if s and v.argmax() < 7 and name in kept:
            assert kept[name] == ours[v.argmax()], name
            checked += 1
    assert checked > 0.9 * len(index)
