"""Export a model for serving: TensorFlow SavedModel, TFLite (float32 or int8), ONNX and OpenVINO IR.

Every format takes RGB face crops with values in [0, 255] (float32, N x H x W x 3; normalisation is inside
the model) and returns ``va`` (N, 2), ``au`` (N, 8) and ``expr`` (N, 7), as ``MTANet.predict`` does. The
exported graph is the batch-norm-folded inference form (``MTANet.inference_model``). Every format keeps the
batch dimension dynamic. ``keras_mtanet.inference.runtimes`` runs the exported forms.
"""

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_mtanet.errors import DataError, DependencyError
from keras_mtanet.files import disk_failure

EXPORT_FORMATS = ("savedmodel", "tflite", "onnx", "openvino")
# The suffix of each file format (required for OpenVINO, whose weights go beside the .xml as .bin).
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}


def _inference_form(model):
    return model.inference_model() if hasattr(model, "inference_model") else model


def export_savedmodel(model, path):
    """A SavedModel whose ``serving_default`` (and ``serve``) signature maps ``image`` to the three outputs."""
    _inference_form(model).export(str(path), format="tf_saved_model", verbose=False)
    return Path(path)


def synthetic_calibration(model, count=200):
    """The default int8 calibration images at the model's input size: the package's generated synthetic faces
    (right only for models trained on them; ``keras_mtanet.inference.export_cache.calibration_images`` reads
    aligned crops of real faces)."""
    from keras_mtanet.data import synthetic

    images, _ = synthetic.generate(count, size=int(model.input_shape[1]), seed=12345)
    return images.astype(np.float32)


def export_tflite(model, path, int8=False, calibration=None, scratch=None):
    """A TFLite flat buffer; ``int8``: weights and activations in int8 (float32 input and outputs), the
    activation ranges calibrated on ``calibration`` images (N x H x W x 3, 0-255). The SavedModel it converts
    is written in ``scratch`` (``export`` gives its staging folder; default: the system's temporary folder)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        saved = export_savedmodel(model, os.path.join(tmp, "saved"))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if int8:
            images = synthetic_calibration(model) if calibration is None else np.asarray(calibration, np.float32)

            def representative():
                for image in images:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                   tf.lite.OpsSet.TFLITE_BUILTINS]
        flat = converter.convert()
    Path(path).write_bytes(flat)
    return Path(path)


def export_onnx(model, path, opset=None):
    """An ONNX model (via tf2onnx, the ``[onnx]`` extra) with input ``image`` and outputs va, au, expr."""
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        raise DependencyError("ONNX export needs tf2onnx: pip install 'keras-mtanet[onnx]'") from None
    kwargs = {} if opset is None else {"opset_version": int(opset)}
    fast = _inference_form(model)
    fast.predict_on_batch(np.zeros((1,) + tuple(model.input_shape[1:]), np.float32))  # Keras's ONNX export needs a call
    fast.export(str(path), format="onnx", verbose=False, **kwargs)
    return Path(path)


def export_openvino(model, path):
    """An OpenVINO IR: ``path`` (``.xml``, the graph) and the weights beside it (same name, ``.bin``), via
    Keras's own exporter (the ``[openvino]`` extra). Input ``image``; outputs va, au, expr."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise DependencyError("OpenVINO export needs openvino: pip install 'keras-mtanet[openvino]'") from None
    path = Path(path)
    if path.suffix != ".xml":
        raise DataError(f"{path}: an OpenVINO export is a .xml file (its weights go beside it as .bin)")
    _inference_form(model).export(str(path), format="openvino", verbose=False)
    return path


def check_export_path(path, format, overwrite=False):
    """``DataError`` unless ``path`` can receive an export: its folder exists and nothing is there (an empty
    folder for a SavedModel), or ``overwrite`` was asked for. Nothing is touched."""
    if format not in EXPORT_FORMATS:
        raise DataError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    # The real place: "sub/.." is sub's parent, not a name inside sub/ (the staging folder goes beside it).
    path = path.resolve() if path.name in ("", ".", "..") else path.parent.resolve() / path.name
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise DataError(f"{path}: folder {path.parent} is not writable")
    if path.is_symlink() or path.exists():
        empty_folder = format == "savedmodel" and path.is_dir() and not path.is_symlink() and \
            not any(path.iterdir())
        if not empty_folder and not overwrite:
            raise DataError(f"{path}: already exists; choose another --output or pass --overwrite to replace it")
        cwd = Path.cwd().resolve()
        if path.is_dir() and not path.is_symlink() and (cwd == path or path in cwd.parents):
            raise DataError(f"{path}: is {'the current folder' if cwd == path else 'a folder above the current one'}; "
                            "an export cannot replace the folder it runs in (choose another --output)")
        if path.is_dir() and format != "savedmodel":
            raise DataError(f"{path}: is a folder; a {format} export is a file")
    if format == "openvino":
        if path.suffix != ".xml":
            raise DataError(f"{path}: an OpenVINO export is a .xml file (its weights go beside it as .bin)")
        weights = path.with_suffix(".bin")
        if (weights.is_symlink() or weights.exists()) and not overwrite:
            raise DataError(f"{weights}: already exists; choose another --output or pass --overwrite to replace it")
        if weights.is_dir() and not weights.is_symlink():
            raise DataError(f"{weights}: is a folder; the OpenVINO weights file goes there")
    return path


# export's staging folder beside the output: .{name}.export-{pid}-{random}.tmp, holding STAGING_MARKER.
STAGING = re.compile(r"\..+\.export-([0-9]+)-[a-z0-9_]{8}\.tmp")
STAGING_MARKER = ".keras_mtanet_export"
STALE_AGE_SECONDS = 60


def _running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_stale_staging(folder, min_age=STALE_AGE_SECONDS):
    """Remove the staging folders of exports killed before they finished (SIGKILL, a power cut) from ``folder``:
    named as ``export`` names them, holding its marker, older than ``min_age`` seconds and of a process that no
    longer runs; nothing else. Returns the paths removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = STAGING.fullmatch(entry.name)
        try:
            if match is None or entry.is_symlink() or not entry.is_dir() or _running(int(match.group(1))) or \
                    time.time() - (entry / STAGING_MARKER).lstat().st_mtime < min_age:
                continue
        except OSError:  # no marker: not ours
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def export(model, path, format, int8=False, calibration=None, overwrite=False):
    """Export ``model`` to ``path`` in ``format`` (one of ``EXPORT_FORMATS``); ``int8`` is for TFLite only.

    The export is written beside ``path`` under a temporary name and renamed into place when complete, so a
    failed export leaves nothing half-written. An existing ``path`` is refused unless ``overwrite`` (an empty
    folder is fine for a SavedModel); it is replaced only once the new export is complete.
    """
    if int8 and format != "tflite":
        raise DataError("--int8 applies to --format tflite only")
    path = check_export_path(path, format, overwrite)
    remove_stale_staging(path.parent)
    # Staged beside the output (never in the system's temporary folder); removed on any error, Ctrl-C or SIGTERM.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:80]}.export-{os.getpid()}-", suffix=".tmp", dir=path.parent))
    try:
        (tmp / STAGING_MARKER).write_text(f"keras_mtanet export staging of process {os.getpid()}\n")
        staged = tmp / path.name
        if format == "savedmodel":
            export_savedmodel(model, staged)
        elif format == "tflite":
            export_tflite(model, staged, int8=int8, calibration=calibration, scratch=tmp)
        elif format == "openvino":
            export_openvino(model, staged)
            # The weights first: the .xml names the model, so it appears only once its weights are in place.
            os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        else:
            export_onnx(model, staged)
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be swapped in one step: move the old one aside, put the new one in place, then
            # remove the old one (asked for with overwrite, or empty).
            old = tmp / "replaced"
            os.replace(path, old)
            os.replace(staged, path)
        else:
            if format == "savedmodel" and (path.is_symlink() or path.exists()):
                path.unlink()  # a file or link asked to be replaced by the folder (a link: never its target)
            os.replace(staged, path)  # atomic for files (and replaces a link, never its target)
    except Exception as error:  # a full or read-only disk: one line naming the export
        reason = disk_failure(error)
        if reason is None:
            raise
        raise DataError(f"{path}: cannot write ({reason})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


