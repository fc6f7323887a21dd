"""The small-file helpers (keras_mtanet.files): the atomic writer, bounded JSON reads, FIFOs refused before they are
opened, and one-line write errors."""


import pytest
from conftest import fifo_at, refused_without_blocking, tiny_model

from keras_mtanet import PresetError, files
from keras_mtanet.cli import main
from keras_mtanet.errors import DataError, UsageError
from keras_mtanet.training import recipe


@pytest.mark.safety
def test_a_failed_write_is_one_line_naming_the_file(tmp_path):
    import errno
    import os


    name = os.fsdecode(b"scores\xff.csv")  # a file name with a byte that is not UTF-8
    made = files.write_error(tmp_path / name, OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(made, DataError)
    assert str(made) == f"{tmp_path}/scores\\xff.csv: cannot write (No space left on device)"
    made = files.write_error("run/log.csv", PermissionError(errno.EACCES, "Permission denied"), UsageError)
    assert isinstance(made, UsageError) and str(made) == "run/log.csv: cannot write (Permission denied)"
    assert str(files.write_error("a.json", OSError("disk gone"))) == "a.json: cannot write (disk gone)"


@pytest.mark.safety
def test_a_fifo_config_annotation_or_label_file_is_refused_before_it_is_opened(tmp_path, capsys):
    from keras_mtanet.data import affectnet, affwild2, ferplus
    from keras_mtanet.teachers import cache

    config = fifo_at(tmp_path / "recipe.json")
    error = refused_without_blocking(config, lambda: recipe.load_config(config))
    assert isinstance(error, UsageError)
    assert str(error) == f"{config}: training config is not a regular file (a FIFO)"
    error = refused_without_blocking(config, lambda: main(["train", "--data", str(tmp_path / "d"), "--format",
                                                            "synthetic", "--output", str(tmp_path / "r"),
                                                            "--config", str(config)]))
    assert error is None and capsys.readouterr().err == \
        f"keras-mtanet: error: {config}: training config is not a regular file (a FIFO)\n"

    root = tmp_path / "affwild2"
    annotation = fifo_at(root / "annotations" / "VA_Set" / "Training_Set" / "vid.txt")
    (root / "cropped_aligned").mkdir()
    error = refused_without_blocking(annotation, lambda: affwild2.read_index(root, "train"))
    assert isinstance(error, DataError)
    assert str(error) == f"{annotation}: annotation file is not a regular file (a FIFO)"

    split = fifo_at(tmp_path / "affectnet" / "training.csv")
    error = refused_without_blocking(split, lambda: affectnet.read_index(split.parent, "train"))
    assert isinstance(error, DataError) and "is not a regular file (a FIFO)" in str(error)

    votes = fifo_at(tmp_path / "ferplus" / "FER2013Train" / "label.csv")
    error = refused_without_blocking(votes, lambda: ferplus.read_index(tmp_path / "ferplus", "train"))
    assert isinstance(error, DataError) and str(error) == f"{votes}: FER+ label file is not a regular file (a FIFO)"

    labels = fifo_at(tmp_path / "labels.csv")
    error = refused_without_blocking(labels, lambda: cache.read_rows(labels))
    assert isinstance(error, DataError) and str(error) == f"{labels}: teacher label file is not a regular file (a FIFO)"


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    import os

    target = tmp_path / "a.json"
    files.write_atomic(target, "old")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    files.write_atomic(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, "newer")
    assert target.read_bytes() == b"\x00new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_output_gives_writers_their_own_file_name(tmp_path):
    import re

    target = tmp_path / "model.weights.h5"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with files.atomic_output(target) as tmp:
            assert tmp.name == "model.weights.h5" and re.fullmatch(r"\.model\.weights\.h5\.[0-9a-f]{8}\.tmp",
                                                                   tmp.parent.name)
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.weights.h5"]
    leftover = tmp_path / ".model.weights.h5.tmp"
    leftover.mkdir()  # something already there under a tmp-like name is not the function's to remove
    (leftover / "keep").write_text("mine")
    with files.atomic_output(target) as tmp:
        tmp_model = tiny_model()
        tmp_model.save_weights(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.weights.h5.tmp", "model.weights.h5"]
    assert (leftover / "keep").read_text() == "mine"
    tiny_model().load_weights(target)


def test_write_atomic_never_writes_through_an_existing_temporary_name(tmp_path, monkeypatch):
    target, victim = tmp_path / "a.json", tmp_path / "victim"
    victim.write_text("precious")
    fixed = tmp_path / ".a.json.tmp"
    fixed.symlink_to(victim)  # a link planted where a fixed temporary name would go
    monkeypatch.setattr(files, "temporary_name", lambda path: fixed)
    with pytest.raises(FileExistsError):
        files.write_atomic(target, "new")
    assert victim.read_text() == "precious" and not target.exists()


def test_read_json_errors_name_the_file(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(DataError, match=r"x\.json: missing"):
        files.read_json(path, "thing")
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PresetError, match=r"x\.json: unreadable thing"):
        files.read_json(path, "thing", error=PresetError)  # too deeply nested for the parser
    path.write_text('{"a": 1}' + " " * 100)
    with pytest.raises(DataError, match=r"x\.json: thing larger than 0 KiB; refused"):
        files.read_json(path, "thing", limit=64)
    assert files.read_json(path, "thing") == {"a": 1}
