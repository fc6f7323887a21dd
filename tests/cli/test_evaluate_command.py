"""keras-mtanet evaluate: usage errors come before any work."""

import os

import pytest

from keras_mtanet.cli import main


@pytest.mark.safety
@pytest.mark.parametrize("args, message", [
    (["--fps", "0"], "--fps 0: must be a positive number of frames per second"),
    (["--fps", "-2", "--smooth", "0.5"], "--fps -2: must be a positive number of frames per second"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--smooth", "1e400"], "--smooth '1e400': give seconds (0.5) or frames (15f)"),
    (["--predictions", "FILE"], "FILE: is a file; the --predictions must be a folder"),
    (["--predictions", "/sys/predictions"], "/sys/predictions: cannot write in folder /sys (Permission denied)"),
    (["--metrics", "DIR"], "DIR: is a folder; give the --metrics file's name"),
    (["--metrics", "/sys/scores.json"], "/sys/scores.json: cannot write in folder /sys (Permission denied)"),
])
def test_evaluate_usage_errors_come_before_any_work(args, message, no_model, tmp_path, capsys):
    if any(a.startswith("/sys") for a in args) and not os.path.isdir("/sys"):
        pytest.skip("needs Linux /sys")
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    places = {"FILE": str(tmp_path / "file"), "DIR": str(tmp_path / "dir")}
    args = [places.get(a, a) for a in args]
    message = message.replace("FILE", places["FILE"]).replace("DIR", places["DIR"])
    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"keras-mtanet: error: {message}"
