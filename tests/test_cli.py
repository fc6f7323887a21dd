import csv
import os
import subprocess
import sys

import cv2
import pytest

import keras_mtanet
from keras_mtanet.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-mtanet {keras_mtanet.__version__}"


def test_user_errors_are_one_line_with_exit_2(capsys, tmp_path):
    code = main(["train", "--data", str(tmp_path / "missing"), "--format", "affwild2", "--output",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"keras-mtanet: error: {tmp_path / 'missing'}: Aff-Wild2 root not found (expected annotations/ " \
                  "and cropped_aligned/ in it)"
    assert main(["demo", "--model", "no_such_preset"]) == 2
    assert "not a preset name" in capsys.readouterr().err


def test_presets_lists_the_embedded_default(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "mtanet_se_resnet18_synth" in out and "embedded" in out


def test_demo_runs_the_embedded_preset_in_a_fresh_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "demo", "--output", str(tmp_path / "faces.csv"),
                             "--plot", str(tmp_path / "faces.png")], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "input: scikit-image's astronaut photograph" in result.stdout
    with open(tmp_path / "faces.csv") as f:
        rows = list(csv.DictReader(f))
    # The photograph and its mirror image: two faces, found where they are, predicted alike.
    assert [int(r["face_detected"]) for r in rows] == [1, 1]
    left, right = rows
    assert abs(float(left["x"]) + float(left["w"]) / 2 - 222) < 15
    assert abs((1024 - float(right["x"]) - float(right["w"]) / 2) - 222) < 15
    assert abs(float(left["valence"]) - float(right["valence"])) < 0.3
    picture = cv2.imread(str(tmp_path / "faces.png"))
    assert picture.shape[:2] == (512 + 24, 1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.csv", "faces.png"]  # nothing else written

    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "demo", "--synthetic", "--frames", "24",
                             "--output", str(tmp_path / "demo.csv")], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained on: keras_mtanet synthetic cartoon faces" in result.stdout
    assert "ABAW scores on this video: ccc_valence" in result.stdout
    lines = (tmp_path / "demo.csv").read_text().splitlines()
    assert len(lines) == 25 and lines[0].startswith("frame,valence,arousal,AU1_prob")


def test_cli_error_has_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "keras_mtanet", "publish", str(tmp_path / "nope"), "--repo-id",
                             "org/x"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"keras-mtanet: error: {tmp_path / 'nope'}: no such preset folder"
