"""The example scripts and the AffectNet training path, run on data the project generates."""

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mtanet import load_pretrained
from keras_mtanet.data import synthetic
from keras_mtanet.metrics import SCORE_KEYS
from keras_mtanet.training import recipe
from keras_mtanet.training import run as train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"backbone": "se_resnet18", "input_size": 32, "stack_blocks": [1, 1, 1, 1], "width": 0.25, "epochs": 1,
        "batch_size": 16, "optimizer": "adamw", "learning_rate": 0.003, "schedule": "cosine",
        "task_weighting": "fixed"}


def test_train_affwild2_example_trains_and_evaluates(tmp_path):
    synthetic.write_affwild2(tmp_path / "aw", train_videos=2, val_videos=1, frames=12, size=32, seed=4)
    (tmp_path / "recipe.json").write_text(json.dumps(TINY))
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "train_affwild2.py"), str(tmp_path / "aw"),
                             str(tmp_path / "run"), "--config", str(tmp_path / "recipe.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert scores["smooth_frames"] == 15 and "unsmoothed" in scores
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == ["AU_Set", "EXPR_Set", "VA_Set"]
    assert load_pretrained(str(tmp_path / "run")).metadata["training_data"].startswith("Aff-Wild2")
    if importlib.util.find_spec("tensorboard") is not None:  # the test extras install it
        assert (tmp_path / "run" / "tensorboard" / "train").is_dir()
    else:
        assert "TensorBoard logs skipped" in result.stdout


def write_affectnet(root, n, seed):
    """AffectNet layout: faces pasted into larger photos at a recorded box, CSV rows with AffectNet codes."""
    images, labels = synthetic.generate(n, size=48, seed=seed, frames_per_video=20)
    to_affectnet = {0: 0, 4: 1, 5: 2, 6: 3, 3: 4, 2: 5, 1: 6}  # our class id -> AffectNet code
    rng = np.random.default_rng(seed)
    rows = ["subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"]
    for i in range(n):
        canvas = rng.integers(0, 255, (80, 96, 3)).astype(np.uint8)
        x, y = int(rng.integers(0, 48)), int(rng.integers(0, 32))
        canvas[y:y + 48, x:x + 48] = images[i]
        rel = f"{i % 3}/{seed}_{i:04d}.jpg"
        (root / "Manually_Annotated_Images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "Manually_Annotated_Images" / rel).write_bytes(tf.io.encode_jpeg(canvas).numpy())
        code = to_affectnet[int(labels["expr"][i])] if i % 10 else 7  # some Contempt rows, unmapped
        rows.append(f'{rel},{x},{y},48,48,"",{code},{labels["va"][i, 0]:.4f},{labels["va"][i, 1]:.4f}')
    return "\n".join(rows) + "\n"


def test_training_on_affectnet_layout(tmp_path):
    root = tmp_path / "affectnet"
    (root / "Manually_Annotated_Images").mkdir(parents=True)
    (root / "training.csv").write_text(write_affectnet(root, 40, seed=1))
    (root / "validation.csv").write_text(write_affectnet(root, 20, seed=2))
    config = recipe.load_config(None, **TINY)
    scores = train.train(config, root, "affectnet", tmp_path / "run", verbose=0, tensorboard=False,
                         log=lambda *a: None)
    assert set(scores) >= {"va_score", "expr_f1"} and "au_f1" in scores and np.isnan(scores["au_f1"])
    with open(tmp_path / "run" / "log.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["au_loss"]) == 0.0  # AffectNet has no AU labels: the masked loss contributes nothing
    assert load_pretrained(str(tmp_path / "run")).metadata["training_data"].startswith("AffectNet")


def test_predict_video_example_summarises_each_face(tmp_path):
    import scenes
    from skimage import data as skdata

    patch, box = scenes.face_patch(skdata.astronaut(), (182, 64, 83, 107), margin=0.35)
    frames, _ = scenes.compose(6, [(patch, box, (20, 20), (5, 0))], size=(240, 320), faceless=(5,))
    scenes.write_video(tmp_path / "clip.avi", frames, 25.0)
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "predict_video.py"), str(tmp_path / "clip.avi"),
                             "--output", str(tmp_path / "faces.csv"), "--plot", str(tmp_path / "faces.png"),
                             "--smooth", "3f"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{tmp_path / 'clip.avi'}: 6 frames, 1 face(s)" in result.stdout
    assert "face 0: 5 frames, mean valence" in result.stdout
    with open(tmp_path / "faces.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["face_detected"] for r in rows] == ["1"] * 5 + ["0"]
    assert (tmp_path / "faces.png").stat().st_size > 10_000


def test_fit_minimal_example_runs_with_tiny_settings(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "fit_minimal.py"), "--epochs", "2", "--size",
                             "32", "--train", "64", "--test", "32", "--width", "0.25", "--head-filters", "32"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    shares = dict(re.findall(r"(\w+) (\d+)%", next(line for line in lines if line.startswith("annotated share"))))
    # mask_partial leaves about 80 % of VA rows and 70 % of AU and expression rows annotated.
    assert set(shares) == {"va", "au", "expr"} and all(40 <= int(v) < 100 for v in shares.values()), shares
    epochs = [line for line in lines if line.startswith("epoch")]
    assert [line.split(":")[0] for line in epochs] == ["epoch  1", "epoch  2"]
    for line in epochs:
        losses = dict(re.findall(r"(\w+) (-?\d+\.\d+)", line))
        assert set(losses) == {"loss", "va_loss", "au_loss", "expr_loss"}
        assert all(np.isfinite(float(v)) and float(v) >= 0 for v in losses.values()), line
    held_out = dict(re.findall(r"(\w+) (-?\d+\.\d+|nan)", next(line for line in lines if line.startswith("held-out"))))
    assert tuple(held_out) == SCORE_KEYS
    for key, value in held_out.items():
        low = -1.0 if key.startswith(("ccc", "va")) else 0.0
        assert low <= float(value) <= 1.0, (key, value)
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "fit_minimal.py"), "--epochs", "0"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "--epochs: must be positive, got 0" in bad.stderr


def test_finetune_example_freezes_the_backbone_then_trains_all(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "finetune.py"), "--preset",
                             "mtanet_se_resnet18_synth", "--epochs", "1", "--frames", "96"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # The head: two 1x1 convolutions and three dense layers, a kernel and a bias each.
    stage1 = re.search(r"stage 1 trains (\d+) of (\d+) weight tensors", result.stdout)
    assert stage1 and int(stage1.group(1)) == 10, result.stdout
    lines = re.findall(r"^(va_score|expr_f1|au_f1): (-?[\d.]+) before fine-tuning, (-?[\d.]+) after$",
                       result.stdout, re.M)
    assert [name for name, _, _ in lines] == ["va_score", "expr_f1", "au_f1"]
