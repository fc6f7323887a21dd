"""Prediction through a choice of runtime: Keras itself, or an exported form run by OpenVINO, TFLite or ONNX
Runtime, all with the same call and the same outputs.

``load_runtime(model, "openvino")`` exports the model's batch-norm-folded inference form (``keras_mtanet.export``)
into a cache folder and loads it; the returned runtime maps a float32 NHWC batch of RGB faces in [0, 255], of
any size, to ``{"va": (N, 2), "au": (N, 8), "expr": (N, 7)}`` float32 arrays, as ``MTANet.predict_on_batch``.
In float32 every runtime gives Keras's outputs to 1e-4 (``tests/inference/test_runtimes.py``); reduced precisions
(``"bfloat16"``, ``"int8"``) trade a little accuracy for speed, measured by ``benchmarks/reduced_precision.py``.

Exports are kept in a cache folder (``keras_mtanet.inference.export_cache``); without ``cache_dir`` they go to a
temporary folder that is removed with the runtime.

Example:
    >>> from keras_mtanet.inference import runtimes
    >>> run = runtimes.load_runtime(model, runtimes.best_runtime())
    >>> out = run(images)  # (N, 112, 112, 3) float32 in [0, 255]
    >>> out["expr"].shape
    (N, 7)
"""

import importlib.util
import os
import shutil
import tempfile
import weakref

import numpy as np

from keras_mtanet import files
from keras_mtanet.errors import DataError, DependencyError, UsageError, first_line
from keras_mtanet.inference import export_cache
from keras_mtanet.labels import TASKS

RUNTIMES = ("keras", "openvino", "tflite", "onnxruntime")
PRECISIONS = {"keras": ("float32", "bfloat16"), "openvino": ("float32", "bfloat16"),
              "tflite": ("float32", "int8"), "onnxruntime": ("float32",)}
# Fastest first among the runtimes whose float32 outputs equal Keras's (benchmarks/compare_pytorch.py, SE-ResNet-50,
# 112 px, batch 32, 2 cores): OpenVINO ahead of Keras/TensorFlow; TFLite (XNNPACK) and ONNX Runtime behind it.
DEFAULT_ORDER = ("openvino", "keras", "tflite", "onnxruntime")
# runtime -> (modules it imports, the extra that installs them)
_NEEDS = {"keras": ((), None), "tflite": ((), None), "openvino": (("openvino",), "openvino"),
          "onnxruntime": (("onnxruntime", "tf2onnx"), "onnx")}


def installed(name):
    """Whether the packages runtime ``name`` needs can be imported (checked without importing them)."""
    _check_name(name)
    return all(importlib.util.find_spec(module) is not None for module in _NEEDS[name][0])


def available():
    """The installed runtimes, in ``RUNTIMES`` order."""
    return tuple(name for name in RUNTIMES if installed(name))


def best_runtime(precision="float32"):
    """The fastest installed runtime whose float32 outputs equal Keras's (``DEFAULT_ORDER``) and that offers
    ``precision``; ``"keras"`` at worst, which is always there."""
    return next((name for name in DEFAULT_ORDER if installed(name) and precision in PRECISIONS[name]), "keras")


RUNTIME_VARIABLE = "KERAS_MTANET_RUNTIME"  # the runtime Predictor and predict use when none is given


def default_runtime(precision="float32"):
    """The runtime used when none is named: ``$KERAS_MTANET_RUNTIME`` if set; on the TensorFlow backend the first
    installed runtime of ``DEFAULT_ORDER`` that offers ``precision``; on other backends ``"keras"``."""
    chosen = os.environ.get(RUNTIME_VARIABLE)
    if chosen:
        if chosen not in RUNTIMES:
            raise UsageError(f"{RUNTIME_VARIABLE}={chosen!r}: choose one of {', '.join(RUNTIMES)}")
        return chosen
    import keras

    if keras.backend.backend() != "tensorflow":  # the exports are made through TensorFlow (see export.py)
        return "keras"
    return best_runtime(precision)


def load_runtime(model, name, precision="float32", cache_dir=None, calibration=None):
    """A callable running ``model`` through runtime ``name`` (one of ``RUNTIMES``).

    Args:
        model: an ``MTANet`` (or any Keras model with one ``image`` input and va/au/expr outputs).
        name: ``"keras"``, ``"openvino"``, ``"tflite"`` or ``"onnxruntime"``.
        precision: one of ``PRECISIONS[name]``: ``"float32"``; ``"bfloat16"`` (Keras, OpenVINO: bfloat16 compute,
            fast on CPUs with AVX-512 BF16 / AMX); ``"int8"`` (TFLite: int8 weights and activations).
        cache_dir: folder for the exported files, created if missing and reused across calls (default: a
            temporary folder removed with the runtime).
        calibration: images (N, H, W, 3, 0-255) calibrating int8 activation ranges (default: the package's
            synthetic faces; see ``export_cache.calibration_images``).

    Returns:
        A runtime: ``runtime(batch)`` -> ``{"va", "au", "expr"}`` float32 arrays; ``.name``, ``.precision`` and
        ``.path`` (the exported file, None for Keras).

    Raises:
        UsageError: an unknown runtime or a precision it does not offer.
        DependencyError: the runtime's package is not installed (the message says which extra to install).
    """
    _check_name(name)
    if precision not in PRECISIONS[name]:
        raise UsageError(f"the {name} runtime runs in {' or '.join(PRECISIONS[name])}, not {precision!r}")
    modules, extra = _NEEDS[name]
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise DependencyError(f"the {name} runtime needs {module}: pip install 'keras-mtanet[{extra}]'") from None
    if name == "keras":
        return KerasRuntime(model, precision)
    return {"openvino": OpenVINORuntime, "tflite": TFLiteRuntime, "onnxruntime": ONNXRuntime}[name](
        model, precision, cache_dir, calibration)


def _check_name(name):
    if name not in RUNTIMES:
        raise UsageError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")


class Runtime:
    """Shared call: checks the batch, runs it, returns float32 arrays by task name."""

    name = None
    path = None

    def __init__(self, model, precision):
        self.precision = precision
        self.input_shape = tuple(int(d) for d in model.input_shape[1:])
        self._widths = {key: int(model.output[key].shape[-1]) for key in TASKS} \
            if isinstance(model.output, dict) else None

    def __call__(self, batch):
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise UsageError(f"the {self.name} runtime takes (N, {', '.join(map(str, self.input_shape))}) images, "
                             f"got shape {x.shape}")
        if len(x) == 0 and self._widths is not None:  # some runtimes reject an empty batch
            return {key: np.zeros((0, width), np.float32) for key, width in self._widths.items()}
        out = self._run(x)
        return {key: np.asarray(out[key], dtype=np.float32) for key in TASKS}

    def _run(self, x):
        raise NotImplementedError

    def __repr__(self):
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"<{type(self).__name__} name={self.name!r} precision={self.precision!r}{where}>"


class KerasRuntime(Runtime):
    """The model's batch-norm-folded ``inference_model(precision)`` under Keras's backend."""

    name = "keras"

    def __init__(self, model, precision="float32"):
        super().__init__(model, precision)
        if hasattr(model, "inference_model"):
            self.model = model.inference_model(precision)
        elif precision == "float32":
            self.model = model
        else:
            raise UsageError(f"{precision} needs an MTANet (its inference_model); this model runs in float32 only")
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # One graph for every batch size: predict_on_batch would trace again for each new size.
            spec = tf.TensorSpec((None,) + self.input_shape, tf.float32)
            forward = tf.function(lambda images: self.model(images, training=False), input_signature=[spec])
            self._forward = lambda x: {key: value.numpy() for key, value in forward(x).items()}
        else:
            self._forward = self.model.predict_on_batch

    def _run(self, x):
        return self._forward(x)


class _Exported(Runtime):
    """A runtime over a file exported into the cache folder by ``keras_mtanet.export``."""

    format = None   # the export format
    suffix = None   # the exported file's suffix

    def __init__(self, model, precision, cache_dir, calibration):
        super().__init__(model, precision)
        if cache_dir is None:
            cache_dir = tempfile.mkdtemp(prefix="keras_mtanet-runtime-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, cache_dir, ignore_errors=True)
        self.path = export_cache.cached_export(model, self.format, cache_dir, int8=precision == "int8",
                                               calibration=calibration)
        try:
            self._load(self.path)
        except (DataError, MemoryError):
            raise
        except Exception as error:  # the runtime's own parse errors span lines and name no file
            raise DataError(f"{files.printable(self.path)}: the {self.name} runtime cannot load this export "
                            f"({first_line(error)})") from None

    def _load(self, path):
        raise NotImplementedError


class OpenVINORuntime(_Exported):
    """An OpenVINO IR on the CPU plugin; float32 or bfloat16 is the plugin's inference precision, so both run the
    one float32 export. Latency mode: one batch at a time, on every core."""

    name, format, suffix = "openvino", "openvino", ".xml"

    @staticmethod
    def config(precision):
        """The CPU plugin's settings for ``precision``: its default is bfloat16 on CPUs with AMX, so float32 is
        asked for explicitly."""
        return {"INFERENCE_PRECISION_HINT": {"float32": "f32", "bfloat16": "bf16"}[precision],
                "PERFORMANCE_HINT": "LATENCY"}

    def _load(self, path):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", self.config(self.precision))
        self._request = self.compiled.create_infer_request()
        self._outputs = {key: _output_port(self.compiled.outputs, key) for key in TASKS}

    def _run(self, x):
        result = self._request.infer({0: x})
        return {key: np.array(result[port]) for key, port in self._outputs.items()}


class TFLiteRuntime(_Exported):
    """A TFLite flat buffer (float32, or int8 weights and activations) on TensorFlow's interpreter (XNNPACK)."""

    name, format, suffix = "tflite", "tflite", ".tflite"

    def _load(self, path):
        self._runner = TFLiteRunner(path)

    def _run(self, x):
        return self._runner(x)


class ONNXRuntime(_Exported):
    """An ONNX model (exported by tf2onnx) on ONNX Runtime's CPU provider with all graph optimisations."""

    name, format, suffix = "onnxruntime", "onnx", ".onnx"

    def _load(self, path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        names = [output.name for output in self.session.get_outputs()]
        missing = [key for key in TASKS if key not in names]
        if missing:
            raise DataError(f"{path}: no {', '.join(missing)} output (has {', '.join(names)})")

    def _run(self, x):
        return dict(zip(TASKS, self.session.run(list(TASKS), {self._input: x})))


def _output_port(outputs, key):
    """The compiled model's output named ``key`` (Keras names them by the model's output dict keys)."""
    for port in outputs:
        if key in port.get_names():
            return port
    names = sorted(n for port in outputs for n in port.get_names())
    raise DataError(f"OpenVINO model has no {key!r} output (has {', '.join(names)})")


class TFLiteRunner:
    """Run an exported TFLite model like ``predict_on_batch``: images (N, H, W, 3) 0-255 -> output dict."""

    def __init__(self, path, threads=None):
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():  # TF 2.21 still ships tf.lite.Interpreter but warns of LiteRT on creation
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        self._runner = self.interpreter.get_signature_runner("serving_default")

    def __call__(self, images):
        out = self._runner(image=np.asarray(images, np.float32))
        return {key: np.asarray(out[key]) for key in TASKS}
