"""The cache of exported models the runtimes run (``keras_mtanet.inference.runtimes``), and the images int8
exports are calibrated on.

Exports are named by a digest of the model's configuration, weights, the precision and the package versions
(``model_digest``), so a ``cache_dir`` that is kept reuses them and a changed model never picks up a stale file.
They are written under a temporary name and renamed into place, and nothing already in the folder is ever
replaced. Each export folder keeps the sha256 of its files (``MANIFEST``), checked before each reuse: a damaged
export (a truncated ``model.xml``) is exported again. In the default cache folder (``default_cache_dir``) only the
``MAX_CACHED_EXPORTS`` most recently used exports are kept.
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
from pathlib import Path

import numpy as np

from keras_mtanet import export, files
from keras_mtanet.errors import DataError
from keras_mtanet.inference.alignment import resize_whole
from keras_mtanet.inference.sources import IMAGE_SUFFIXES, read_image

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



CACHE_VARIABLE = "KERAS_MTANET_CACHE"



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



def cached_export(model, format, cache_dir, int8=False, calibration=None):
    """The path of ``model`` exported in ``format`` inside ``cache_dir``: reused when an export with the same
    digest is there, else exported under a temporary name and renamed into place. Never replaces a file."""
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


def calibration_images(model, source=None, count=200):
    """Images for int8 calibration at the model's input size: aligned face crops from ``source`` (a folder
    of images), or, without one, the package's generated synthetic faces (right only for models trained on
    them)."""
    size = int(model.input_shape[1])
    if source is None:
        return export.synthetic_calibration(model, count)

    files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not files:
        raise DataError(f"{source}: no calibration images (expected aligned face crops)")
    return np.stack([resize_whole(read_image(p), size) for p in files]).astype(np.float32)
