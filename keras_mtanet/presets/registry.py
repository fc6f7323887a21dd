"""The registry of named presets, and where a preset name, ``hf://`` address or folder points.

The registry is one folder per named preset, ``keras_mtanet/presets/registry/<name>/`` (package data), each
with ``preset.json``: description, Hub repo id and pinned commit, per-file sha256, training data and metrics. A
preset whose folder also holds the preset files (``keras_mtanet.presets.folder``) is embedded: it loads with no
network. More registry folders can be added with the ``KERAS_MTANET_ZOO_PATH`` environment variable
(``os.pathsep``-separated), e.g. for an organisation's private presets. ``resolve`` turns a registry name,
``hf://org/repo[@revision]`` or a local folder into a checked folder; ``keras_mtanet.presets.folder.load``
builds its model. Hub transfer is ``keras_mtanet.presets.hub``; the checks of untrusted presets are
``keras_mtanet.presets.checks``.
"""

import os
import re
from pathlib import Path
from typing import NamedTuple

from keras_mtanet.errors import PresetError
from keras_mtanet.files import sha256_file
from keras_mtanet.presets import checks, hub

REGISTRY_FILE = "preset.json"
DEFAULT_PRESET = "mtanet_se_resnet18_ferplus_112"  # trained on FER+ (real faces); see its model card
SYNTHETIC_PRESET = "mtanet_se_resnet18_synth"  # trained on the package's synthetic faces: tests and tutorials
ZOO_PATH_VARIABLE = "KERAS_MTANET_ZOO_PATH"
HF_SCHEME = "hf://"
EMBEDDED_DIR = Path(__file__).resolve().parent / "registry"  # the embedded presets, installed as package data


def registry_dirs():
    """Registry folders: the package's own (``EMBEDDED_DIR``), then those named in ``KERAS_MTANET_ZOO_PATH``."""
    extra = os.environ.get(ZOO_PATH_VARIABLE, "")
    return [EMBEDDED_DIR] + [Path(p) for p in extra.split(os.pathsep) if p]


def list_presets():
    """``{name: registry entry}`` for every named preset; entries of later folders override earlier ones.

    Each entry holds at least ``description``; hub presets ``repo_id``, ``revision`` and ``files`` (sha256);
    embedded presets ``embedded: true``. ``folder`` is added: the entry's registry folder. An entry that cannot
    be read or is malformed is listed as ``{"error": "<one line>", "folder": ...}``: it fails when it is used,
    and does not stop the other presets from loading.
    """
    presets = {}
    for root in registry_dirs():
        if not root.is_dir():
            continue
        for entry_file in sorted(root.glob(f"*/{REGISTRY_FILE}")):
            try:
                entry = checks.check_registry_entry(checks.read_json(entry_file, "registry entry"), entry_file)
            except PresetError as error:
                entry = {"error": str(error)}
            entry["folder"] = str(entry_file.parent)
            presets[entry_file.parent.name] = entry
    return presets


def registry_entry(folder, repo_id, revision, description):
    """A registry ``preset.json`` entry pinning ``repo_id`` at commit ``revision`` with the folder's hashes."""
    if not checks.COMMIT.fullmatch(revision):
        raise PresetError(f"pin registry entries to a full commit sha, not {revision!r}")
    folder = Path(folder)
    meta = checks.read_metadata(folder)
    names = checks.PRESET_FILES + tuple(name for name in checks.OPTIONAL_FILES if name in meta["files"])
    return {"description": description, "repo_id": repo_id, "revision": revision,
            "files": {name: sha256_file(folder / name) for name in names},
            "training_data": meta.get("training_data"), "metrics": meta.get("metrics", {}),
            "backbone": meta.get("backbone"), "input_size": meta.get("input_size")}


# ---------------------------------------------------------------------------------------------------------
# names, hf:// addresses and folders


def parse_hf_uri(uri):
    """``"hf://org/repo@rev"`` -> ``("org/repo", "rev")`` (revision ``None`` when absent)."""
    repo_id, _, revision = uri[len(HF_SCHEME):].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PresetError(f"{uri!r}: expected hf://ORG/REPO or hf://ORG/REPO@REVISION")
    check_repo_id(repo_id, repr(uri))
    return repo_id, revision or None


# The Hub's rule for a repo id (huggingface_hub.utils.validate_repo_id): ORG/NAME, each of letters, digits, "_",
# "-" and ".", starting and ending with a letter, digit or "_", no "--" or "..", 96 characters at most.
_REPO_ID = re.compile(r"\w(?:[\w.-]*\w)?/\w(?:[\w.-]*\w)?", re.ASCII)


def check_repo_id(repo_id, shown=None):
    """``PresetError`` (starting with ``shown``, default the id) unless ``repo_id`` is a valid Hub repo id."""
    if not (_REPO_ID.fullmatch(repo_id) and "--" not in repo_id and ".." not in repo_id and len(repo_id) <= 96):
        raise PresetError(f"{shown or repr(repo_id)}: {repo_id!r} is not a valid Hub repo id (ORG/NAME: letters, "
                          "digits, '-', '_' and '.', no '--' or '..', at most 96 characters)")


class Located(NamedTuple):
    """Where a preset is: its folder, the sha256 its files must have beyond its own ``metadata.json``
    (``None``: none pinned), and the Hub cache folder it lies in (``None``: not a Hub snapshot)."""
    folder: Path
    expected_files: dict | None
    cache_root: Path | None


def locate(spec=None, revision=None, cache_dir=None, token=None, endpoint=None):
    """Find (downloading if needed) the folder of preset ``spec``; see ``resolve``. Returns ``Located``."""
    name = DEFAULT_PRESET if spec is None else str(spec)
    if not name:  # not the current folder
        raise PresetError("empty preset name; give a preset name, hf://ORG/REPO or a preset folder (None: the "
                          "default preset)")
    presets = list_presets()
    if name in presets:
        entry = presets[name]
        if "error" in entry:
            raise PresetError(entry["error"])
        if entry.get("embedded"):
            if revision is not None:
                raise PresetError(f"preset {name!r} is embedded in the package and has no revisions")
            return Located(Path(entry["folder"]), entry.get("files"), None)
        folder = hub.download(entry["repo_id"], revision or entry["revision"], entry["files"], cache_dir, token,
                              endpoint)
        pinned = revision is None or revision == entry["revision"]
        return Located(folder, entry["files"] if pinned else None, folder.parents[1])
    if name.startswith(HF_SCHEME):
        repo_id, uri_revision = parse_hf_uri(name)
        folder = hub.download(repo_id, revision or uri_revision or "main", None, cache_dir, token, endpoint)
        return Located(folder, None, folder.parents[1])
    path = Path(name).expanduser()
    if path.is_dir():
        return Located(path, None, None)
    known = ", ".join(sorted(presets)) or "none"
    raise PresetError(f"{name!r} is not a preset name ({known}), an hf://ORG/REPO address or a preset folder")


def resolve(spec=None, revision=None, cache_dir=None, token=None, endpoint=None):
    """The checked folder of a preset: a registry name (default ``DEFAULT_PRESET``), ``hf://org/repo[@rev]``
    or a local folder.

    Embedded and local presets need no network. Registry presets download at their pinned commit and each
    file must match the registry's sha256 (a corrupt cached file is deleted so that the next call fetches it
    anew); ``hf://`` presets download at one commit (``@rev`` or ``revision``: a sha, tag or branch; default
    ``main``) and are checked against their own ``metadata.json``. Nothing beyond ``metadata.json`` is parsed.

    Args:
        spec: preset name, ``hf://`` address or folder path.
        revision: overrides the registry's pinned commit or the address's ``@rev``.
        cache_dir, token, endpoint: for the Hub (``keras_mtanet.presets.hub.download``).

    Returns:
        The folder's ``Path`` (for a Hub preset, the snapshot folder in the Hugging Face cache).
    """
    located = locate(spec, revision, cache_dir, token, endpoint)
    checks.check_folder(located.folder, located.expected_files, located.cache_root)
    return located.folder
