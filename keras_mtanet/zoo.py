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
import os
from pathlib import Path

from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, VA_NAMES
from keras_mtanet.version import __version__

CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, CARD_FILE = "config.json", "model.weights.h5", "metadata.json", "README.md"
HASHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
PRESET_FILES = HASHED_FILES + (METADATA_FILE,)
REGISTRY_FILE = "preset.json"
DEFAULT_PRESET = "mtanet_se_resnet18_synth"
ZOO_PATH_VARIABLE = "KERAS_MTANET_ZOO_PATH"


class PresetError(Exception):
    """A preset cannot be found, fetched, verified or loaded; the message says what to do."""


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
    embedded presets ``embedded: true``. ``folder`` is added: the entry's registry folder.
    """
    presets = {}
    for root in zoo_dirs():
        if not root.is_dir():
            continue
        for entry_file in sorted(root.glob(f"*/{REGISTRY_FILE}")):
            try:
                entry = json.loads(entry_file.read_text())
            except (OSError, ValueError) as error:
                raise PresetError(f"{entry_file}: unreadable registry entry ({error})") from None
            entry["folder"] = str(entry_file.parent)
            presets[entry_file.parent.name] = entry
    return presets


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
        "input": "RGB face crop, values in [0, 255] (normalisation to [-1, 1] is inside the model)",
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
    (folder / CONFIG_FILE).write_text(json.dumps(model.get_config(), indent=2) + "\n")
    # An uncompiled copy: a compiled model's weight file would also carry the optimizer's slots.
    bare = type(model).from_config(model.get_config())
    bare.set_weights(model.get_weights())
    bare.save_weights(folder / WEIGHTS_FILE)
    (folder / CARD_FILE).write_text(model_card)
    meta = dict(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in HASHED_FILES}
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def read_metadata(folder):
    path = Path(folder) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PresetError(f"{path}: missing; {folder} is not a keras_mtanet preset folder") from None
    except (OSError, ValueError) as error:
        raise PresetError(f"{path}: unreadable preset metadata ({error})") from None


def verify_files(folder, expected, delete_bad=False):
    """Check the sha256 of each file in ``expected`` (``{name: sha256}``) under ``folder``.

    A mismatch raises ``PresetError`` naming the file; with ``delete_bad`` the file is deleted first (and the
    cache blob behind it, when it is a symbolic link into a Hugging Face cache) so a retry downloads it anew.
    """
    folder = Path(folder)
    for name, digest in expected.items():
        path = folder / name
        if not path.exists():
            raise PresetError(f"{path}: missing from the preset")
        actual = sha256_file(path)
        if actual != digest:
            if delete_bad:
                target = path.resolve()
                path.unlink()
                if target != path and target.exists():
                    target.unlink()
            raise PresetError(f"{path}: sha256 {actual[:12]}... does not match the expected {digest[:12]}...; "
                              + ("the corrupt file was deleted, load again to download it anew"
                                 if delete_bad else "the file is corrupt or was modified"))


def load_preset_folder(folder, expected_files=None, delete_bad=False, compile=False):
    """Build the ``MTANet`` stored in a preset folder and load its weights, after checking checksums.

    Args:
        folder: a preset folder.
        expected_files: ``{name: sha256}`` that must match (e.g. from the registry); the folder's own
            ``metadata.json`` hashes are always checked too.
        delete_bad: delete files whose checksum does not match (downloaded copies).
        compile: call ``model.compile()`` with the defaults.

    Returns:
        The model; its ``metadata`` attribute holds ``metadata.json`` as a dict.
    """
    from keras_mtanet.model import MTANet

    folder = Path(folder)
    if not folder.is_dir():
        raise PresetError(f"{folder}: no such preset folder")
    expected_files = dict(expected_files or {})
    if METADATA_FILE in expected_files:  # checked before it is trusted for the other files' hashes
        verify_files(folder, {METADATA_FILE: expected_files.pop(METADATA_FILE)}, delete_bad)
    metadata = read_metadata(folder)
    verify_files(folder, {**metadata.get("files", {}), **expected_files}, delete_bad)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = MTANet.from_config(config)
    except (OSError, ValueError, TypeError) as error:
        raise PresetError(f"{folder / CONFIG_FILE}: cannot build the model ({error})") from None
    try:
        model.load_weights(folder / WEIGHTS_FILE)
    except (OSError, ValueError) as error:
        raise PresetError(f"{folder / WEIGHTS_FILE}: cannot load the weights ({error})") from None
    if compile:
        model.compile()
    model.metadata = metadata
    return model
