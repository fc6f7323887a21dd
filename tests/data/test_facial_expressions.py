"""The facial_expressions reader (keras_mtanet.data.facial_expressions): the eight crowd labels on the seven
classes, repeated and conflicting names, the held-out list, identity-disjoint splits, one-line errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from keras_mtanet.data import facial_expressions as fe
from keras_mtanet.errors import DataError
from keras_mtanet.labels import EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_VA

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "facial_expressions"


def write_set(root, rows, test=None, images=None):
    """A legend of ``rows`` (image, emotion, contributor), the images it names (or ``images``), and test.csv."""
    (root / "images").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", pixels)[1].tobytes()
    for name in (images if images is not None else {r[0] for r in rows}):
        (root / "images" / name).write_bytes(data)
    (root / "legend.csv").write_text("image,emotion,contributor\n" + "".join(",".join(r) + "\n" for r in rows))
    if test is not None:
        (root / "test.csv").write_text("image\n" + "".join(f"{n}\n" for n in test))
    return root


ROWS = [("Ann_Lee_0001.jpg", "happiness", "1"), ("Ann_Lee_0002.jpg", "NEUTRAL", "1"),
        ("Bo_Ma_0001.jpg", "anger", "2"), ("photo_7.jpg", "surprise", "3"), ("x9k.jpg", "Disgust", "3"),
        ("Cy_Do_0001.jpg", "contempt", "4"), ("Dee_0003.jpg", "fear", "5"), ("Dee_0003.jpg", "fear", "6"),
        ("Eve_0001.jpg", "sadness", "7"), ("Eve_0001.jpg", "happiness", "8")]


def test_labels_map_to_the_seven_classes_and_repeats_are_decided_and_counted(tmp_path):
    root = write_set(tmp_path / "fe", ROWS, test=["Bo_Ma_0001.jpg"])
    index = fe.read_index(root, "all")
    names = [Path(p).name for p in index.paths]
    assert names == ["Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg", "Bo_Ma_0001.jpg", "photo_7.jpg", "x9k.jpg",
                     "Dee_0003.jpg"]
    assert [EXPR_NAMES[e] for e in index.expr] == ["Happiness", "Neutral", "Anger", "Surprise", "Disgust", "Fear"]
    s = index.stats
    assert (s["rows"], s["duplicate_rows"], s["conflicting_labels"], s["contempt"]) == (10, 2, 1, 1)
    assert index.videos[:3] == ["Ann_Lee", "Ann_Lee", "Bo_Ma"] and index.videos[3] == "photo"
    assert (index.au == UNANNOTATED_AU).all() and (index.va == UNANNOTATED_VA).all()
    assert list(index.frames) == [2, 3, 4, 5, 6, 8]  # the legend line each came from (the first of a repeat)


def test_held_out_names_stay_in_test_and_identities_never_straddle_train_and_valid(tmp_path):
    rows = [(f"P{p}_{k:04d}.jpg", "neutral", "1") for p in range(60) for k in range(1, 3)]
    root = write_set(tmp_path / "fe", rows, test=["P0_0001.jpg", "P0_0002.jpg"])
    train, valid, test = (fe.read_index(root, s) for s in ("train", "valid", "test"))
    assert sorted(Path(p).name for p in test.paths) == ["P0_0001.jpg", "P0_0002.jpg"]
    assert len(train) + len(valid) + len(test) == 120 and len(valid) > 0
    assert not set(train.videos) & set(valid.videos) and "P0" not in set(train.videos) | set(valid.videos)
    again = fe.read_index(root, "valid")
    assert again.paths == valid.paths  # a fixed rule, not a random draw


def test_missing_and_corrupt_images_are_counted(tmp_path):
    root = write_set(tmp_path / "fe", ROWS[:3], images=["Ann_Lee_0001.jpg", "Bo_Ma_0001.jpg"])
    (root / "images" / "Bo_Ma_0001.jpg").write_bytes(b"not an image")
    index = fe.read_index(root, "all")
    assert [Path(p).name for p in index.paths] == ["Ann_Lee_0001.jpg"]
    assert index.stats["missing_images"] == 1 and index.stats["corrupt_images"] == 1


@pytest.mark.parametrize("line, expected", [
    ("Ann_Lee_0003.jpg,joy,1", "unknown emotion 'joy'"),
    ("lonely.jpg", "expected image,emotion,contributor"),
    ("../../etc/passwd,anger,1", "is not a plain image name; refused"),
])
def test_a_malformed_legend_line_is_one_error_naming_file_and_line(tmp_path, line, expected):
    root = write_set(tmp_path / "fe", ROWS[:2])
    with open(root / "legend.csv", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=f"legend.csv:4: .*{expected}") as info:
        fe.read_index(root, "all")
    assert "\n" not in str(info.value)


def test_held_out_list_and_file_errors(tmp_path):
    root = write_set(tmp_path / "fe", ROWS[:2], test=["Nobody_0001.jpg"])
    with pytest.raises(DataError, match="test.csv: names Nobody_0001.jpg, which legend.csv does not list"):
        fe.read_index(root, "train")
    (root / "test.csv").unlink()
    with pytest.raises(DataError, match="no held-out list; the test split needs it"):
        fe.read_index(root, "test")
    (root / "legend.csv").write_bytes(b"image,emotion\nAnn_Lee_0001.jpg,col\xe8re\n")
    with pytest.raises(DataError, match=r"legend.csv:2: not UTF-8 text \(byte 0xe8 at column 21\)"):
        fe.read_index(root, "all")
    (root / "legend.csv").unlink()
    with pytest.raises(DataError, match="legend.csv: facial_expressions legend not found"):
        fe.read_index(root, "all")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/facial_expressions is not on this machine")
def test_the_shared_copy_keeps_its_held_out_identities_apart():
    train, valid, test = (fe.read_index(SHARED, s, check_images=False) for s in ("train", "valid", "test"))
    assert len(test) + test.stats["contempt"] == 3367 and train.stats["rows"] == 13690
    assert not set(test.videos) & (set(train.videos) | set(valid.videos))
    assert not set(train.videos) & set(valid.videos)
