"""Presets: the folder format of a trained MTANet, the registry of named presets, and the model card.

A preset folder holds::

    config.json        the model architecture (``MTANet.get_config()``)
    model.weights.h5   the weights
    preprocessor.json  the image converter's config (input size, colour mode, normalisation, alignment
                       template); written for models that have ``model.preprocessor``, optional when read
    metadata.json      label names, input size, normalisation, training data, metrics, package version and the
                       sha256 of every other file
    README.md          the model card, with Hugging Face Hub YAML front matter (``huggingface_hub.ModelCard``)

A preset is named by a registry name, ``hf://org/repo[@revision]`` or a local folder; ``resolve`` turns any of
them into a checked folder and ``load`` into a model. The registry is one folder per named preset (the repo's
``zoo/<name>/``, installed as the ``keras_mtanet.registry`` package data), each with ``preset.json``:
description, Hub repo id and pinned commit, per-file sha256, training config and metrics. A preset whose
folder also holds the files above is embedded: it loads with no network. More registry folders can be added
with the ``KERAS_MTANET_ZOO_PATH`` environment variable (``os.pathsep``-separated), e.g. for an organisation's
private presets. Presets are untrusted data: ``keras_mtanet.preset_checks`` holds the checks made before one
is parsed or built. Hub transfer is ``keras_mtanet.hub``.
"""

import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

from keras_mtanet import files
from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.files import sha256_file
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, VA_NAMES
from keras_mtanet.preset_checks import (  # noqa: F401  (the checks keep their keras_mtanet.zoo names)
    CARD_FILE, CONFIG_FILE, HASHED_FILES, MAX_JSON_BYTES, MAX_PARAMETERS, METADATA_FILE, MODEL_CONFIG_DEFAULTS,
    COMMIT, OPTIONAL_FILES, PREPROCESSOR_FILE, PRESET_FILES, WEIGHTS_FILE, check_before_build, check_file_map,
    check_folder, check_model_config, check_registry_entry, check_same_preprocessor, config_parameters, member,
    read_json, read_metadata, verify_files, weights_file_parameters)
from keras_mtanet.version import __version__

REGISTRY_FILE = "preset.json"
DEFAULT_PRESET = "mtanet_se_resnet18_ferplus_112"  # trained on FER+ (real faces); see its model card
SYNTHETIC_PRESET = "mtanet_se_resnet18_synth"  # trained on the package's synthetic faces: tests and tutorials
ZOO_PATH_VARIABLE = "KERAS_MTANET_ZOO_PATH"
HF_SCHEME = "hf://"

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
    return dirs + [Path(p) for p in extra.split(os.pathsep) if p]


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
                entry = check_registry_entry(read_json(entry_file, "registry entry"), entry_file)
            except PresetError as error:
                entry = {"error": str(error)}
            entry["folder"] = str(entry_file.parent)
            presets[entry_file.parent.name] = entry
    return presets


def registry_entry(folder, repo_id, revision, description):
    """A registry ``preset.json`` entry pinning ``repo_id`` at commit ``revision`` with the folder's hashes."""
    if not COMMIT.fullmatch(revision):
        raise PresetError(f"pin registry entries to a full commit sha, not {revision!r}")
    folder = Path(folder)
    meta = read_metadata(folder)
    names = PRESET_FILES + tuple(name for name in OPTIONAL_FILES if name in meta["files"])
    return {"description": description, "repo_id": repo_id, "revision": revision,
            "files": {name: sha256_file(folder / name) for name in names},
            "training_data": meta.get("training_data"), "metrics": meta.get("metrics", {}),
            "backbone": meta.get("backbone"), "input_size": meta.get("input_size")}


# ---------------------------------------------------------------------------------------------------------
# writing the folder format


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


def _hashed_names(folder, listed=()):
    """The files ``metadata.json`` lists: the hashed ones, and the optional ones written (``listed``)."""
    return HASHED_FILES + tuple(name for name in OPTIONAL_FILES if name in listed and (folder / name).exists())


def save_preset(model, folder, metadata, model_card):
    """Write ``model`` as a preset folder; returns the folder path.

    Args:
        model: an ``MTANet``.
        folder: destination (created).
        metadata: dict from ``preset_metadata``.
        model_card: the README.md: text with YAML front matter, or a ``huggingface_hub.ModelCard``
            (``make_model_card``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Each file goes to a temporary name and is renamed into place; metadata.json, which makes the folder a
    # preset, comes last, so a kill part-way leaves no preset that looks complete.
    files.write_atomic(folder / CONFIG_FILE, files.dump_json(model.get_config()))
    # An uncompiled copy: a compiled model's weight file would also carry the optimizer's slots.
    bare = type(model).from_config(model.get_config())
    bare.set_weights(model.get_weights())
    with files.atomic_output(folder / WEIGHTS_FILE) as tmp:
        bare.save_weights(tmp)
    written = []
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None:
        files.write_atomic(folder / PREPROCESSOR_FILE, files.dump_json(preprocessor.get_config()))
        written.append(PREPROCESSOR_FILE)
    files.write_atomic(folder / CARD_FILE, str(model_card))
    meta = dict(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in _hashed_names(folder, written)}
    files.write_atomic(folder / METADATA_FILE, files.dump_json(meta))
    return folder


def update_preset(folder, model_card=None, **metadata):
    """Replace a preset folder's model card and/or metadata fields, and re-list the files' sha256 in
    ``metadata.json`` (e.g. to write a fuller card after training). Returns the new metadata."""
    folder = Path(folder)
    meta = read_metadata(folder)
    if model_card is not None:
        files.write_atomic(folder / CARD_FILE, str(model_card))
    meta.update(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in _hashed_names(folder, meta["files"])}
    files.write_atomic(folder / METADATA_FILE, files.dump_json(meta))
    return meta


# ---------------------------------------------------------------------------------------------------------
# reading the folder format


def load_preset_folder(folder, expected_files=None, cache_root=None, compile=False, cls=None):
    """Build the ``MTANet`` stored in a preset folder and load its weights, after checking it.

    A preset is untrusted data: file names must be plain names of regular files inside the folder, every file
    is hashed against ``expected_files`` (pinned, e.g. by the registry) and the folder's own ``metadata.json``
    before it is parsed, and ``config.json`` is checked for types and ranges, and the number of weights it
    implies against the weights file, before a model is built. A ``preprocessor.json`` the metadata lists must
    agree with ``config.json`` and with the built model's ``preprocessor``. Every problem is one
    ``PresetError`` line naming the file.

    Args:
        folder: a preset folder.
        expected_files: ``{name: sha256}`` that must match (e.g. from the registry); the folder's own
            ``metadata.json`` hashes are always checked too.
        cache_root: the Hugging Face cache folder of the repo when ``folder`` is one of its snapshots: files
            may link into it, and corrupt ones are deleted there so that a retry downloads them anew.
        compile: call ``model.compile()`` with the defaults.
        cls: the class built with ``cls.from_config(config)``: ``MTANet`` (default) or a subclass with the
            same weights.

    Returns:
        The model; its ``metadata`` attribute holds ``metadata.json`` as a dict.
    """
    if cls is None:
        from keras_mtanet.model import MTANet as cls

    folder = Path(folder)
    metadata = check_folder(folder, expected_files, cache_root)
    config, weights_path, preprocessor = check_before_build(folder, metadata, cache_root)
    try:
        model = cls.from_config(config)
    except (ValueError, TypeError) as error:
        raise PresetError(f"{folder / CONFIG_FILE}: cannot build the model ({first_line(error)})") from None
    if preprocessor is not None and getattr(model, "preprocessor", None) is not None:
        check_same_preprocessor(preprocessor, model.preprocessor.get_config(), folder / PREPROCESSOR_FILE)
    with warnings.catch_warnings(record=True) as said:  # Keras's multi-line notes on what it could not match
        warnings.simplefilter("always")
        try:
            model.load_weights(weights_path)
        except Exception as error:  # any failure to read the (checked) file is the preset's fault, one line
            raise PresetError(f"{folder / WEIGHTS_FILE}: does not fit the model in config.json "
                              f"({_weights_reason(error)})") from None
    for note in said:  # loaded after all: Keras's notes are shown as it gave them
        warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
    if compile:
        model.compile()
    model.metadata = metadata
    return model


def _weights_reason(error):
    """Why ``load_weights`` failed, in one short line: the layer and the two shapes when Keras says (its message
    spans lines and quotes the whole variable), else its first line."""
    text = str(error)
    layer = re.search(r"object <(\w+) name=([^,>]+)", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if layer and shapes:
        return (f"layer {layer.group(2)} ({layer.group(1)}): weights of shape {shapes.group(2)}, the model's are "
                f"{shapes.group(1)}")
    return first_line(error)


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
    from keras_mtanet import hub

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
        cache_dir, token, endpoint: for the Hub (``keras_mtanet.hub.download``).

    Returns:
        The folder's ``Path`` (for a Hub preset, the snapshot folder in the Hugging Face cache).
    """
    located = locate(spec, revision, cache_dir, token, endpoint)
    check_folder(located.folder, located.expected_files, located.cache_root)
    return located.folder


def load(spec=None, compile=False, cls=None, revision=None, cache_dir=None, token=None, endpoint=None):
    """The model of a preset (``spec`` as for ``resolve``), checked and built by ``load_preset_folder``.

    Returns the task model (an ``MTANet``, or ``cls``), with ``metadata``; a caller that wants only a part of
    it (``SEResNetBackbone.from_preset``) takes that part of the returned model.
    """
    located = locate(spec, revision, cache_dir, token, endpoint)
    return load_preset_folder(located.folder, expected_files=located.expected_files, cache_root=located.cache_root,
                              compile=compile, cls=cls)


# ---------------------------------------------------------------------------------------------------------
# the model card

CARD_TAGS = ("keras", "keras-mtanet", "facial-affect", "action-units", "valence-arousal",
             "facial-expression-recognition")
_CARD_ORDER = ["library_name", "license", "license_name", "pipeline_tag", "tags", "datasets", "metrics"]


def card_metrics(metrics):
    """The Hub metric ids for the metrics a preset reports: ``ccc`` (valence/arousal), ``f1``, ``accuracy``."""
    keys = [str(k) for k in metrics or {}]
    found = {"ccc": any("ccc" in k or k.startswith("va") for k in keys), "f1": any("f1" in k for k in keys),
             "accuracy": any("acc" in k for k in keys)}
    return [name for name, present in found.items() if present]


def make_model_card(meta, title, intended_use=None, limitations=None, spec=None):
    """The model card of a preset, from its metadata: a ``huggingface_hub.ModelCard`` whose YAML front matter
    (``ModelCardData``: library, license, task, tags, datasets, metric ids) the Hub reads; ``str(card)`` is
    the README.md. ``license`` / ``license_name`` in the metadata override the package's Apache-2.0 (e.g. for
    weights under a data set's terms). ``spec``: what the card tells users to load (default ``title``)."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics = meta.get("metrics") or {}
    data = ModelCardData(library_name="keras", license=meta.get("license") or "apache-2.0",
                         license_name=meta.get("license_name"), pipeline_tag="image-classification",
                         tags=list(CARD_TAGS), datasets=list(meta.get("datasets") or []) or None,
                         metrics=card_metrics(metrics) or None)
    lines = [f"# {title}", "", meta.get("description") or "A keras_mtanet MTANet preset.", "",
             "## Model", "",
             (f"MTANet (Zhang & Gu, arXiv:2002.00606) with a {meta.get('backbone')} backbone, input "
             f"{meta['input_size'][0]}x{meta['input_size'][1]} RGB in [0, 255]; outputs valence/arousal "
             f"({', '.join(meta['va_names'])}), {len(meta['au_names'])} AU probabilities "
             f"({', '.join(meta['au_names'])}) and {len(meta['expression_names'])} expression "
             f"probabilities ({', '.join(meta['expression_names'])}). {meta.get('parameters', 0):,} parameters."), "",
             "## Trained on", "", str(meta.get("training_data")), "",
             "## Intended use", "", intended_use or "Research on facial affect estimation.", "",
             "## Limitations", "", limitations or "Not validated for decisions about people.", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Use", "", "```python", "import keras_mtanet", "",
              f"model = keras_mtanet.load_pretrained({spec or title!r})", "```", ""]
    return ModelCard(f"---\n{data.to_yaml(original_order=_CARD_ORDER)}\n---\n\n" + "\n".join(lines))


def model_card_text(meta, title, intended_use=None, limitations=None, spec=None):
    """``make_model_card`` as README.md text."""
    return str(make_model_card(meta, title, intended_use, limitations, spec))
