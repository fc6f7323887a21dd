"""The model on every Keras backend: the same tiny MTANet trains, evaluates, predicts and saves under JAX and
PyTorch (each in a subprocess, since Keras picks its backend once per process), and presets move between
TensorFlow and the other backends with the same outputs. A backend whose package is not installed is skipped.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model

from keras_mtanet.presets import folder as preset_folder

HERE = Path(__file__).parent
BACKEND_PACKAGES = {"jax": "jax", "torch": "torch"}
TOLERANCE = 1e-4  # float32 convolutions differ between backends' kernels by rounding only


@pytest.mark.parametrize("backend", sorted(BACKEND_PACKAGES))
def test_model_trains_predicts_and_moves_presets_on_backend(backend, tmp_path, rng):
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        pytest.skip(f"{BACKEND_PACKAGES[backend]} is not installed")
    from keras_mtanet import load_pretrained

    model = tiny_model(color_mode="grayscale")
    for w in model.weights:  # away from the initial values, batch-norm statistics included
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    meta = preset_folder.preset_metadata(model, training_data="random test images", name="tf-check")
    preset_folder.save_preset(model, tmp_path / "tf_preset", meta, "# tf check\n")
    x = rng.integers(0, 256, (5, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "tf_inputs.npy", x)
    np.savez(tmp_path / "tf_outputs.npz", **model.predict(x, verbose=0))

    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(HERE / "backend_check.py"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result["backend"] == backend
    assert result["steps"] == 2 and all(np.isfinite(result["fit_loss"]))
    assert {"loss", "va_loss", "au_loss", "expr_loss", "au_f1", "expr_f1"} <= set(result["evaluate"])
    assert all(np.isfinite(v) for v in result["evaluate"].values())
    assert result["shapes"] == {"va": [16, 2], "au": [16, 8], "expr": [16, 7]}
    assert result["keras_file_max_diff"] <= 1e-6
    assert result["tf_preset_max_diff"] <= TOLERANCE
    assert result["folded_max_diff"] <= TOLERANCE

    # And back: the preset saved under the other backend loads here, under TensorFlow, with its outputs.
    other = load_pretrained(str(tmp_path / "backend_preset"))
    expected = np.load(tmp_path / "backend_outputs.npz")
    out = other.predict(np.load(tmp_path / "backend_inputs.npy"), verbose=0)
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=TOLERANCE)


@pytest.mark.parametrize("backend", sorted(BACKEND_PACKAGES))
def test_train_command_runs_every_shipped_recipe_with_augmentation_on_backend(backend, tmp_path):
    """``keras-mtanet train`` as users run it: the default recipe and each shipped ``train.json``, augmentation
    on (random erasing and RandAugment in the default's case), shrunk to a tiny network (tests/backend_train.py)."""
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        pytest.skip(f"{BACKEND_PACKAGES[backend]} is not installed")
    from keras_mtanet.presets import registry

    shipped = {name for name, entry in registry.list_presets().items()
               if (Path(entry["folder"]) / "train.json").is_file()}
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, str(HERE / "backend_train.py"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    # Both FER+ presets' recipes are one recipe once shrunk (they differ in input size only).
    assert "default" in result["runs"] and len(result["runs"]) >= 3
    assert set(result["runs"]) - {"default"} <= shipped
    for name, outcome in result["runs"].items():
        assert outcome["code"] == 0, (name, run.stderr[-3000:])
        assert outcome["scores"] and all(np.isfinite(v) for v in outcome["scores"].values()), name
    assert "Your input ran out of data" not in run.stderr
    assert "Traceback" not in run.stderr
