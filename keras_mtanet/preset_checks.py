"""The checks ``keras_mtanet.presets`` makes before it trusts a preset, which is untrusted data (anyone can
publish one): plain file names of regular files inside the folder, sha256 against what was pinned, size-limited
and type-checked JSON, config ranges, weight counts against the weights file, weights files that read no other
file. Every problem is one ``PresetError`` line naming the file."""

import json
import math
import os
import re
import stat
from pathlib import Path

from keras_mtanet import files, preprocessing
from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, VA_NAMES

# The folder's file names (``keras_mtanet.presets`` describes the format).
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, CARD_FILE = "config.json", "model.weights.h5", "metadata.json", "README.md"
PREPROCESSOR_FILE = "preprocessor.json"  # optional: presets written before the image converter lack it
HASHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
PRESET_FILES = HASHED_FILES + (METADATA_FILE,)  # the files every preset has
OPTIONAL_FILES = (PREPROCESSOR_FILE,)

MAX_JSON_BYTES = files.MAX_JSON_BYTES  # metadata, config, preprocessor and registry files; larger ones refused
MAX_PARAMETERS = 300_000_000  # about 1.2 GB of float32 weights; a config implying more is refused
# The float32 activations one image costs (config_activation_bytes): input size^2 x width x depth, the memory the
# weight count does not see (se_resnet50 at width 3.3 and 1024 px, 290 M weights, took 6.8 GB for one photo).
# SE-ResNet-101 at 224 px and width 2 needs about 0.19 GiB, SE-ResNet-50 at 512 px 0.32 GiB; more is refused.
MAX_ACTIVATION_BYTES = 2 ** 30
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
COMMIT = re.compile(r"[0-9a-f]{40}")  # a full commit sha


def read_json(path, what, limit=MAX_JSON_BYTES):
    """A small JSON file of a preset, parsed; ``PresetError`` naming the file when missing, too large or invalid."""
    return files.read_json(path, what, limit, error=PresetError)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_file_map(file_map, where):
    """``file_map`` must map plain file names (no folders, no ``..``, no leading dot) to sha256 hex digests."""
    if not isinstance(file_map, dict):
        raise PresetError(f"{where}: \"files\" must map file names to sha256 digests")
    for name, digest in file_map.items():
        if not _SAFE_NAME.fullmatch(name):
            raise PresetError(f"{where}: file name {name!r} is not a plain file name inside the preset folder; "
                              "refused")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise PresetError(f"{where}: the sha256 of {name} must be 64 lowercase hex digits")
    return file_map


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
    """Check the sha256 of each file in ``expected`` (``{name: sha256}``, plain names of regular files inside
    ``folder``); a mismatch is a ``PresetError`` naming the file. ``cache_root``: ``folder`` is a snapshot of that
    Hugging Face cache repo folder; links may point into it, and a corrupt file is deleted there (snapshot link
    and blob, both inside it) so that a retry downloads it anew. Nothing outside ``cache_root`` is deleted."""
    folder = Path(folder)
    check_file_map(expected, folder / METADATA_FILE)
    for name, digest in expected.items():
        path, real = member(folder, name, cache_root)
        actual = files.sha256_file(real)
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
    if not isinstance(entry.get("revision"), str) or not COMMIT.fullmatch(entry["revision"]):
        raise PresetError(f"{where}: needs \"revision\": the full commit sha the preset is pinned to")
    file_map = check_file_map(entry.get("files"), where)
    missing = [name for name in PRESET_FILES if name not in file_map]
    if missing:
        raise PresetError(f"{where}: \"files\" lacks the sha256 of {', '.join(missing)}")
    return entry


def check_folder(folder, expected_files=None, cache_root=None):
    """Check a preset folder's files, parsing nothing but ``metadata.json``: every file it lists, and every
    file of ``expected_files`` (``{name: sha256}``, e.g. pinned by the registry; a pinned ``metadata.json`` is
    checked first), must be a regular file inside the folder with that sha256. Returns the metadata."""
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
    return metadata


def read_metadata(folder):
    """``metadata.json`` of a preset folder, checked (``check_metadata``)."""
    path = Path(folder) / METADATA_FILE
    if not path.exists() and not path.is_symlink():
        raise PresetError(f"{path}: missing; {folder} is not a keras_mtanet preset folder")
    return check_metadata(read_json(path, "preset metadata"), path)


def check_before_build(folder, metadata, cache_root=None):
    """The checks of a verified folder (``check_folder``) before a model is built from it: ``config.json``'s
    types and ranges, its agreement with the metadata and ``preprocessor.json``, and the number of weights it
    implies against the weights file. Returns ``(full config, weights path, preprocessor config or None)``."""
    folder = Path(folder)
    # Checked names (a link into a Hub cache keeps its name: Keras reads weights only from *.weights.h5).
    config_path, weights_path = member(folder, CONFIG_FILE, cache_root)[0], member(folder, WEIGHTS_FILE, cache_root)[0]
    config = check_model_config(read_json(config_path, "model config"), folder / CONFIG_FILE)
    activations = config_activation_bytes(config)
    if activations > MAX_ACTIVATION_BYTES:
        raise PresetError(f"{folder / CONFIG_FILE}: a model of {config['input_shape'][0]} x "
                          f"{config['input_shape'][1]} px input, width {config['width']:g}, needs about "
                          f"{activations / 2 ** 30:.1f} GiB of activations per image, more than the "
                          f"{MAX_ACTIVATION_BYTES / 2 ** 30:g} GiB a preset may need; refused")
    if config["alignment_template"] is None:  # written before the model held it: from the (checked) metadata
        config["alignment_template"] = metadata.get("alignment_template")
    size = metadata.get("input_size")
    if size is not None and list(size) != config["input_shape"][:2]:
        raise PresetError(f"{folder / METADATA_FILE}: input_size {size} differs from config.json's input_shape "
                          f"{config['input_shape']}")
    preprocessor = None
    if PREPROCESSOR_FILE in metadata["files"]:  # only a hashed one is read; presets before it have none
        where = folder / PREPROCESSOR_FILE
        preprocessor = check_preprocessor(read_json(member(folder, PREPROCESSOR_FILE, cache_root)[0],
                                                    "preprocessor config"), where)
        for key, built in (("image_size", config["input_shape"][:2]), ("color_mode", config["color_mode"])):
            if preprocessor[key] != built:
                raise PresetError(f"{where}: {key} {preprocessor[key]!r} differs from config.json's {built!r}: "
                                  "the two files do not belong together")
    implied = config_parameters(config)
    if implied > MAX_PARAMETERS:
        raise PresetError(f"{folder / CONFIG_FILE}: describes a model of {implied:,} weights, more than the "
                          f"{MAX_PARAMETERS:,} a preset may have; refused")
    stored = weights_file_parameters(weights_path)
    if stored != implied:
        raise PresetError(f"{folder / CONFIG_FILE}: describes a model of {implied:,} weights but "
                          f"{WEIGHTS_FILE} holds {stored:,}: the two files do not belong together")
    return config, weights_path, preprocessor


def check_template(template, path):
    """An alignment template: five finite (x, y) points in unit coordinates of the crop."""
    try:
        preprocessing.check_template(template)  # the converter's own rule
    except ValueError:
        raise PresetError(f"{path}: alignment_template must be five (x, y) points in unit coordinates") from None


def check_metadata(meta, path):
    """``metadata.json`` content checked: a JSON object whose ``files`` map names the config and weights with
    their sha256, and whose optional fields have the right types. Returns it."""
    if not isinstance(meta, dict):
        raise PresetError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if "files" not in meta:
        raise PresetError(f"{path}: no \"files\" map of sha256 digests; the preset cannot be verified, refused")
    file_map = check_file_map(meta["files"], path)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if name not in file_map]
    if missing:
        raise PresetError(f"{path}: \"files\" lacks the sha256 of {', '.join(missing)}; refused")
    if meta.get("alignment_template") is not None:
        check_template(meta["alignment_template"], path)
    size = meta.get("input_size")
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or not all(is_int(v) and 1 <= v <= 4096 for v in size)):
        raise PresetError(f"{path}: input_size must be [height, width] in pixels")
    for key in ("name", "description", "backbone", "training_data"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise PresetError(f"{path}: {key} must be text")
    return meta


# The image converter's own settings; the rest of its config (name, trainable, dtype) is Keras layer
# bookkeeping that may differ between machines (a mixed-precision policy) without changing what it computes.
PREPROCESSOR_KEYS = ("image_size", "color_mode", "scale", "offset", "alignment_template")
_LAYER_KEYS = ("name", "trainable", "dtype")


def check_preprocessor(config, path):
    """``preprocessor.json`` content (an ``ImageConverter`` config) checked for types; returns it."""
    if not isinstance(config, dict):
        raise PresetError(f"{path}: expected a JSON object, got {type(config).__name__}")
    missing = [key for key in PREPROCESSOR_KEYS if key not in config]
    if missing:
        raise PresetError(f"{path}: lacks {', '.join(missing)}")
    size = config["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and 1 <= v <= 4096 for v in size)):
        raise PresetError(f"{path}: image_size must be [height, width] in pixels, got {size!r}")
    if config["color_mode"] not in ("rgb", "grayscale"):
        raise PresetError(f"{path}: color_mode must be rgb or grayscale, got {config['color_mode']!r}")
    for key in ("scale", "offset"):
        if not is_number(config[key]):
            raise PresetError(f"{path}: {key} must be a finite number, got {config[key]!r}")
    if config["alignment_template"] is not None:
        check_template(config["alignment_template"], path)
    return config


def check_same_preprocessor(saved, built, where):
    """``preprocessor.json`` (``saved``) against the built model's ``preprocessor.get_config()``: their settings
    must agree (compared through JSON, as saved; a key only one side has, a converter setting added in a
    later version, is not compared)."""
    built = json.loads(json.dumps(built))
    for key in sorted((set(saved) & set(built)) - set(_LAYER_KEYS)):
        if saved[key] != built[key]:
            raise PresetError(f"{where}: {key} {saved[key]!r} differs from the model built from config.json "
                              f"({built[key]!r}): the two files do not belong together")


MODEL_CONFIG_DEFAULTS = {"backbone": "se_resnet50", "input_shape": [112, 112, 3], "stack_blocks": None,
                         "width": 1.0, "se_ratio": 16, "head_filters": 512, "dropout": 0.5,
                         "negative_slope": 0.3, "num_aus": len(AU_NAMES), "num_expressions": len(EXPR_NAMES),
                         "fold_batchnorm": False, "color_mode": "rgb", "alignment_template": None, "name": "mtanet",
                         "trainable": True}


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

    if not isinstance(full["backbone"], str) or full["backbone"] not in BACKBONES:  # no serialised objects
        raise bad("backbone", "one of " + ", ".join(BACKBONES))
    shape = full["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(is_int(v) for v in shape)
            and 16 <= shape[0] <= 1024 and 16 <= shape[1] <= 1024 and shape[2] == 3):
        raise bad("input_shape", "[height, width, 3] with sides from 16 to 1024")
    blocks = full["stack_blocks"]
    if blocks is not None and not (isinstance(blocks, list) and len(blocks) == 4
                                   and all(is_int(b) and 1 <= b <= 64 for b in blocks)):
        raise bad("stack_blocks", "null or four block counts from 1 to 64")
    checks = {"width": (is_number, 0.01, 4.0), "se_ratio": (is_int, 0, 4096), "head_filters": (is_int, 1, 8192),
              "dropout": (is_number, 0.0, 0.99), "negative_slope": (is_number, -10.0, 10.0),
              # Older configs carry the output sizes; the outputs are fixed to the label sets (keras_mtanet.labels).
              "num_aus": (is_int, len(AU_NAMES), len(AU_NAMES)),
              "num_expressions": (is_int, len(EXPR_NAMES), len(EXPR_NAMES))}
    for key, (kind, low, high) in checks.items():
        if not (kind(full[key]) and low <= full[key] <= high):
            raise bad(key, f"a number from {low} to {high}")
    for key in ("fold_batchnorm", "trainable"):
        if not isinstance(full[key], bool):
            raise bad(key, "true or false")
    if full["color_mode"] not in ("rgb", "grayscale"):
        raise bad("color_mode", "rgb or grayscale")
    if full["alignment_template"] is not None:
        check_template(full["alignment_template"], where)
    if not isinstance(full["name"], str) or not full["name"] or len(full["name"]) > 128:
        raise bad("name", "a short text")
    return full


def config_activation_bytes(config):
    """The float32 bytes of every layer output an ``MTANet`` built from ``config`` computes for one image (each
    convolution's, the pooled stem's and each block's sum): what a forward pass may hold, computed from the config
    alone. Grows as input size^2 x width x depth."""
    from keras_mtanet.backbone import STACK_FILTERS, _scaled, backbone_spec

    config = {**MODEL_CONFIG_DEFAULTS, **config}
    height, width = (int(d) for d in config["input_shape"][:2])
    spec = backbone_spec(config["backbone"], config["stack_blocks"])
    h, w = -(-height // 2), -(-width // 2)
    channels = _scaled(64, config["width"])
    total = h * w * channels  # the stem's convolution
    h, w = -(-h // 2), -(-w // 2)
    total += h * w * channels  # its pooling
    for i, (filters, count) in enumerate(zip(STACK_FILTERS, spec["stacks"])):
        filters = _scaled(filters, config["width"])
        for b in range(count):
            if i > 0 and b == 0:
                h, w = -(-h // 2), -(-w // 2)
            out = filters if spec["block"] == "basic" else 4 * filters
            inner = 1 if spec["block"] == "basic" else 2  # convolutions of `filters` channels before the last
            total += h * w * (inner * filters + out * (3 if b == 0 else 2))  # + projection, the sum
            channels = out
    return 4 * total


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
    for outputs in (len(VA_NAMES), len(AU_NAMES), len(EXPR_NAMES)):
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
        raise PresetError(f"{path}: not a Keras weights file ({first_line(error)})") from None
    return total
