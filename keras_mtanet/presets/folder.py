"""The preset folder format: writing a trained MTANet as a preset, and building one from a checked folder.

A preset folder holds::

    config.json           the model architecture (``MTANet.get_config()``)
    model.weights.h5      the weights
    image_converter.json  the image converter's config (input size, colour mode, normalisation, alignment
                          template); written for models that have ``model.preprocessor``, optional when read
                          (presets written before it was renamed hold ``preprocessor.json``, read the same)
    metadata.json         the architecture's registered class name, label names, input size, normalisation,
                          training data, metrics, package version and the sha256 of every other file
    README.md             the model card, with Hugging Face Hub YAML front matter (``keras_mtanet.presets.card``)

``load`` builds the model of any preset name, ``hf://`` address or folder (``keras_mtanet.presets.registry``);
the model class comes from the caller (``MTANet.from_preset``) or from the Keras registry, by the name the
metadata gives. Every file is checked (``keras_mtanet.presets.checks``) before it is parsed.
"""

import re
import warnings
from pathlib import Path

from keras_mtanet import files
from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.files import sha256_file
from keras_mtanet.labels import AU_NAMES, AU_THRESHOLD, EXPR_NAMES, VA_NAMES
from keras_mtanet.presets import checks, registry
from keras_mtanet.presets.checks import (
    CARD_FILE,
    CONFIG_FILE,
    CONVERTER_FILE,
    HASHED_FILES,
    METADATA_FILE,
    WEIGHTS_FILE,
)
from keras_mtanet.version import __version__


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
        "normalization": {"input_range": [0, 255], "scale": model.preprocessor.scale,
                          "offset": model.preprocessor.offset},
        "va_names": list(VA_NAMES),
        "au_names": list(AU_NAMES),
        "expression_names": list(EXPR_NAMES),
        "au_threshold": AU_THRESHOLD,
        "training_data": training_data,
        "metrics": metrics or {},
        "package_version": __version__,
        "parameters": int(model.count_params()),
    }
    meta.update(extra or {})
    return meta


def _hashed_names(folder, listed=()):
    """The files ``metadata.json`` lists: the hashed ones, and the optional ones written (``listed``)."""
    return HASHED_FILES + tuple(name for name in checks.OPTIONAL_FILES if name in listed and (folder / name).exists())


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
    converter = getattr(model, "preprocessor", None)
    if converter is not None:
        files.write_atomic(folder / CONVERTER_FILE, files.dump_json(converter.get_config()))
        written.append(CONVERTER_FILE)
    files.write_atomic(folder / CARD_FILE, str(model_card))
    meta = dict(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in _hashed_names(folder, written)}
    files.write_atomic(folder / METADATA_FILE, files.dump_json(meta))
    return folder


def update_preset(folder, model_card=None, **metadata):
    """Replace a preset folder's model card and/or metadata fields, and re-list the files' sha256 in
    ``metadata.json`` (e.g. to write a fuller card after training). Returns the new metadata."""
    folder = Path(folder)
    meta = checks.read_metadata(folder)
    if model_card is not None:
        files.write_atomic(folder / CARD_FILE, str(model_card))
    meta.update(metadata)
    meta["files"] = {f: sha256_file(folder / f) for f in _hashed_names(folder, meta["files"])}
    files.write_atomic(folder / METADATA_FILE, files.dump_json(meta))
    return meta


def load_preset_folder(folder, expected_files=None, cache_root=None, compile=False, cls=None):
    """Build the ``MTANet`` stored in a preset folder and load its weights, after checking it.

    A preset is untrusted data: file names must be plain names of regular files inside the folder, every file
    is hashed against ``expected_files`` (pinned, e.g. by the registry) and the folder's own ``metadata.json``
    before it is parsed, and ``config.json`` is checked for types and ranges, and the number of weights it
    implies against the weights file, before a model is built. An ``image_converter.json`` (or the
    ``preprocessor.json`` of older presets) the metadata lists must agree with ``config.json`` and with the built
    model's ``preprocessor``. Every problem is one
    ``PresetError`` line naming the file.

    Args:
        folder: a preset folder.
        expected_files: ``{name: sha256}`` that must match (e.g. from the registry); the folder's own
            ``metadata.json`` hashes are always checked too.
        cache_root: the Hugging Face cache folder of the repo when ``folder`` is one of its snapshots: files
            may link into it, and corrupt ones are deleted there so that a retry downloads them anew.
        compile: call ``model.compile()`` with the defaults.
        cls: the class built with ``cls.from_config(config)``: by default the class the metadata names
            (``"architecture"``), found in the Keras registry; or a subclass with the same weights.

    Returns:
        The model; its ``metadata`` attribute holds ``metadata.json`` as a dict.
    """
    folder = Path(folder)
    metadata = checks.check_folder(folder, expected_files, cache_root)
    if cls is None:
        cls = checks.architecture(metadata, folder / METADATA_FILE)
    config, weights_path, converter = checks.check_before_build(folder, metadata, cls, cache_root)
    try:
        model = cls.from_config(config)
    except (ValueError, TypeError) as error:
        raise PresetError(f"{folder / CONFIG_FILE}: cannot build the model ({first_line(error)})") from None
    if converter is not None and getattr(model, "preprocessor", None) is not None:
        checks.check_same_converter(converter, model.preprocessor.get_config(),
                                    folder / checks.converter_file(metadata))
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


def load(spec=None, compile=False, cls=None, revision=None, cache_dir=None, token=None, endpoint=None):
    """The model of a preset (``spec`` as for ``resolve``), checked and built by ``load_preset_folder``.

    Returns the task model (an ``MTANet``, or ``cls``), with ``metadata``; a caller that wants only a part of
    it (``SEResNetBackbone.from_preset``) takes that part of the returned model.
    """
    located = registry.locate(spec, revision, cache_dir, token, endpoint)
    return load_preset_folder(located.folder, expected_files=located.expected_files, cache_root=located.cache_root,
                              compile=compile, cls=cls)
