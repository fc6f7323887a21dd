"""The GENKI-4K reader (keras_mtanet.data.genki4k): smile labels as AU12 targets, the held-out list, fixed splits,
bad lines as one-line errors, missing and corrupt images counted."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from keras_mtanet.data import datasets, genki4k
from keras_mtanet.errors import DataError
from keras_mtanet.labels import AU_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "genki4k"
AU12 = AU_NAMES.index("AU12")


def jpeg(seed, size=40):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


@pytest.fixture
def root(tmp_path):
    smiles = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1]  # files 1..12; 10 is the validation file, 3 and 4 held out
    return genki4k.write_layout(tmp_path / "genki", smiles, [jpeg(i) for i in range(12)], test=(3, 4))


def test_splits_are_fixed_and_the_held_out_files_never_leave_test(root):
    train, valid, test = (genki4k.read_index(root, s) for s in ("train", "valid", "test"))
    assert list(train.frames) == [1, 2, 5, 6, 7, 8, 9, 11, 12]
    assert list(valid.frames) == [10] and list(test.frames) == [3, 4]
    assert len(genki4k.read_index(root, "all")) == 12
    assert Path(train.paths[0]).name == "file0001.jpg"
    np.testing.assert_array_equal(train.au[:, AU12], [1, 0, 0, 0, 1, 0, 1, 1, 1])
    others = np.delete(train.au, AU12, axis=1)
    assert (others == UNANNOTATED_AU).all() and (train.va == UNANNOTATED_VA).all()
    assert (train.expr == UNANNOTATED_EXPR).all() and train.stats["smiling"] == 5
    assert train.stats["pose"].shape == (9, 3)


def test_missing_and_corrupt_images_are_counted_and_left_out(root):
    (root / "files" / "file0001.jpg").unlink()
    (root / "files" / "file0002.jpg").write_bytes(jpeg(1)[:-10])  # cut short: no end marker
    index = genki4k.read_index(root, "train")
    assert index.stats["missing_images"] == 1 and index.stats["corrupt_images"] == 1
    assert list(index.frames) == [5, 6, 7, 8, 9, 11, 12]
    assert [Path(p).name for p, _ in index.skipped] == ["file0001.jpg", "file0002.jpg"]


@pytest.mark.parametrize("line, expected", [
    ("1 0.1 0.2", "expected 'smile yaw pitch roll', got 3 field"),
    ("2 0 0 0", "smile must be 0 or 1, got '2'"),
    ("1 a 0 0", "head pose must be three numbers"),
    ("1 nan 0 0", "head pose must be three finite angles"),
])
def test_a_malformed_label_line_is_one_error_naming_file_and_line(root, line, expected):
    lines = (root / "labels.txt").read_text().splitlines()
    lines[6] = line
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"labels.txt:7: {expected}") as info:
        genki4k.read_index(root, "train")
    assert "\n" not in str(info.value)


def test_a_bad_or_unknown_held_out_name_and_missing_files_are_errors(root):
    (root / "test.txt").write_text("file0003.jpg\nphoto.png\n")
    with pytest.raises(DataError, match=r"test.txt:2: 'photo.png' is not a GENKI-4K file name"):
        genki4k.read_index(root, "train")
    (root / "test.txt").write_text("file0013.jpg\n")
    with pytest.raises(DataError, match=r"test.txt: names file0013.jpg, which labels.txt has no line for"):
        genki4k.read_index(root, "train")
    (root / "test.txt").unlink()
    with pytest.raises(DataError, match="no held-out list; the test split needs it"):
        genki4k.read_index(root, "test")
    assert len(genki4k.read_index(root, "train")) == 11  # without a list nothing is held out (10 is valid)
    with pytest.raises(DataError, match="unknown GENKI-4K split 'val'"):
        genki4k.read_index(root, "val")
    with pytest.raises(DataError, match="GENKI-4K root not found"):
        genki4k.read_index(root / "nope")
    (root / "labels.txt").unlink()
    with pytest.raises(DataError, match="labels.txt: GENKI-4K label file not found"):
        genki4k.read_index(root)


def test_the_index_feeds_the_input_pipeline(root):
    index = genki4k.read_index(root, "train")
    images, labels = next(iter(datasets.make_dataset(index, 32, 4)))
    assert images.shape == (4, 32, 32, 3) and labels["au"].shape == (4, 8)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/genki4k is not on this machine")
def test_the_shared_copy_has_the_published_counts():
    whole = genki4k.read_index(SHARED, "all", check_images=False)
    assert len(whole) == 4000 and whole.stats["smiling"] == 2162
    test = genki4k.read_index(SHARED, "test", check_images=False)
    assert len(test) == 800 and whole.stats["held_out_named"] == 800
