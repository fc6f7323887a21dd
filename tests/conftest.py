"""Shared fixtures: tiny model configs so the suite runs in minutes on 2 CPU cores, and the one round-trip helper
for configs and presets (keras-hub's ``run_serialization_test``)."""

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# huggingface_hub reads these at import time: no Xet (the test Hub speaks LFS), no telemetry, online.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
# Predictors in tests run Keras unless a test names a runtime (the default would export to OpenVINO where installed).
os.environ["KERAS_MTANET_RUNTIME"] = "keras"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TINY = {"backbone": "se_resnet18", "input_shape": (32, 32, 3), "stack_blocks": (1, 1, 1, 1), "width": 0.25,
        "head_filters": 32}


def tiny_model(**overrides):
    from keras_mtanet import MTANet

    return MTANet(**{**TINY, **overrides})


def assert_outputs_equal(a, b, atol=0.0):
    """Two models' outputs (arrays or dicts of arrays) are equal (to ``atol``)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def assert_round_trip(obj, inputs=None, folder=None, atol=0.0):
    """The one round-trip check for configs and presets.

    ``type(obj).from_config`` of its config sent through JSON gives the same config, and Keras's own
    serialisation gives the same class and config; with ``inputs``, the clone (given ``obj``'s weights) predicts
    the same; with ``folder``, ``obj`` (an ``MTANet``) saved there as a preset loads back, through
    ``MTANet.from_preset``, with the same config, converter and predictions. Returns the clone (or the loaded
    preset)."""
    import json

    import keras

    config = obj.get_config()
    clone = type(obj).from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj) and restored.get_config() == config
    if inputs is not None and obj.weights:
        clone.set_weights(obj.get_weights())
        assert_outputs_equal(obj.predict(inputs, verbose=0), clone.predict(inputs, verbose=0), atol)
    if folder is None:
        return clone
    from keras_mtanet.presets import card
    from keras_mtanet.presets import folder as preset_folder

    meta = preset_folder.preset_metadata(obj, "a round trip (test)")
    preset_folder.save_preset(obj, folder, meta, card.make_model_card(meta, "t"))
    loaded = type(obj).from_preset(str(folder))
    assert type(loaded) is type(obj) and loaded.get_config() == config
    assert loaded.preprocessor.get_config() == obj.preprocessor.get_config()
    if inputs is not None:
        assert_outputs_equal(obj.predict(inputs, verbose=0), loaded.predict(inputs, verbose=0), atol)
    return loaded


def partial_labels(n, rng, va_missing=0.2, au_missing=0.3, expr_missing=0.4):
    """Random targets with Aff-Wild2's unannotated codes on a random share of rows per task."""
    y = {
        "va": rng.uniform(-1, 1, (n, 2)).astype("float32"),
        "au": rng.integers(0, 2, (n, 8)).astype("float32"),
        "expr": rng.integers(0, 7, (n,)).astype("int32"),
    }
    y["va"][rng.random(n) < va_missing] = -5.0
    y["au"][rng.random(n) < au_missing] = -1.0
    y["expr"][rng.random(n) < expr_missing] = -1
    return y


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# The astronaut's face in scikit-image's astronaut() (512 x 512), hand-read.
ASTRONAUT_BOX = (182, 64, 83, 107)


@pytest.fixture(scope="module")
def photo():
    """scikit-image's astronaut() photograph (public domain), RGB uint8."""
    from skimage import data as skdata

    return skdata.astronaut()


@pytest.fixture(scope="module")
def preset():
    """The embedded synthetic-face preset, loaded once per module (tests that feed it synthetic faces)."""
    from keras_mtanet import load_pretrained
    from keras_mtanet.presets import registry

    return load_pretrained(registry.SYNTHETIC_PRESET)


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder nothing can be created in: mode 0555 and, where the tests run as root (who writes there anyway),
    ``os.open`` (for writing) and ``os.mkdir`` refusing it with EROFS, as on a read-only mount."""
    import errno

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(path):
            path = os.path.abspath(os.fsdecode(path))
            if path == str(folder) or path.startswith(str(folder) + os.sep):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

        def open_(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            refuse(path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "mkdir", mkdir)
    yield folder
    folder.chmod(0o755)


# Helpers of the safety cases, shared by the test folders.

def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("keras-mtanet: error:")]


def fifo_at(path):
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def leftovers(folder):
    """Temporary files the writers left behind."""
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command gets as far as loading a model (its checks must come first)."""
    import keras_mtanet
    from keras_mtanet.inference import predictor
    from keras_mtanet.model import task

    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(task, "load_pretrained", boom)
    monkeypatch.setattr(keras_mtanet, "load_pretrained", boom)
    monkeypatch.setattr(predictor, "Predictor", boom)


def one_line(info):
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def refused_without_blocking(fifo, call, seconds=20):
    """Run ``call`` in a thread; return the exception it raised. Fails the test if ``call`` opened the FIFO and
    waited on it (which a writer opening the other end then ends)."""
    import os
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: B902  (whatever it raised is the result)
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader waiting on it gets end of file
        except OSError:
            pass
        thread.join(5)
        pytest.fail(f"{fifo}: opened and waited on instead of refused")
    return outcome.get("error")


def write_image(path, rgb):
    import cv2

    ok, data = cv2.imencode(os.path.splitext(os.fsencode(path))[1].decode(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    with open(path, "wb") as f:
        f.write(data.tobytes())


def make_preset(folder, **model_overrides):
    from keras_mtanet.presets import card
    from keras_mtanet.presets import folder as preset_folder

    model = tiny_model(**model_overrides)
    meta = preset_folder.preset_metadata(model, "nothing (test)")
    return preset_folder.save_preset(model, folder, meta, card.model_card_text(meta, "t"))


@pytest.fixture(scope="module")
def server():
    from hub_server import HubServer

    srv = HubServer().start()
    yield srv
    srv.stop()


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:  # strict UTF-8
        return list(csv.DictReader(f))
