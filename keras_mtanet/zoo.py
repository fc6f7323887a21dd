"""Presets: a folder format for trained MTANets, and the registry of named presets (data, in ``zoo/``).

A preset folder holds::

    config.json        the model architecture (``MTANet.get_config()``)
    model.weights.h5   the weights
    metadata.json      label names, input size, normalisation, training data, metrics, package version and the
                       sha256 of every other file
    README.md          the model card, with Hugging Face Hub YAML front matter

The registry is one folder per named preset under the installed ``keras_mtanet.registry`` package data (``zoo/<name>/`` in the
source tree), each with ``preset.json``: description, Hub repo id and pinned revision, per-file sha256,
training config and metrics. A preset whose folder also holds the files above is embedded: it loads with no
network. More registry folders can be added with the ``KERAS_MTANET_ZOO_PATH`` environment variable
(``os.pathsep``-separated), e.g. for an organisation's private presets.
"""

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np

from keras_mtanet.errors import PresetError, first_line as _first_line  # noqa: F401  (PresetError: old path)
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, VA_NAMES
from keras_mtanet.version import __version__

CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, CARD_FILE = "config.json", "model.weights.h5", "metadata.json", "README.md"
HASHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
PRESET_FILES = HASHED_FILES + (METADATA_FILE,)
REGISTRY_FILE = "preset.json"
DEFAULT_PRESET = "mtanet_se_resnet18_ferplus_112"  # trained on FER+ (real faces); see its model card
SYNTHETIC_PRESET = "mtanet_se_resnet18_synth"  # trained on the package's synthetic faces: tests and tutorials
ZOO_PATH_VARIABLE = "KERAS_MTANET_ZOO_PATH"


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# the registry


def zoo_dirs():
    """Registry folders: the package's own, then those named in ``KERAS_MTANET_ZOO_PATH``."""
    from importlib import resources

    try:
        dirs = [Path(str(resources.files("keras_mtanet.registry")))]
    except ModuleNotFoundError:  # running from a source checkout, where zoo/ has not been installed
        dirs = [Path(__file__).resolve().parents[1] / "zoo"]
    extra = os.environ.get(ZOO_PATH_VARIABLE, "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def list_presets():
    """``{name: registry entry}`` for every named preset; entries of later folders override earlier ones.

    Each entry holds at least ``description``; hub presets ``repo_id``, ``revision`` and ``files`` (sha256);
    embedded presets ``embedded: true``. ``folder`` is added: the entry's registry folder. An entry that cannot
    be read or is malformed is listed as ``{"error": "<one line>", "folder": ...}``: it fails when it is used,
    and does not stop the other presets from loading.
    """
    presets = {}
    for root in zoo_dirs():
        if not root.is_dir():
            continue
        for entry_file in sorted(root.glob(f"*/{REGISTRY_FILE}")):
            try:
                entry = check_registry_entry(_read_json(entry_file, "registry entry"), entry_file)
            except PresetError as error:
                entry = {"error": str(error)}
            entry["folder"] = str(entry_file.parent)
            presets[entry_file.parent.name] = entry
    return presets


def check_registry_entry(entry, where):
    """A registry ``preset.json`` checked: an object with a description, and either ``embedded: true`` or a
    Hub ``repo_id`` ("org/name"), a pinned ``revision`` and the sha256 of the preset files."""
    if not isinstance(entry, dict):
        raise PresetError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if "description" in entry and not isinstance(entry["description"], str):
        raise PresetError(f"{where}: description must be text")
    if entry.get("embedded") is True:
        if "files" in entry:
            check_file_map(entry["files"], where)
        return entry
    repo_id = entry.get("repo_id")
    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) or ".." in repo_id:
        raise PresetError(f"{where}: needs \"repo_id\": \"ORG/NAME\" (or \"embedded\": true)")
    if not isinstance(entry.get("revision"), str) or not re.fullmatch(r"[0-9a-f]{40}", entry["revision"]):
        raise PresetError(f"{where}: needs \"revision\": the full commit sha the preset is pinned to")
    files = check_file_map(entry.get("files"), where)
    missing = [name for name in PRESET_FILES if name not in files]
    if missing:
        raise PresetError(f"{where}: \"files\" lacks the sha256 of {', '.join(missing)}")
    return entry


# ---------------------------------------------------------------------------------------------------------
# the folder format


def preset_metadata(model, training_data, metrics=None, name=None, description=None, extra=None):
    """The ``metadata.json`` content for ``model`` (file hashes are added by ``save_preset``)."""
    size = int(model.image_shape[0])
    meta = {
        "name": name,
        "description": description,
        "architecture": "MTANet",
        "backbone": model.backbone_name,
        "input_size": [size, int(model.image_shape[1])],
        "input": "RGB face crop, values in [0, 255] (normalisation to [-1, 1] is inside the model"
                 + ("; converted to grey inside the model, as it was trained on grey faces)"
                    if getattr(model, "color_mode", "rgb") == "grayscale" else ")"),
        "color_mode": getattr(model, "color_mode", "rgb"),
        "normalization": {"input_range": [0, 255], "scale": 1 / 127.5, "offset": -1.0},
        "va_names": list(VA_NAMES),
        "au_names": list(AU_NAMES),
        "expression_names": list(EXPR_NAMES),
        "au_threshold": 0.5,
        "training_data": training_data,
        "metrics": metrics or {},
        "package_version": __version__,
        "parameters": int(model.count_params()),
    }
    meta.update(extra or {})
    return meta


def save_preset(model, folder, metadata, model_card):
    """Write ``model`` as a preset folder; returns the folder path.

    Args:
        model: an ``MTANet``.
        folder: destination (created).
        metadata: dict from ``preset_metadata``.
        model_card: README.md text with YAML front matter.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Each file goes to a temporary name and is renamed into place; metadata.json, which makes the folder a
    # preset, comes last, so a kill part-way leaves no preset that looks complete.
    _replace_text(folder / CONFIG_FILE, json.dumps(model.get_config(), indent=2) + "\n")
    # An uncompiled copy: a compiled model's weight file would also carry the optimizer's slots.
    bare = type(model).from_config(model.get_config())
    bare.set_weights(model.get_weights())
    tmp = folder / f".tmp-{os.getpid()}.{WEIGHTS_FILE}"
    bare.save_weights(tmp)
    os.replace(tmp, folder / WEIGHTS_FILE)
    _replace_text(folder / CARD_FILE, model_card)
    meta = dict(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in HASHED_FILES}
    _replace_text(folder / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


MAX_JSON_BYTES = 1 << 20  # metadata.json, config.json and preset.json are small; larger ones are refused
MAX_PARAMETERS = 300_000_000  # about 1.2 GB of float32 weights; a config implying more is refused
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _read_json(path, what, limit=MAX_JSON_BYTES):
    """A small JSON file, parsed; ``PresetError`` naming the file when it is missing, too large or invalid."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise PresetError(f"{path}: missing") from None
    except OSError as error:
        raise PresetError(f"{path}: unreadable {what} ({error.strerror or error})") from None
    if len(data) > limit:
        raise PresetError(f"{path}: {what} larger than {limit // 1024} KiB; refused")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise PresetError(f"{path}: unreadable {what} ({error})") from None


def check_file_map(files, where):
    """``files`` must map plain file names (no folders, no ``..``, no leading dot) to sha256 hex digests."""
    if not isinstance(files, dict):
        raise PresetError(f"{where}: \"files\" must map file names to sha256 digests")
    for name, digest in files.items():
        if not _SAFE_NAME.fullmatch(name):
            raise PresetError(f"{where}: file name {name!r} is not a plain file name inside the preset folder; "
                              "refused")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise PresetError(f"{where}: the sha256 of {name} must be 64 lowercase hex digits")
    return files


def update_preset(folder, model_card=None, **metadata):
    """Replace a preset folder's model card and/or metadata fields, and re-list the files' sha256 in
    ``metadata.json`` (e.g. to write a fuller card after training). Returns the new metadata."""
    folder = Path(folder)
    meta = read_metadata(folder)
    if model_card is not None:
        _replace_text(folder / CARD_FILE, model_card)
    meta.update(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in HASHED_FILES}
    _replace_text(folder / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def _replace_text(path, text):
    tmp = path.with_name(f".tmp-{os.getpid()}.{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_metadata(folder):
    """``metadata.json`` of a preset folder, checked: a JSON object whose ``files`` map names the config and
    weights with their sha256, and whose optional fields have the right types."""
    path = Path(folder) / METADATA_FILE
    if not path.exists() and not path.is_symlink():
        raise PresetError(f"{path}: missing; {folder} is not a keras_mtanet preset folder")
    meta = _read_json(path, "preset metadata")
    if not isinstance(meta, dict):
        raise PresetError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if "files" not in meta:
        raise PresetError(f"{path}: no \"files\" map of sha256 digests; the preset cannot be verified, refused")
    files = check_file_map(meta["files"], path)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if name not in files]
    if missing:
        raise PresetError(f"{path}: \"files\" lacks the sha256 of {', '.join(missing)}; refused")
    template = meta.get("alignment_template")
    if template is not None:
        try:
            points = np.asarray(template, np.float64)
        except (TypeError, ValueError):
            points = None
        if points is None or points.shape != (5, 2) or not np.all(np.isfinite(points)) or \
                np.abs(points).max() > 4:
            raise PresetError(f"{path}: alignment_template must be five (x, y) points in unit coordinates")
    size = meta.get("input_size")
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or not all(_is_int(v) and 1 <= v <= 4096 for v in size)):
        raise PresetError(f"{path}: input_size must be [height, width] in pixels")
    for key in ("name", "description", "backbone", "training_data"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise PresetError(f"{path}: {key} must be text")
    return meta


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def member(folder, name, root=None):
    """The checked path of preset file ``name`` in ``folder``: a plain name, present, a regular file, and
    (following symbolic links) inside ``root`` (default: the folder itself). Returns ``(path, real path)``."""
    folder = Path(folder)
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise PresetError(f"{folder}: file name {name!r} is not a plain file name inside the preset; refused")
    path = folder / name
    if not path.exists() and not path.is_symlink():
        raise PresetError(f"{path}: missing from the preset")
    real = path.resolve()
    if not real.is_relative_to(Path(root or folder).resolve()):
        raise PresetError(f"{path}: links outside the preset folder (to {real}); refused")
    try:
        mode = os.stat(real).st_mode
    except OSError as error:
        raise PresetError(f"{path}: unreadable ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise PresetError(f"{path}: not a regular file; refused")
    return path, real


def verify_files(folder, expected, cache_root=None):
    """Check the sha256 of each file in ``expected`` (``{name: sha256}``) under ``folder``.

    Names must be plain file names of regular files inside the folder (``member``). A mismatch raises
    ``PresetError`` naming the file. ``cache_root``: the folder is a snapshot of a Hugging Face cache repo
    folder (``models--org--name``); links may point into it, and a corrupt file is deleted there (the
    snapshot link and the blob behind it, both inside ``cache_root``) so that a retry downloads it anew.
    Nothing outside ``cache_root`` is ever deleted.
    """
    folder = Path(folder)
    check_file_map(expected, folder / METADATA_FILE)
    for name, digest in expected.items():
        path, real = member(folder, name, cache_root)
        actual = sha256_file(real)
        if actual == digest:
            continue
        deleted = False
        if cache_root is not None:
            root = Path(cache_root).resolve()
            for victim in {path, real}:
                parent = victim.parent.resolve()
                if parent.is_relative_to(root) and (parent.name in ("blobs",) or
                                                    parent.parent.name == "snapshots"):
                    victim.unlink(missing_ok=True)
                    deleted = True
        raise PresetError(f"{path}: sha256 {actual[:12]}... does not match the expected {digest[:12]}...; "
                          + ("the corrupt file was deleted from the cache, load again to download it anew"
                             if deleted else "the file is corrupt or was modified"))


MODEL_CONFIG_DEFAULTS = {"backbone": "se_resnet50", "input_shape": [112, 112, 3], "stack_blocks": None,
                         "width": 1.0, "se_ratio": 16, "head_filters": 512, "dropout": 0.5,
                         "negative_slope": 0.3, "num_aus": len(AU_NAMES), "num_expressions": len(EXPR_NAMES),
                         "fold_batchnorm": False, "color_mode": "rgb", "name": "mtanet", "trainable": True}


def check_model_config(config, where):
    """A preset's ``config.json`` content checked for types and ranges before anything is built; returns it
    completed with the defaults. ``PresetError`` names ``where`` and the first bad key."""
    from keras_mtanet.backbone import BACKBONES

    if not isinstance(config, dict):
        raise PresetError(f"{where}: expected a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(MODEL_CONFIG_DEFAULTS))
    if unknown:
        raise PresetError(f"{where}: unknown model config key(s) {', '.join(map(str, unknown))}")
    full = {**MODEL_CONFIG_DEFAULTS, **config}

    def bad(key, expected):
        return PresetError(f"{where}: {key} must be {expected}, got {full[key]!r}")

    if full["backbone"] not in BACKBONES:
        raise bad("backbone", "one of " + ", ".join(BACKBONES))
    shape = full["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)
            and 16 <= shape[0] <= 1024 and 16 <= shape[1] <= 1024 and shape[2] == 3):
        raise bad("input_shape", "[height, width, 3] with sides from 16 to 1024")
    blocks = full["stack_blocks"]
    if blocks is not None and not (isinstance(blocks, list) and len(blocks) == 4
                                   and all(_is_int(b) and 1 <= b <= 64 for b in blocks)):
        raise bad("stack_blocks", "null or four block counts from 1 to 64")
    checks = {"width": (_is_number, 0.01, 4.0), "se_ratio": (_is_int, 0, 4096), "head_filters": (_is_int, 1, 8192),
              "dropout": (_is_number, 0.0, 0.99), "negative_slope": (_is_number, -10.0, 10.0),
              "num_aus": (_is_int, 1, 1024), "num_expressions": (_is_int, 1, 1024)}
    for key, (kind, low, high) in checks.items():
        if not (kind(full[key]) and low <= full[key] <= high):
            raise bad(key, f"a number from {low} to {high}")
    for key in ("fold_batchnorm", "trainable"):
        if not isinstance(full[key], bool):
            raise bad(key, "true or false")
    if full["color_mode"] not in ("rgb", "grayscale"):
        raise bad("color_mode", "rgb or grayscale")
    if not isinstance(full["name"], str) or not full["name"] or len(full["name"]) > 128:
        raise bad("name", "a short text")
    return full


def config_parameters(config):
    """The number of weights (trainable and not) an ``MTANet`` built from ``config`` holds, computed from the
    config alone, so a preset's config can be checked against its weights file before anything is built."""
    from keras_mtanet.backbone import STACK_FILTERS, _scaled, backbone_spec

    config = {**MODEL_CONFIG_DEFAULTS, **config}
    folded, width, ratio = config["fold_batchnorm"], config["width"], config["se_ratio"]

    def conv_bn(cin, cout, k):  # a convolution without bias and its batch norm, or the folded conv + bias
        return k * k * cin * cout + (cout if folded else 4 * cout)

    def se(channels):
        if not ratio:
            return 0
        reduced = max(1, channels // ratio)
        return channels * reduced + reduced + reduced * channels + channels

    spec = backbone_spec(config["backbone"], config["stack_blocks"])
    channels = _scaled(64, width)
    total = conv_bn(3, channels, 7)
    for i, (filters, count) in enumerate(zip(STACK_FILTERS, spec["stacks"])):
        filters = _scaled(filters, width)
        for b in range(count):
            strides = 2 if i > 0 and b == 0 else 1
            out = filters if spec["block"] == "basic" else 4 * filters
            if strides != 1 or channels != out:
                total += conv_bn(channels, out, 1)
            if spec["block"] == "basic":
                total += conv_bn(channels, filters, 3) + conv_bn(filters, filters, 3)
            else:
                total += conv_bn(channels, filters, 1) + conv_bn(filters, filters, 3) + conv_bn(filters, out, 1)
            total += se(out)
            channels = out
    head = config["head_filters"]
    total += 2 * (channels * head + head)
    for outputs in (len(VA_NAMES), config["num_aus"], config["num_expressions"]):
        total += 2 * head * outputs + outputs
    return total + 3  # the three learned task log-variances (losses.TaskUncertainty)


def weights_file_parameters(path):
    """The number of weights stored in a Keras ``.weights.h5`` file, after checking that every value is stored
    in the file itself: datasets kept in other files (HDF5 external storage), virtual datasets and soft or
    external links are refused (they would read files outside the preset), as is any dataset that is not
    floating point of at most 32 bits. Only the file's structure is read, no weights."""
    import h5py

    total = 0

    def visit(group, prefix=""):
        nonlocal total
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{prefix}/{name}"
            if not isinstance(link, h5py.HardLink):
                raise PresetError(f"{path}: {where} is a link to elsewhere ({type(link).__name__}); refused")
            item = group[name]
            if isinstance(item, h5py.Group):
                visit(item, where)
                continue
            if item.external or item.is_virtual:
                raise PresetError(f"{path}: {where} keeps its values outside the file; refused")
            if item.dtype.kind != "f" or item.dtype.itemsize > 4:
                raise PresetError(f"{path}: {where} holds {item.dtype} values, not float32 weights; refused")
            total += int(item.size)

    try:
        with h5py.File(path, "r") as f:
            visit(f)
    except PresetError:
        raise
    except Exception as error:  # h5py raises OSError, ValueError, KeyError, RuntimeError... on broken files
        raise PresetError(f"{path}: not a Keras weights file ({_first_line(error)})") from None
    return total


def load_preset_folder(folder, expected_files=None, cache_root=None, compile=False):
    """Build the ``MTANet`` stored in a preset folder and load its weights, after checking it.

    A preset is untrusted data: file names must be plain names of regular files inside the folder, every file
    is hashed against ``expected_files`` (pinned, e.g. by the registry) and the folder's own ``metadata.json``
    before it is parsed, and ``config.json`` is checked for types and ranges, and the number of weights it
    implies against the weights file, before a model is built. Every problem is one ``PresetError`` line
    naming the file.

    Args:
        folder: a preset folder.
        expected_files: ``{name: sha256}`` that must match (e.g. from the registry); the folder's own
            ``metadata.json`` hashes are always checked too.
        cache_root: the Hugging Face cache folder of the repo when ``folder`` is one of its snapshots: files
            may link into it, and corrupt ones are deleted there so that a retry downloads them anew.
        compile: call ``model.compile()`` with the defaults.

    Returns:
        The model; its ``metadata`` attribute holds ``metadata.json`` as a dict.
    """
    from keras_mtanet.model import MTANet

    folder = Path(folder)
    if not folder.is_dir():
        raise PresetError(f"{folder}: no such preset folder")
    expected_files = dict(check_file_map(expected_files or {}, folder))
    if METADATA_FILE in expected_files:  # checked before it is trusted for the other files' hashes
        verify_files(folder, {METADATA_FILE: expected_files.pop(METADATA_FILE)}, cache_root)
    if not (folder / METADATA_FILE).is_symlink() and not (folder / METADATA_FILE).exists():
        raise PresetError(f"{folder / METADATA_FILE}: missing; {folder} is not a keras_mtanet preset folder")
    member(folder, METADATA_FILE, cache_root)
    metadata = read_metadata(folder)
    verify_files(folder, {**metadata["files"], **expected_files}, cache_root)
    # Checked names (a link into a Hub cache keeps its name: Keras reads weights only from *.weights.h5).
    config_path, weights_path = member(folder, CONFIG_FILE, cache_root)[0], member(folder, WEIGHTS_FILE, cache_root)[0]
    config = check_model_config(_read_json(config_path, "model config"), folder / CONFIG_FILE)
    size = metadata.get("input_size")
    if size is not None and list(size) != config["input_shape"][:2]:
        raise PresetError(f"{folder / METADATA_FILE}: input_size {size} differs from config.json's input_shape "
                          f"{config['input_shape']}")
    implied = config_parameters(config)
    if implied > MAX_PARAMETERS:
        raise PresetError(f"{folder / CONFIG_FILE}: describes a model of {implied:,} weights, more than the "
                          f"{MAX_PARAMETERS:,} a preset may have; refused")
    stored = weights_file_parameters(weights_path)
    if stored != implied:
        raise PresetError(f"{folder / CONFIG_FILE}: describes a model of {implied:,} weights but "
                          f"{WEIGHTS_FILE} holds {stored:,}: the two files do not belong together")
    try:
        model = MTANet.from_config(config)
    except (ValueError, TypeError) as error:
        raise PresetError(f"{folder / CONFIG_FILE}: cannot build the model ({_first_line(error)})") from None
    try:
        model.load_weights(weights_path)
    except Exception as error:  # any failure to read the (checked) file is the preset's fault, one line
        raise PresetError(f"{folder / WEIGHTS_FILE}: does not fit the model in config.json "
                          f"({_first_line(error)})") from None
    if compile:
        model.compile()
    model.metadata = metadata
    return model

