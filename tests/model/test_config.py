"""The one schema of the architecture (keras_mtanet.model.config): its defaults are the constructors', its
weight count is the built model's, and a bound changed there is the bound of the constructor, of the checks of
untrusted presets and of the training recipe alike."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY, tiny_model

from keras_mtanet import MTANet, PresetError, UsageError
from keras_mtanet.model import config
from keras_mtanet.presets import card
from keras_mtanet.presets import folder as preset_folder
from keras_mtanet.training import recipe


def test_the_defaults_are_the_constructors():
    built = MTANet(**TINY).get_config()
    defaults = {key: rule.default for key, rule in config.SETTINGS.items() if key not in ("num_aus", "num_expressions")}
    assert {**defaults, **json.loads(json.dumps(TINY))} == built
    assert config.check({}) == {key: rule.default for key, rule in config.SETTINGS.items()}


@pytest.mark.parametrize("overrides", [{}, {"se_ratio": 0}, {"fold_batchnorm": True}, {"backbone": "se_resnet50"},
                                       {"width": 0.3, "head_filters": 7}])
def test_the_weight_count_is_the_built_models(overrides):
    model = tiny_model(**overrides)
    assert config.parameters(model.get_config()) == model.count_params()


def test_a_bound_changed_in_the_schema_is_followed_by_constructor_preset_check_and_recipe(tmp_path, monkeypatch):
    model = tiny_model(width=0.5)
    meta = preset_folder.preset_metadata(model, "a test")
    folder = preset_folder.save_preset(model, tmp_path / "preset", meta, card.make_model_card(meta, "t"))
    # Today width 0.5 is inside the bounds everywhere.
    MTANet(**{**TINY, "width": 0.5})
    preset_folder.load(folder)
    recipe.check_config({"width": 0.5})

    narrower = config.Setting(1.0, *config.number(0.01, 0.4))
    monkeypatch.setitem(config.SETTINGS, "width", narrower)
    with pytest.raises(ValueError, match=r"^width must be a number from 0.01 to 0.4, got 0.5$"):
        MTANet(**{**TINY, "width": 0.5})
    with pytest.raises(PresetError, match=r"config\.json: width must be a number from 0.01 to 0.4, got 0.5$"):
        preset_folder.load(folder)
    with pytest.raises(UsageError, match=r"^training config: width must be a number from 0.01 to 0.4, got 0.5$"):
        recipe.check_config({"width": 0.5})

    # The input side bound the same way: the constructor, a preset's config.json and the recipe's input_size.
    monkeypatch.setattr(config, "INPUT_SIDE", (16, 24))
    with pytest.raises(ValueError, match="input_shape must be \\[height, width, 3\\] with sides from 16 to 24"):
        tiny_model()
    with pytest.raises(UsageError, match="input_size must be a whole number from 16 to 24"):
        recipe.check_config({"input_size": 32})
    monkeypatch.setitem(config.SETTINGS, "width", config.Setting(1.0, *config.number(0.01, 4.0)))
    with pytest.raises(PresetError, match="input_shape must be"):
        preset_folder.load(folder)


def test_a_config_with_an_unknown_key_or_a_serialised_object_is_refused():
    with pytest.raises(ValueError, match="unknown model config key\\(s\\) blocks"):
        config.check({"blocks": 3})
    with pytest.raises(ValueError, match="backbone must be one of se_resnet18"):
        config.check({"backbone": {"class_name": "Lambda", "config": {}}})


def test_the_legacy_preprocessor_json_preset_loads_and_predicts_the_same(tmp_path):
    """A preset written by 0.1.0 as of b41459d (tests/data/legacy/make_legacy_preset.py) keeps its image converter
    in preprocessor.json: it is checked and read as image_converter.json is."""
    import numpy as np

    legacy = Path(__file__).parents[1] / "data" / "legacy"
    folder = shutil.copytree(legacy / "preprocessor_preset", tmp_path / "p")
    model = MTANet.from_preset(str(folder))
    assert model.color_mode == "grayscale" and model.preprocessor.alignment_template[0] == [0.3, 0.4]
    expected = np.load(legacy / "preprocessor_preset_outputs.npz")
    out = model.predict(np.load(legacy / "inputs.npy").astype("float32"), verbose=0)
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-5)
    # Its converter file is checked like today's: one that disagrees with config.json is refused.
    converter = json.loads((folder / "preprocessor.json").read_text())
    (folder / "preprocessor.json").write_text(json.dumps({**converter, "color_mode": "rgb"}))
    meta = json.loads((folder / "metadata.json").read_text())
    from keras_mtanet import files

    meta["files"]["preprocessor.json"] = files.sha256_file(folder / "preprocessor.json")
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PresetError, match=r"preprocessor\.json: color_mode 'rgb' differs from config\.json's"):
        MTANet.from_preset(str(folder))
