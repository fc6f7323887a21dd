"""Prediction through a choice of runtime: Keras itself, or an exported form run by OpenVINO, TFLite or ONNX
Runtime, all with the same call and the same outputs.

``load_runtime(model, "openvino")`` exports the model's batch-norm-folded inference form (``keras_mtanet.export``)
into a cache folder and loads it; the returned runtime maps a float32 NHWC batch of RGB faces in [0, 255], of
any size, to ``{"va": (N, 2), "au": (N, 8), "expr": (N, 7)}`` float32 arrays, as ``MTANet.predict_on_batch``.
In float32 every runtime gives Keras's outputs to 1e-4 (``tests/test_runtimes.py``); reduced precisions
(``"bfloat16"``, ``"int8"``) trade a little accuracy for speed, measured by ``benchmarks/reduced_precision.py``.

Exports are named by a digest of the model's configuration, weights, the precision and the package versions, so
a ``cache_dir`` that is kept reuses them and a changed model never picks up a stale file. They are written under
a temporary name and renamed into place, and nothing already in the folder is ever replaced. Without
``cache_dir`` they go to a temporary folder that is removed with the runtime. Each export folder keeps the sha256 of
its files (``MANIFEST``), checked before each reuse: a damaged export (a truncated ``model.xml``) is exported again.
In the default cache folder (``default_cache_dir``) only the ``MAX_CACHED_EXPORTS`` most recently used exports are kept.

Example:
    >>> from keras_mtanet.inference import runtimes
    >>> run = runtimes.load_runtime(model, runtimes.best_runtime())
    >>> out = run(images)  # (N, 112, 112, 3) float32 in [0, 255]
    >>> out["expr"].shape
    (N, 7)
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from keras_mtanet import files
from keras_mtanet.errors import DataError, DependencyError, UsageError, first_line
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


# Exports kept in the default cache folder (10-100 MB each, one per model, runtime format and precision): when
# a new one is made there, the least recently used beyond this many are removed.
MAX_CACHED_EXPORTS = 8
# An export used more recently than this is never pruned (another process may be loading it).
PRUNE_GRACE_SECONDS = 3600
# The names cached_export gives its folders (f"mtanet-{format}{'-int8' if int8}-{digest[:20]}"); pruning touches
# nothing else.
_EXPORT_NAME = re.compile(r"mtanet-(openvino|tflite|onnx)(-int8)?-[0-9a-f]{20}")
# Their temporary names while written (tempfile.mkdtemp) or removed: .{name}.{random}.tmp
_EXPORT_LEFTOVER = re.compile(rf"\.{_EXPORT_NAME.pattern}\.[A-Za-z0-9_]{{8}}\.tmp")

RUNTIME_VARIABLE = "KERAS_MTANET_RUNTIME"  # the runtime Predictor and predict use when none is given
CACHE_VARIABLE = "KERAS_MTANET_CACHE"


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


def default_cache_dir():
    """Where exported forms are kept between runs when no ``cache_dir`` is given to a default runtime:
    ``$KERAS_MTANET_CACHE/runtimes``, else ``$XDG_CACHE_HOME/keras_mtanet/runtimes`` (``~/.cache`` by default).
    Each export sits in a folder named by a digest of the model's config and weights, so a changed model never
    picks up a stale file."""
    root = os.environ.get(CACHE_VARIABLE)
    if root:
        return Path(root) / "runtimes"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keras_mtanet" / "runtimes"


def usable_default_cache():
    """``default_cache_dir()`` created if needed, or None (exports then last one run, in a temporary folder)
    where it cannot be written, such as a read-only home; says so on stderr."""
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
        reason = "not writable"
    except OSError as error:
        reason = error.strerror or str(error)
    print(f"keras-mtanet: note: {folder}: {reason}; exported models are kept for this run only",
          file=sys.stderr)
    return None


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
            synthetic faces; see ``export.calibration_images``).

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
        self.path = cached_export(model, self.format, cache_dir, int8=precision == "int8", calibration=calibration)
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
        from keras_mtanet.export import TFLiteRunner

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


def cached_export(model, format, cache_dir, int8=False, calibration=None):
    """The path of ``model`` exported in ``format`` inside ``cache_dir``: reused when an export with the same
    digest is there, else exported under a temporary name and renamed into place. Never replaces a file."""
    from keras_mtanet import export

    cache = Path(cache_dir)
    if cache.exists() and not cache.is_dir():
        raise DataError(f"{cache}: is not a folder (cache_dir for exported models)")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{cache}: cannot create the cache folder ({error.strerror})") from None
    calibration = None if calibration is None else np.asarray(calibration, np.float32)
    digest = model_digest(model, format, int8, calibration)
    # A folder per export: OpenVINO's is two files, and a folder is renamed into place in one step.
    entry = cache / f"mtanet-{format}{'-int8' if int8 else ''}-{digest[:20]}"
    target = entry / f"model{export.SUFFIXES[format]}"
    if target.is_file() and verify_export(entry):
        try:
            os.utime(entry)  # used now: pruning removes the least recently used
        except OSError:
            pass  # a read-only cache still serves its exports
        return target
    if entry.is_dir() and not entry.is_symlink() and target.is_file():
        _set_aside(entry)  # damaged (a truncated model.xml) or written without a manifest: exported again
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=cache))
    try:
        if format == "tflite":
            export.export_tflite(model, staging / target.name, int8=int8, calibration=calibration)
        elif format == "onnx":
            export.export_onnx(model, staging / target.name)
        else:
            export.export_openvino(model, staging / target.name)
        write_manifest(staging)
        try:
            os.rename(staging, entry)  # fails, replacing nothing, if the name is taken (another process won)
        except OSError:
            if not target.is_file():
                raise DataError(f"{entry}: exists and holds no {target.name}; remove it or choose another "
                                "cache_dir") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        if cache.resolve() == default_cache_dir().resolve():
            prune_cache(cache, spare=entry)
    except OSError:
        pass  # pruning is housekeeping: the export is made whatever happens to the others
    return target


# Inside each cached export: the sha256 of each of its files, checked before every reuse.
MANIFEST = "manifest.json"


def write_manifest(folder):
    """Record the sha256 of every file in an export ``folder`` in its ``MANIFEST``."""
    digests = {p.name: files.sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.name != MANIFEST}
    files.write_atomic(Path(folder) / MANIFEST, files.dump_json({"sha256": digests}))


def verify_export(folder):
    """Whether the export ``folder`` holds exactly the files its ``MANIFEST`` lists, each with its sha256
    (False for a damaged export, e.g. a truncated ``model.xml``, or one without a manifest)."""
    folder = Path(folder)
    try:
        listed = files.read_json(folder / MANIFEST, "export manifest")["sha256"]
        present = {p.name for p in folder.iterdir() if p.name != MANIFEST}
        return (isinstance(listed, dict) and set(listed) == present
                and all(p.is_file() and not p.is_symlink() and files.sha256_file(p) == listed[p.name]
                        for p in (folder / name for name in sorted(present))))
    except (DataError, OSError, KeyError, TypeError):
        return False


def _set_aside(entry):
    """Remove a damaged cached export (renamed first, so no other process reuses it half removed)."""
    doomed = files.temporary_name(entry)
    try:
        os.rename(entry, doomed)
    except FileNotFoundError:
        return  # another process set it aside first
    except OSError as error:
        raise DataError(f"{entry}: damaged cached export that cannot be removed ({files.error_reason(error)}); "
                        "remove it or choose another cache_dir") from None
    shutil.rmtree(doomed, ignore_errors=True)


def prune_cache(folder, keep=None, spare=None, grace=PRUNE_GRACE_SECONDS):
    """Remove all but the ``keep`` (default ``MAX_CACHED_EXPORTS``) most recently used exports in ``folder`` (by
    modification time, which ``cached_export`` renews on each use), never ``spare`` nor one used in the last
    ``grace`` seconds (another process may be loading it). Only folders named as ``cached_export`` names its
    exports are considered; links, files and anything else are left alone. Each is first renamed to a temporary
    name, so a half-removed export is never reused; such temporary folders older than ``grace`` (an export or a
    removal cut short by a kill) are removed too. Returns the folders removed; errors (another process pruning
    or reading at the same time, a read-only folder) leave the export in place."""
    keep = MAX_CACHED_EXPORTS if keep is None else keep
    entries = []
    try:
        paths = list(Path(folder).iterdir())
    except OSError:
        return []
    removed, now = [], time.time()
    for path in paths:
        try:
            if path.is_symlink() or not path.is_dir():
                continue
            if _EXPORT_NAME.fullmatch(path.name):
                entries.append((path.stat().st_mtime, path.name, path))
            elif _EXPORT_LEFTOVER.fullmatch(path.name) and now - path.stat().st_mtime >= grace:
                shutil.rmtree(path)  # an export killed while being written, or a removal cut short
                removed.append(path)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    entries.sort(reverse=True)
    for _, _, path in entries[max(0, keep):]:
        try:  # read again just before: another process may have used it since the listing
            if (spare is not None and path == Path(spare)) or now - path.stat().st_mtime < grace:
                continue
            doomed = files.temporary_name(path)
            os.rename(path, doomed)  # an export another process still runs stays in its memory
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(path)
    return removed


def model_digest(model, format, int8=False, calibration=None):
    """SHA-256 over what an export depends on: the model's configuration and weights, the format and precision,
    the calibration images and the exporting packages' versions."""
    import keras

    from keras_mtanet.version import __version__

    versions = {"keras_mtanet": __version__, "keras": keras.__version__}
    for module in ("tensorflow", "openvino", "tf2onnx", "onnx"):
        spec = importlib.util.find_spec(module)
        if spec is not None:
            versions[module] = _version(module)
    h = hashlib.sha256()
    h.update(json.dumps([format, bool(int8), versions, model.get_config()], sort_keys=True, default=str).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        h.update(f"{weight.path}{value.dtype.str}{value.shape}".encode())
        h.update(value.tobytes())
    if calibration is not None:
        h.update(np.ascontiguousarray(calibration).tobytes())
    return h.hexdigest()


def _version(module):
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "unknown"
