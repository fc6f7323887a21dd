"""Every runtime gives the Keras model's outputs for any batch size; missing packages, bad arguments and the
export cache behave as documented."""

import builtins
import gc
import shutil

import numpy as np
import pytest

from keras_mtanet import MTANet, export
from keras_mtanet.errors import DataError, DependencyError, UsageError
from keras_mtanet.inference import export_cache, runtimes

EXTRAS = {"openvino": "openvino", "onnxruntime": "onnx"}


@pytest.fixture(scope="module")
def model():
    """A tiny MTANet whose batch norms hold non-trivial statistics, so the folded exports have work to do."""
    net = MTANet("se_resnet18", input_shape=(64, 64, 3), stack_blocks=(1, 1, 1, 1))
    rng = np.random.default_rng(7)
    for weight in net.weights:
        leaf = weight.path.rsplit("/", 1)[-1]
        shape = tuple(weight.shape)
        if leaf == "moving_variance":
            weight.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        elif leaf in ("moving_mean", "beta"):
            weight.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
        elif leaf == "gamma":
            weight.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
    return net


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(0, 255, (5, 64, 64, 3)).astype("float32")


@pytest.fixture(scope="module")
def expected(model, images):
    """The trainable model's own outputs (batch norms unfolded): the reference every runtime must give."""
    return model.predict_on_batch(images)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime_cache")


def _require(name):
    if not runtimes.installed(name):
        pytest.skip(f"{name} is not installed (pip install 'keras-mtanet[{EXTRAS[name]}]')")


@pytest.mark.parametrize("name", runtimes.RUNTIMES)
def test_float32_runtime_equals_keras_for_any_batch_size(name, model, images, expected, cache):
    if name in EXTRAS:
        _require(name)
    run = runtimes.load_runtime(model, name, cache_dir=cache)
    assert (run.name, run.precision) == (name, "float32")
    assert (run.path is None) == (name == "keras")
    for batch in (slice(0, 5), slice(0, 1), slice(1, 4), slice(0, 5), slice(0, 0)):  # sizes 5, 1, 3, 5, 0
        out = run(images[batch])
        assert sorted(out) == ["au", "expr", "va"]
        for key, width in (("va", 2), ("au", 8), ("expr", 7)):
            assert out[key].dtype == np.float32
            assert out[key].shape == (len(images[batch]), width)
            np.testing.assert_allclose(out[key], expected[key][batch], atol=1e-4, rtol=0, err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", ["keras", "openvino"])
def test_bfloat16_runtime_stays_close_to_float32(name, model, images, expected, cache):
    if name in EXTRAS:
        _require(name)
    run = runtimes.load_runtime(model, name, "bfloat16", cache_dir=cache)
    out = run(images)
    # bfloat16 keeps 8 significant bits: a few hundredths on these outputs, far from another prediction.
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=0.05, rtol=0, err_msg=key)
    np.testing.assert_allclose(out["expr"].sum(1), 1.0, atol=1e-3)
    if name == "keras":  # bfloat16 arithmetic in effect (OpenVINO uses it only where the CPU has it)
        assert np.abs(out["va"] - expected["va"]).max() > 1e-5


def test_tflite_int8_runtime_runs_a_smaller_file(model, images, expected, cache):
    run = runtimes.load_runtime(model, "tflite", "int8", cache_dir=cache, calibration=images)
    fp32 = runtimes.load_runtime(model, "tflite", cache_dir=cache)  # reused from the float32 test
    assert "int8" in run.path.parent.name
    assert run.path.stat().st_size < 0.4 * fp32.path.stat().st_size
    out = run(images[:3])
    assert out["expr"].shape == (3, 7)
    np.testing.assert_allclose(out["expr"].sum(1), 1.0, atol=0.02)
    np.testing.assert_allclose(out["au"], expected["au"][:3], atol=0.2)


def test_missing_package_is_a_one_line_dependency_error(model, monkeypatch):
    real_import = builtins.__import__

    def no_runtimes(name, *args, **kwargs):
        if name.split(".")[0] in ("openvino", "onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_runtimes)
    with pytest.raises(DependencyError) as error:
        runtimes.load_runtime(model, "openvino")
    assert str(error.value) == "the openvino runtime needs openvino: pip install 'keras-mtanet[openvino]'"
    with pytest.raises(DependencyError, match=r"^the onnxruntime runtime needs onnxruntime: "
                                              r"pip install 'keras-mtanet\[onnx\]'$"):
        runtimes.load_runtime(model, "onnxruntime")
    with pytest.raises(DependencyError, match=r"pip install 'keras-mtanet\[openvino\]'"):
        export.export_openvino(model, "unused.xml")


def test_best_runtime_is_the_fastest_installed_one(monkeypatch):
    present = set()
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda module: object() if module in present else None)
    assert runtimes.available() == ("keras", "tflite")  # TensorFlow's own: always there
    assert runtimes.best_runtime() == "keras"
    present.update({"onnxruntime", "tf2onnx"})
    assert runtimes.available() == ("keras", "tflite", "onnxruntime")
    assert runtimes.best_runtime() == "keras"
    present.add("openvino")
    assert runtimes.available() == runtimes.RUNTIMES
    assert runtimes.best_runtime() == "openvino"
    present.discard("tf2onnx")  # ONNX Runtime alone cannot run a Keras model: the export needs tf2onnx
    assert not runtimes.installed("onnxruntime")


def test_usage_errors_name_the_problem(model, images):
    with pytest.raises(UsageError, match=r"^unknown runtime 'tensorrt'; choose one of keras, openvino, tflite, "
                                         r"onnxruntime$"):
        runtimes.load_runtime(model, "tensorrt")
    with pytest.raises(UsageError, match=r"^the onnxruntime runtime runs in float32, not 'int8'$"):
        runtimes.load_runtime(model, "onnxruntime", "int8")
    run = runtimes.load_runtime(model, "keras")
    with pytest.raises(UsageError, match=r"takes \(N, 64, 64, 3\) images, got shape \(64, 64, 3\)"):
        run(images[0])


def test_export_cache_reuses_files_and_never_replaces_any(model, cache, monkeypatch):
    user_file = cache / "notes.txt"
    user_file.write_text("mine")
    first = runtimes.load_runtime(model, "tflite", cache_dir=cache)
    exported = first.path.read_bytes()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of reusing the cached file")

    monkeypatch.setattr(export, "export_tflite", no_export)
    again = runtimes.load_runtime(model, "tflite", cache_dir=cache)
    assert again.path == first.path and again.path.read_bytes() == exported
    assert user_file.read_text() == "mine"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no staging folder left

    # Another model (one weight changed) gets another name, so a stale export is never picked up.
    digest = export_cache.model_digest(model, "tflite")
    kernel = next(w for w in model.weights if w.path.endswith("kernel"))
    saved = kernel.numpy()
    kernel.assign(saved + 1e-3)
    try:
        assert export_cache.model_digest(model, "tflite") != digest
    finally:
        kernel.assign(saved)
    assert export_cache.model_digest(model, "tflite") == digest
    assert export_cache.model_digest(model, "tflite", int8=True) != digest

    with pytest.raises(DataError, match=r"notes.txt: is not a folder"):
        runtimes.load_runtime(model, "tflite", cache_dir=user_file)


def test_the_default_cache_keeps_the_most_recently_used_exports(model, cache, monkeypatch, tmp_path):
    import os
    import re

    root = tmp_path / "default"
    monkeypatch.setenv(export_cache.CACHE_VARIABLE, str(root))
    folder = export_cache.default_cache_dir()
    folder.mkdir(parents=True)
    names = [f"mtanet-tflite-{i:020x}" for i in range(4)]
    for age, name in enumerate(names):  # names[0] is the newest, names[3] the oldest
        (folder / name).mkdir()
        (folder / name / "model.tflite").write_bytes(b"x")
        os.utime(folder / name, (1e9 - age * 100, 1e9 - age * 100))
    mine = tmp_path / "mine"
    mine.mkdir()
    (folder / "mtanet-onnx-ffffffffffffffffffff").symlink_to(mine)  # a link named like an export
    (folder / "mtanet-notes").mkdir()                                # a folder not named like one
    (folder / "notes.txt").write_text("mine")
    removed = export_cache.prune_cache(folder, keep=2)
    assert sorted(p.name for p in removed) == sorted(names[2:])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        names[:2] + ["mtanet-onnx-ffffffffffffffffffff", "mtanet-notes", "notes.txt"])
    assert mine.is_dir() and export_cache.prune_cache(folder, keep=0, spare=folder / names[1]) == [folder / names[0]]
    # One used within the grace period (another process may be loading it) stays; nothing half-removed is left.
    os.utime(folder / names[1])
    assert export_cache.prune_cache(folder, keep=0) == [] and (folder / names[1]).is_dir()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    for format in export.SUFFIXES:  # the pattern covers every name cached_export gives
        assert export_cache._EXPORT_NAME.fullmatch(f"mtanet-{format}-{'ab' * 10}")
        assert export_cache._EXPORT_NAME.fullmatch(f"mtanet-{format}-int8-{'ab' * 10}")
    os.utime(folder / names[1], (1e9, 1e9))
    # Temporary folders of an export or a removal cut short by a kill go once they are older than the grace.
    stale, fresh = folder / f".{names[2]}.k1ll3d_x.tmp", folder / f".{names[3]}.abcd1234.tmp"
    for path in (stale, fresh):
        path.mkdir()
        (path / "model.tflite").write_bytes(b"half")
    os.utime(stale, (1e9, 1e9))
    assert export_cache.prune_cache(folder, keep=5) == [stale] and fresh.is_dir()
    shutil.rmtree(fresh)

    # A new export into the default cache prunes it; reusing an export renews it; another folder is not pruned.
    monkeypatch.setattr(export_cache, "MAX_CACHED_EXPORTS", 1)
    (folder / names[1]).rename(folder / names[3])  # an old export, still there
    os.utime(folder / names[3], (1e9, 1e9))
    cached = export_cache.cached_export(model, "tflite", folder)
    assert re.fullmatch(r"mtanet-tflite-[0-9a-f]{20}", cached.parent.name)
    assert not (folder / names[3]).exists() and cached.is_file()
    os.utime(cached.parent, (1e9, 1e9))
    assert export_cache.cached_export(model, "tflite", folder) == cached and cached.parent.stat().st_mtime > 1e9
    # A new export into another folder leaves its old exports alone (copied: the export itself is tested above).
    monkeypatch.setattr(export, "export_tflite", lambda model, path, **kwargs: shutil.copy(cached, path))
    other = tmp_path / "other"
    (other / names[0]).mkdir(parents=True)
    os.utime(other / names[0], (1e9, 1e9))
    made = export_cache.cached_export(model, "tflite", other)
    assert made.is_file() and made.parent.parent == other and (other / names[0]).is_dir()


def test_without_cache_dir_the_export_goes_with_the_runtime(model, images, expected, cache, monkeypatch):
    cached = runtimes.load_runtime(model, "tflite", cache_dir=cache).path
    # The export itself is tested above: copy it rather than convert again.
    monkeypatch.setattr(export, "export_tflite", lambda model, path, **kwargs: shutil.copy(cached, path))
    run = runtimes.load_runtime(model, "tflite")
    folder = run.path.parent.parent
    assert folder != cache and folder.is_dir()
    np.testing.assert_allclose(run(images[:2])["va"], expected["va"][:2], atol=1e-4)
    del run
    gc.collect()
    assert not folder.exists()


def test_openvino_export_format_is_atomic_and_refuses_to_overwrite(model, images, expected, tmp_path,
                                                                   monkeypatch):
    _require("openvino")
    import openvino as ov

    target = tmp_path / "m.xml"
    assert export.export(model, target, "openvino") == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    compiled = ov.Core().compile_model(str(target), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(images)
    np.testing.assert_allclose(result[compiled.output("expr")], expected["expr"], atol=1e-4)

    with pytest.raises(DataError, match=r"m.xml: already exists"):
        export.export(model, target, "openvino")
    user_weights = tmp_path / "other.bin"
    user_weights.write_bytes(b"not ours")
    with pytest.raises(DataError, match=r"other.bin: already exists"):
        export.export(model, tmp_path / "other.xml", "openvino")
    assert user_weights.read_bytes() == b"not ours" and not (tmp_path / "other.xml").exists()
    with pytest.raises(DataError, match=r"m.onnx: an OpenVINO export is a .xml file"):
        export.export(model, tmp_path / "m.onnx", "openvino")

    def new_export(model, path):  # stands in for a second conversion: the replacement is what is tested
        path.write_text("new graph")
        path.with_suffix(".bin").write_text("new weights")

    monkeypatch.setattr(export, "export_openvino", new_export)
    export.export(model, target, "openvino", overwrite=True)
    assert (target.read_text(), (tmp_path / "m.bin").read_text()) == ("new graph", "new weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "other.bin"]


def test_default_runtime_follows_the_variable_then_the_fastest_installed(monkeypatch, tmp_path):
    monkeypatch.setenv(runtimes.RUNTIME_VARIABLE, "tflite")
    assert runtimes.default_runtime() == "tflite"
    monkeypatch.setenv(runtimes.RUNTIME_VARIABLE, "magic")
    with pytest.raises(UsageError, match="KERAS_MTANET_RUNTIME='magic'"):
        runtimes.default_runtime()
    monkeypatch.delenv(runtimes.RUNTIME_VARIABLE)
    monkeypatch.setattr(runtimes, "installed", lambda name: name in ("keras", "tflite", "openvino"))
    assert runtimes.default_runtime() == "openvino"
    assert runtimes.default_runtime("bfloat16") == "openvino"
    assert runtimes.default_runtime("int8") == "tflite"  # the first installed runtime offering int8
    monkeypatch.setattr(runtimes, "installed", lambda name: name == "keras")
    assert runtimes.default_runtime() == "keras"
    monkeypatch.setenv(export_cache.CACHE_VARIABLE, str(tmp_path))
    assert export_cache.default_cache_dir() == tmp_path / "runtimes"
    monkeypatch.delenv(export_cache.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert export_cache.default_cache_dir() == tmp_path / "xdg" / "keras_mtanet" / "runtimes"


def test_default_runtime_is_keras_off_tensorflow(monkeypatch):
    import keras

    monkeypatch.delenv(runtimes.RUNTIME_VARIABLE, raising=False)
    monkeypatch.setattr(runtimes, "installed", lambda name: True)
    assert runtimes.default_runtime() == "openvino"
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")  # exports go through TensorFlow
    assert runtimes.default_runtime() == "keras"


def test_an_unwritable_default_cache_falls_back_to_one_run(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(export_cache.CACHE_VARIABLE, str(blocker))  # the cache would go under a file
    assert export_cache.usable_default_cache() is None
    assert "exported models are kept for this run only" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"
    monkeypatch.setenv(export_cache.CACHE_VARIABLE, str(tmp_path / "ok"))
    assert export_cache.usable_default_cache() == tmp_path / "ok" / "runtimes"
    assert (tmp_path / "ok" / "runtimes").is_dir()


def test_a_damaged_cached_export_is_made_again(model, tmp_path, monkeypatch):
    made = []

    def fake_export(model, path, **kwargs):  # the two files of an OpenVINO IR, without OpenVINO
        made.append(path)
        path.write_text("<net>graph</net>\n")
        path.with_suffix(".bin").write_bytes(b"weights" * 100)

    monkeypatch.setattr(export, "export_openvino", fake_export)
    first = export_cache.cached_export(model, "openvino", tmp_path)
    assert export_cache.cached_export(model, "openvino", tmp_path) == first and len(made) == 1  # reused
    first.write_text("<net>gra")  # truncated, as by a full disk or a kill while copying the cache
    again = export_cache.cached_export(model, "openvino", tmp_path)
    assert again == first and len(made) == 2 and again.read_text() == "<net>graph</net>\n"
    assert export_cache.verify_export(again.parent)
    again.with_suffix(".bin").write_bytes(b"weights" * 99)  # the weights file, too
    assert export_cache.cached_export(model, "openvino", tmp_path) == first and len(made) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.parent.name]  # nothing else left behind


def test_a_truncated_openvino_export_in_the_cache_still_predicts(model, images, expected, tmp_path):
    _require("openvino")
    path = runtimes.load_runtime(model, "openvino", cache_dir=tmp_path).path
    path.write_bytes(path.read_bytes()[:200])
    run = runtimes.load_runtime(model, "openvino", cache_dir=tmp_path)
    np.testing.assert_allclose(run(images)["va"], expected["va"], atol=1e-4)
