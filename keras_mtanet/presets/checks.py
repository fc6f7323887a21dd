"""The checks made before a preset is trusted, as it is untrusted data (anyone can publish one): plain file
names of regular files inside the folder, sha256 against what was pinned, size-limited and type-checked JSON,
config ranges (the architecture's own schema, ``keras_mtanet.model.config``, reached through the model class in
the Keras registry), weight counts against the weights file, weights files that read no other file. Every
problem is one ``PresetError`` line naming the file."""

import json
import math
import os
import re
import stat
from pathlib import Path

from keras_mtanet import files
from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.presets import decisions

# The folder's file names (``keras_mtanet.presets.folder`` describes the format).
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, CARD_FILE = "config.json", "model.weights.h5", "metadata.json", "README.md"
CONVERTER_FILE = "image_converter.json"  # keras-hub's name; presets written before the converter lack it
LEGACY_CONVERTER_FILE = "preprocessor.json"  # its name before; still read
CONVERTER_FILES = (CONVERTER_FILE, LEGACY_CONVERTER_FILE)
HASHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
PRESET_FILES = HASHED_FILES + (METADATA_FILE,)  # the files every preset has
OPTIONAL_FILES = CONVERTER_FILES

MAX_JSON_BYTES = files.MAX_JSON_BYTES  # metadata, config, converter and registry files; larger ones refused
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


def architecture(metadata, path):
    """The model class a preset's metadata names (``"architecture": "MTANet"``), found in the Keras registry
    under ``keras_mtanet>NAME`` as keras-hub finds its classes: this package never imports model code."""
    import keras

    name = metadata.get("architecture") or "MTANet"
    cls = keras.saving.get_registered_object(f"keras_mtanet>{name}")  # check_metadata made sure it is text
    if cls is None or not hasattr(cls, "check_config"):
        raise PresetError(f"{path}: architecture {name!r} is not a keras_mtanet model class registered with Keras "
                          "(import keras_mtanet.model.task, or the module defining it, first)")
    return cls


def _checked(cls, config, path):
    try:
        return cls.check_config(config)
    except ValueError as error:
        raise PresetError(f"{path}: {error}") from None


def check_before_build(folder, metadata, cls, cache_root=None):
    """The checks of a verified folder (``check_folder``) before a model of class ``cls`` is built from it:
    ``config.json``'s types and ranges (``cls.check_config``, the architecture's own schema), its agreement with
    the metadata and the image converter file, and the number of weights it implies (``cls.config_parameters``)
    against the weights file. Returns ``(full config, weights path, image converter config or None)``."""
    folder = Path(folder)
    # Checked names (a link into a Hub cache keeps its name: Keras reads weights only from *.weights.h5).
    config_path, weights_path = member(folder, CONFIG_FILE, cache_root)[0], member(folder, WEIGHTS_FILE, cache_root)[0]
    config = read_json(config_path, "model config")
    if metadata.get("alignment_template") is not None:
        template = _checked(cls, {"alignment_template": metadata["alignment_template"]}, folder / METADATA_FILE)
        if isinstance(config, dict) and config.get("alignment_template") is None:  # written before the model held it
            config = {**config, "alignment_template": template["alignment_template"]}
    config = _checked(cls, config, folder / CONFIG_FILE)
    activations = cls.config_activation_bytes(config)
    if activations > MAX_ACTIVATION_BYTES:
        raise PresetError(f"{folder / CONFIG_FILE}: a model of {config['input_shape'][0]} x "
                          f"{config['input_shape'][1]} px input, width {config['width']:g}, needs about "
                          f"{activations / 2 ** 30:.1f} GiB of activations per image, more than the "
                          f"{MAX_ACTIVATION_BYTES / 2 ** 30:g} GiB a preset may need; refused")
    size = metadata.get("input_size")
    if size is not None and list(size) != config["input_shape"][:2]:
        raise PresetError(f"{folder / METADATA_FILE}: input_size {size} differs from config.json's input_shape "
                          f"{config['input_shape']}")
    converter = None
    name = converter_file(metadata)
    if name is not None:  # only a hashed one is read; presets before the converter have none
        where = folder / name
        converter = check_converter(read_json(member(folder, name, cache_root)[0], "image converter config"), where)
        _checked(cls, {key: converter[key] for key in ("color_mode", "alignment_template")}, where)
        for key, built in (("image_size", config["input_shape"][:2]), ("color_mode", config["color_mode"])):
            if converter[key] != built:
                raise PresetError(f"{where}: {key} {converter[key]!r} differs from config.json's {built!r}: "
                                  "the two files do not belong together")
    implied = cls.config_parameters(config)
    if implied > MAX_PARAMETERS:
        raise PresetError(f"{folder / CONFIG_FILE}: describes a model of {implied:,} weights, more than the "
                          f"{MAX_PARAMETERS:,} a preset may have; refused")
    stored = weights_file_parameters(weights_path)
    if stored != implied:
        raise PresetError(f"{folder / CONFIG_FILE}: describes a model of {implied:,} weights but "
                          f"{WEIGHTS_FILE} holds {stored:,}: the two files do not belong together")
    return config, weights_path, converter


def converter_file(metadata):
    """The image converter file a preset's metadata lists: ``image_converter.json``, or the
    ``preprocessor.json`` of presets written before it was renamed; ``None`` for presets written before either."""
    return next((name for name in CONVERTER_FILES if name in metadata["files"]), None)


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
    size = meta.get("input_size")
    if size is not None and (not isinstance(size, list) or len(size) != 2 or not all(is_int(v) for v in size)):
        raise PresetError(f"{path}: input_size must be [height, width] in pixels")
    for key in ("name", "description", "backbone", "training_data", "architecture"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise PresetError(f"{path}: {key} must be text")
    decisions.check_metadata_fields(meta, path)  # AU thresholds, expression prior
    return meta


# The image converter's own settings; the rest of its config (name, trainable, dtype) is Keras layer
# bookkeeping that may differ between machines (a mixed-precision policy) without changing what it computes.
CONVERTER_KEYS = ("image_size", "color_mode", "scale", "offset", "alignment_template")
_LAYER_KEYS = ("name", "trainable", "dtype")


def check_converter(config, path):
    """An image converter file's content (an ``ImageConverter`` config) checked for its keys and the types of
    its normalisation; its size and colour mode are compared with config.json's, the rest with the converter the
    model builds (``check_same_converter``). Returns it."""
    if not isinstance(config, dict):
        raise PresetError(f"{path}: expected a JSON object, got {type(config).__name__}")
    missing = [key for key in CONVERTER_KEYS if key not in config]
    if missing:
        raise PresetError(f"{path}: lacks {', '.join(missing)}")
    for key in ("scale", "offset"):
        if not is_number(config[key]):
            raise PresetError(f"{path}: {key} must be a finite number, got {config[key]!r}")
    return config


def check_same_converter(saved, built, where):
    """An image converter file (``saved``) against the built model's ``preprocessor.get_config()``: their
    settings must agree (compared through JSON, as saved; a key only one side has, a converter setting added in a
    later version, is not compared)."""
    built = json.loads(json.dumps(built))
    for key in sorted((set(saved) & set(built)) - set(_LAYER_KEYS)):
        if saved[key] != built[key]:
            raise PresetError(f"{where}: {key} {saved[key]!r} differs from the model built from config.json "
                              f"({built[key]!r}): the two files do not belong together")


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
