"""keras-mtanet train: flags and --output are checked before any work."""

import pytest

from keras_mtanet.cli import main


@pytest.mark.safety
def test_train_flags_are_checked_too(tmp_path, capsys):
    for flag in (["--epochs", "0"], ["--epochs", "-2"], ["--batch-size", "0"]):
        assert main(["train", "--data", str(tmp_path / "d"), "--format", "synthetic", "--output",
                     str(tmp_path / "r"), *flag]) == 2
        err = capsys.readouterr().err.strip()
        assert "must be a whole number from 1" in err and "\n" not in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


@pytest.mark.safety
def test_train_output_must_be_a_run_folder(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("mine")
    for output, expected in ((tmp_path / "file.txt", "is a file"), (tmp_path / "docs", "holds no training run")):
        assert main(["train", "--data", str(tmp_path / "d"), "--format", "synthetic", "--output", str(output),
                     "--epochs", "1"]) == 2
        assert expected in capsys.readouterr().err
    assert (tmp_path / "file.txt").read_text() == "mine" and (tmp_path / "docs" / "notes.md").read_text() == "mine"
