"""Exported SavedModel, TFLite and ONNX files give the Keras model's outputs."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtanet import abaw_scores, export, load_pretrained
from keras_mtanet.cli import main
from keras_mtanet.data import synthetic
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
    out = export.TFLiteRunner(tmp_path / "m.tflite")(images)
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-4)
    assert main(["export", "--format", "tflite", "--int8", "--output", str(tmp_path / "m8.tflite")]) == 0
    assert (tmp_path / "m8.tflite").stat().st_size < 0.4 * (tmp_path / "m.tflite").stat().st_size
    quantized = export.TFLiteRunner(tmp_path / "m8.tflite")(images)
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
    quantized = export.TFLiteRunner(tmp_path / "m8.tflite")(images)
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
