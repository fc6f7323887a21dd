"""The preset format (keras_mtanet.presets.folder, .registry, .card): resolving names and folders offline,
image_converter.json, the model card."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model

from keras_mtanet import PresetError, files
from keras_mtanet.model.task import MTANet
from keras_mtanet.presets import card, checks, registry
from keras_mtanet.presets import folder as preset_folder

FULL_METRICS = {"ccc_valence": 0.8, "ccc_arousal": 0.7, "va_score": 0.75, "expr_f1": 0.5, "expr_acc": 0.6,
                "au_f1": 0.4, "au_acc": 0.9}
# Not the default template: a preset that carries it must give it back.
TEMPLATE = [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]


def trained_looking(**overrides):
    model = tiny_model(**overrides)
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def save(model, folder, **meta_kwargs):
    meta = preset_folder.preset_metadata(model, "nothing (test)", **meta_kwargs)
    return preset_folder.save_preset(model, folder, meta, card.make_model_card(meta, "t"))


def same_predictions(a, b, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    pa, pb = a.predict(images, verbose=0), b.predict(images, verbose=0)
    return all(np.array_equal(pa[k], pb[k]) for k in pa)


def rehash(folder, name):
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    meta["files"][name] = files.sha256_file(folder / name)
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A grey-trained-looking tiny model with its own alignment template, saved once: (model, folder)."""
    model = trained_looking(color_mode="grayscale", alignment_template=TEMPLATE)
    return model, save(model, tmp_path_factory.mktemp("p") / "preset", metrics=FULL_METRICS)


# -------------------------------------------------------------------------------------- resolve and load

def test_a_local_folder_and_a_registry_name_resolve_and_load_offline(saved, tmp_path, monkeypatch):
    model, folder = saved
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert registry.resolve(str(folder)) == folder
    assert same_predictions(model, preset_folder.load(folder))  # a Path works as well as a string
    # The same files as a registry entry in an extra registry folder, pinned by their sha256.
    entry_folder = tmp_path / "zoo" / "tiny_local"
    shutil.copytree(folder, entry_folder)
    pinned = {name: files.sha256_file(folder / name) for name in (*checks.PRESET_FILES, checks.CONVERTER_FILE)}
    (entry_folder / registry.REGISTRY_FILE).write_text(json.dumps({"description": "t", "embedded": True,
                                                                  "files": pinned}))
    monkeypatch.setenv(registry.ZOO_PATH_VARIABLE, str(tmp_path / "zoo"))
    assert registry.resolve("tiny_local") == entry_folder
    loaded = preset_folder.load("tiny_local")
    assert same_predictions(model, loaded) and not same_predictions(tiny_model(color_mode="grayscale"), loaded)
    synthetic = registry.list_presets()[registry.SYNTHETIC_PRESET]
    assert registry.resolve(registry.SYNTHETIC_PRESET) == Path(synthetic["folder"])
    # A pinned hash that the file does not have: refused before anything is parsed, and the file is kept.
    pinned[checks.CONVERTER_FILE] = "0" * 64
    (entry_folder / registry.REGISTRY_FILE).write_text(json.dumps({"description": "t", "embedded": True,
                                                                  "files": pinned}))
    with pytest.raises(PresetError, match=r"image_converter\.json: sha256 .* modified"):
        registry.resolve("tiny_local")
    assert (entry_folder / checks.CONVERTER_FILE).exists()
    with pytest.raises(PresetError, match="embedded in the package and has no revisions"):
        preset_folder.load("tiny_local", revision="main")


def test_load_builds_the_class_asked_for(saved):
    class Tuned(MTANet):
        pass

    model, folder = saved
    loaded = preset_folder.load(str(folder), cls=Tuned)
    assert type(loaded) is Tuned and same_predictions(model, loaded)
    assert MTANet.from_preset(str(folder)).metadata["files"] == loaded.metadata["files"]


def test_patching_the_default_preset_changes_what_resolve_loads(monkeypatch):
    from keras_mtanet.presets import registry

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)  # as the inference tests do
    assert registry.resolve() == registry.resolve(registry.SYNTHETIC_PRESET)


# ------------------------------------------------------------------------------ image_converter.json

def test_image_converter_json_round_trip(saved):
    model, folder = saved
    written = json.loads((folder / checks.CONVERTER_FILE).read_text())
    assert written == json.loads(json.dumps(model.preprocessor.get_config()))
    assert written["color_mode"] == "grayscale" and written["image_size"] == [32, 32]
    assert written["alignment_template"] == TEMPLATE
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    assert meta["files"][checks.CONVERTER_FILE] == files.sha256_file(folder / checks.CONVERTER_FILE)
    loaded = preset_folder.load(str(folder))
    assert loaded.preprocessor.get_config() == model.preprocessor.get_config()
    assert np.array_equal(loaded.preprocessor.template, np.array(TEMPLATE))


@pytest.mark.parametrize("change, expected", [
    ({"color_mode": "rgb"}, "color_mode 'rgb' differs from config.json's 'grayscale'"),
    ({"image_size": [64, 64]}, r"image_size \[64, 64\] differs from config.json's \[32, 32\]"),
    ({"scale": 1 / 255}, "scale 0.0039.* differs from the model built from config.json"),
    ({"alignment_template": [[0.3, 0.45]] + TEMPLATE[1:]}, "alignment_template .* differs from the model built"),
    ({"scale": "1/127.5"}, "scale must be a finite number"),
    ({"alignment_template": [[0.3, 0.4]]}, "alignment_template must be null or five"),
    ({"color_mode": None}, "color_mode must be one of rgb, grayscale"),
    ("drop offset", "lacks offset"),
    ("a list", "expected a JSON object, got list"),
])
def test_an_image_converter_file_that_disagrees_with_the_model_is_refused(saved, tmp_path, monkeypatch, change,
                                                                          expected):
    _, original = saved
    folder = Path(shutil.copytree(original, tmp_path / "p"))
    config = json.loads((folder / checks.CONVERTER_FILE).read_text())
    if change == "drop offset":
        del config["offset"]
    elif change == "a list":
        config = [config]
    else:
        config.update(change)
    (folder / checks.CONVERTER_FILE).write_text(json.dumps(config))
    rehash(folder, checks.CONVERTER_FILE)  # as a hostile publisher would
    if "differs from the model built" not in expected:
        def no_build(*args, **kwargs):
            raise AssertionError("a model was built from a preset that disagrees with itself")

        monkeypatch.setattr(MTANet, "from_config", classmethod(no_build))
    with pytest.raises(PresetError, match=expected) as info:
        preset_folder.load(str(folder))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(folder / checks.CONVERTER_FILE))


def test_an_oversized_image_converter_file_is_refused(saved, tmp_path):
    folder = Path(shutil.copytree(saved[1], tmp_path / "p"))
    (folder / checks.CONVERTER_FILE).write_text(" " * (checks.MAX_JSON_BYTES + 1) + "{}")
    rehash(folder, checks.CONVERTER_FILE)
    with pytest.raises(PresetError, match=r"image_converter\.json: image converter config larger than 1024 KiB"):
        preset_folder.load(str(folder))


def test_presets_without_an_image_converter_file_still_load(saved, tmp_path):
    model, original = saved
    folder = Path(shutil.copytree(original, tmp_path / "p"))
    (folder / checks.CONVERTER_FILE).unlink()
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    del meta["files"][checks.CONVERTER_FILE]
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    assert same_predictions(model, preset_folder.load(str(folder)))
    # A FER+ preset from before the model held its alignment template: the metadata's template reaches the model.
    ferplus = preset_folder.load(registry.DEFAULT_PRESET)
    assert not (registry.resolve(registry.DEFAULT_PRESET) / checks.CONVERTER_FILE).exists()
    assert ferplus.preprocessor.alignment_template == ferplus.metadata["alignment_template"]
    assert ferplus.preprocessor.color_mode == ferplus.metadata["color_mode"] == "grayscale"


# ---------------------------------------------------------------------------------------------- model card

def test_the_model_card_parses_back_to_the_metadata(saved, tmp_path):
    from huggingface_hub import ModelCard

    _, folder = saved
    loaded = ModelCard.load(folder / checks.CARD_FILE)
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    data = loaded.data.to_dict()
    assert data == {"library_name": "keras", "license": "apache-2.0", "pipeline_tag": "image-classification",
                    "tags": list(card.CARD_TAGS), "metrics": ["ccc", "f1", "accuracy"]}
    text = (folder / checks.CARD_FILE).read_text()
    assert text.startswith("---\nlibrary_name: keras\nlicense: apache-2.0\n")
    sections = [line for line in loaded.text.splitlines() if line.startswith("#")]
    assert sections == ["# t", "## Model", "## Trained on", "## Intended use", "## Limitations", "## Metrics", "## Use"]
    assert "\n## Trained on\n\nnothing (test)\n" in loaded.text
    assert f"{meta['parameters']:,} parameters" in loaded.text and "input 32x32 RGB in [0, 255]" in loaded.text
    assert "| expr_f1 | 0.500 |" in loaded.text and "| au_acc | 0.900 |" in loaded.text
    assert "keras_mtanet.load_pretrained('t')" in loaded.text

    # Only what the metadata holds: no metric ids for absent metrics, the data set and licence it names.
    meta = {**meta, "metrics": {"va_score": 0.1}, "datasets": ["FER+"], "license": "other",
            "license_name": "fer2013-research-terms"}
    made = card.make_model_card(meta, "org/x", intended_use="Tests.", spec="hf://org/x")
    (tmp_path / "README.md").write_text(str(made))
    back = ModelCard.load(tmp_path / "README.md")
    assert back.data.metrics == ["ccc"] and back.data.datasets == ["FER+"]
    assert back.data.license == "other" and back.data.license_name == "fer2013-research-terms"
    assert "\n## Intended use\n\nTests.\n" in back.text and "load_pretrained('hf://org/x')" in back.text
    no_metrics = card.make_model_card({**meta, "metrics": {}}, "x")
    assert "metrics" not in no_metrics.data.to_dict() and "## Metrics" not in no_metrics.text
    assert card.model_card_text(meta, "org/x", "Tests.", spec="hf://org/x") == str(made)
