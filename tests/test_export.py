"""Exported SavedModel, TFLite and ONNX files give the Keras model's outputs."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_model

from keras_mtanet import abaw_scores, export, load_pretrained
from keras_mtanet.cli import main
from keras_mtanet.data import synthetic
from keras_mtanet.errors import DataError
from keras_mtanet.inference import runtimes
from keras_mtanet.presets import registry


@pytest.fixture(autouse=True)
def synthetic_default(monkeypatch):
    """These tests feed synthetic faces: the CLI's default preset is the synthetic one here."""
    from keras_mtanet.presets import registry

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)


@pytest.fixture(scope="module")
def preset():
    return load_pretrained(registry.SYNTHETIC_PRESET)


@pytest.fixture(scope="module")
def faces():
    images, labels = synthetic.generate(48, size=64, seed=4242)
    return images.astype("float32"), labels


def test_savedmodel_serving_signature_matches_keras(preset, faces, tmp_path, capsys):
    images, _ = faces
    assert main(["export", "--format", "savedmodel", "--output", str(tmp_path / "sm")]) == 0
    assert "savedmodel: " in capsys.readouterr().out
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image"]
    out = serve(image=tf.constant(images[:8]))
    expected = preset.predict_on_batch(images[:8])
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key].numpy(), expected[key], atol=1e-4)


def test_tflite_float32_matches_keras_and_int8_is_close(preset, faces, tmp_path):
    images, labels = faces
    expected = preset.predict_on_batch(images)
    assert main(["export", "--format", "tflite", "--output", str(tmp_path / "m.tflite")]) == 0
    out = runtimes.TFLiteRunner(tmp_path / "m.tflite")(images)
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-4)
    assert main(["export", "--format", "tflite", "--int8", "--output", str(tmp_path / "m8.tflite")]) == 0
    assert (tmp_path / "m8.tflite").stat().st_size < 0.4 * (tmp_path / "m.tflite").stat().st_size
    quantized = runtimes.TFLiteRunner(tmp_path / "m8.tflite")(images)
    np.testing.assert_allclose(quantized["expr"].sum(1), 1.0, atol=0.02)
    # int8 moves the scores a little on faces it was not calibrated on (figures: reduced_precision.py).
    drop = {k: abaw_scores(labels, expected)[k] - abaw_scores(labels, quantized)[k]
            for k in ("va_score", "expr_score", "au_score")}
    assert all(abs(d) < 0.1 for d in drop.values()), drop


def test_onnx_matches_keras(preset, faces, tmp_path):
    import onnxruntime as ort  # the [onnx] extra; in the test extras

    images, _ = faces
    assert main(["export", "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, {"image": images[:8]})))
    expected = preset.predict_on_batch(images[:8])
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-4)


def test_export_usage_errors(tmp_path, capsys):
    assert main(["export", "--format", "onnx", "--int8", "--output", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == "keras-mtanet: error: --int8 applies to --format tflite only"
    assert main(["export", "--format", "tflite", "--output", str(tmp_path / "no" / "m.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def write_faces(folder, images):
    import cv2

    folder.mkdir()
    for i, image in enumerate(images):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_RGB2BGR))


def test_int8_calibration_reads_the_given_images_and_stays_close_on_them(preset, tmp_path, capsys, monkeypatch):
    images, _ = synthetic.generate(24, size=64, seed=777)  # other faces than the default calibration's
    write_faces(tmp_path / "calib", images)
    seen = {}
    real = export.export_tflite

    def spy(model, path, int8=False, calibration=None, **kwargs):
        seen["calibration"] = np.array(calibration)
        return real(model, path, int8=int8, calibration=calibration, **kwargs)

    monkeypatch.setattr(export, "export_tflite", spy)
    assert main(["export", "--format", "tflite", "--int8", "--calibration", str(tmp_path / "calib"),
                 "--output", str(tmp_path / "m8.tflite")]) == 0
    assert "generated synthetic faces" not in capsys.readouterr().out
    # The converter got exactly the folder's images (PNG is lossless, and they are at the model's size).
    np.testing.assert_array_equal(seen["calibration"], images.astype(np.float32))
    # On the images it was calibrated on, int8 stays near float32. Measured (synthetic preset, 24 faces): largest
    # difference 0.07 (va), 0.06 (au), 0.07 (expr), mean 0.022 / 0.008 / 0.005; calibrating on black images
    # instead gives a mean va difference of 0.25, so these bounds tell good calibration from none.
    expected = preset.predict_on_batch(images.astype(np.float32))
    quantized = runtimes.TFLiteRunner(tmp_path / "m8.tflite")(images)
    for key, mean_bound in (("va", 0.06), ("au", 0.03), ("expr", 0.03)):
        difference = np.abs(quantized[key] - expected[key])
        assert difference.max() < 0.15 and difference.mean() < mean_bound, (key, difference.max(),
                                                                              difference.mean())


def test_calibration_folder_errors_are_one_line_naming_the_file(tmp_path, capsys):
    images, _ = synthetic.generate(2, size=64, seed=5)
    write_faces(tmp_path / "calib", images)
    broken = tmp_path / "calib" / "001.png"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    args = ["export", "--format", "tflite", "--int8", "--output", str(tmp_path / "m8.tflite"), "--calibration"]
    assert main(args + [str(tmp_path / "calib")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-mtanet: error: ") and str(broken) in err, err
    assert main(args + [str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'missing'}: no calibration images" in err, err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(args + [str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'}: no calibration images" in capsys.readouterr().err
    assert not (tmp_path / "m8.tflite").exists()


@pytest.mark.safety
def test_export_never_replaces_existing_user_files(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(folder)
    for output in (str(folder), "."):
        assert main(["export", "--format", "savedmodel", "--output", output]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("already exists; choose another --output or pass --overwrite to replace it")
    (tmp_path / "old.tflite").write_bytes(b"previous export")
    assert main(["export", "--format", "tflite", "--output", str(tmp_path / "old.tflite")]) == 2
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "old.tflite").read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "old.tflite"]  # no leftovers


@pytest.mark.safety
def test_export_overwrite_swaps_in_a_complete_export(tmp_path):
    model = tiny_model()
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous export")
    export.export(model, target, "tflite", overwrite=True)
    assert runtimes.TFLiteRunner(target)(np.zeros((1, 32, 32, 3), np.float32))["va"].shape == (1, 2)
    saved = tmp_path / "sm"
    saved.mkdir()
    (saved / "old.txt").write_text("old export")
    with pytest.raises(DataError, match="already exists"):
        export.export(model, saved, "savedmodel")
    export.export(model, saved, "savedmodel", overwrite=True)
    assert (saved / "saved_model.pb").exists() and not (saved / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "sm"]  # no temporary folder left


@pytest.mark.safety
def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous export")

    def fail(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "export_tflite", fail)
    with pytest.raises(RuntimeError):
        export.export(tiny_model(), target, "tflite", overwrite=True)
    assert target.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


@pytest.mark.safety
def test_export_overwrite_replaces_a_file_with_a_savedmodel_folder(tmp_path):
    target = tmp_path / "model"
    target.write_text("an old file")
    export.export(tiny_model(), target, "savedmodel", overwrite=True)
    assert (target / "saved_model.pb").exists() and [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.safety
def test_export_output_is_resolved_before_staging(tmp_path):
    target = tmp_path / "a"
    (target / "sub").mkdir(parents=True)
    # "a/sub/.." is a/: the export replaces a/ (asked with --overwrite), nothing is left inside a/sub/.
    export.export(tiny_model(), target / "sub" / "..", "savedmodel", overwrite=True)
    assert (target / "saved_model.pb").is_file() and not (target / "sub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging folder left


@pytest.mark.safety
def test_export_never_replaces_the_current_folder(tmp_path, capsys, monkeypatch):
    # The current folder, or one above it, cannot be replaced: one line, exit 2, nothing touched.
    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)
    target = tmp_path / "a"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    monkeypatch.chdir(target / "sub")
    for output, what in ((".", "the current folder"), ("..", "a folder above the current one")):
        assert main(["export", "--format", "savedmodel", "--output", output, "--overwrite"]) == 2
        shown = target / "sub" if output == "." else target
        assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {shown}: is {what}; an export cannot "
                                                   "replace the folder it runs in (choose another --output)")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt", "sub"] and not any((target / "sub").iterdir())


@pytest.mark.safety
@pytest.mark.parametrize("kind", ["os", "tensorflow"])
def test_an_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, kind):
    import errno

    import tensorflow as tf

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)

    def full(model, path):
        (Path(path) / "variables").mkdir(parents=True)
        (Path(path) / "variables" / "variables.data").write_bytes(b"half")
        if kind == "os":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables/variables.data; No space left on "
                                               "device")

    monkeypatch.setattr(export, "export_savedmodel", full)
    assert main(["export", "--format", "savedmodel", "--output", str(tmp_path / "sm")]) == 2
    assert capsys.readouterr().err == (f"keras-mtanet: error: {tmp_path / 'sm'}: cannot write (No space left on "
                                       "device)\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.safety
def test_exports_stage_beside_the_output_and_remove_stale_staging_folders(tmp_path, monkeypatch):
    import os
    import re
    import subprocess
    import sys
    import tempfile

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that no longer runs
    old = 1_000_000_000.0

    def staging(name, pid, marker=True):
        folder = tmp_path / f".m.tflite.export-{pid}-abcd_123.tmp"
        if name:
            folder = tmp_path / name
        (folder / "saved").mkdir(parents=True)
        (folder / "saved" / "saved_model.pb").write_bytes(b"x" * 1000)
        if marker:
            (folder / ".keras_mtanet_export").write_text("")  # the marker export leaves
            os.utime(folder / ".keras_mtanet_export", (old, old))
        return folder

    stale = staging(None, gone)
    alive = staging(f".m.tflite.export-{os.getpid()}-abcd_123.tmp", os.getpid())
    unmarked = staging(f".m.tflite.export-{gone}-zzzz_999.tmp", gone, marker=False)
    lookalike = staging(f".mine.export-{gone}-x.tmp", gone)
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    seen = []
    real = export.export_savedmodel
    monkeypatch.setattr(export, "export_savedmodel", lambda model, path: seen.append(Path(path)) or real(model, path))
    export.export(tiny_model(), tmp_path / "m.tflite", "tflite")
    assert not stale.exists() and alive.exists() and unmarked.exists() and lookalike.exists()
    # The SavedModel the TFLite converter reads was staged beside the output, never in the system temp folder.
    assert len(seen) == 1 and seen[0].parent.parent.parent == tmp_path
    assert not [p for p in system_temp.iterdir() if not p.name.startswith("__autograph_generated_file")]
    assert re.fullmatch(r"\.m\.tflite\.export-[0-9]+-[a-z0-9_]{8}\.tmp", seen[0].parent.parent.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.tflite", "system-temp", alive.name, unmarked.name, lookalike.name])


@pytest.mark.safety
def test_an_export_stopped_by_sigterm_leaves_no_staging_folder(tmp_path, capsys, monkeypatch):
    from keras_mtanet import cli

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)

    def stopped(model, path):
        (Path(path) / "variables").mkdir(parents=True)
        (Path(path) / "variables" / "variables.data").write_bytes(b"half")
        raise cli.Terminated()  # what the CLI's SIGTERM handler raises

    monkeypatch.setattr(export, "export_savedmodel", stopped)
    assert main(["export", "--format", "savedmodel", "--output", str(tmp_path / "sm")]) == 143
    assert capsys.readouterr().err == "keras-mtanet: terminated\n" and list(tmp_path.iterdir()) == []
