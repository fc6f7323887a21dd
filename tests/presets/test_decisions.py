"""The decision rules (keras_mtanet.presets.decisions) against hand computation, their checks as untrusted preset
metadata, and their round trip through a preset: saved, published to the test Hub, loaded, applied."""

import json
import math

import numpy as np
import pytest
from conftest import tiny_model

from keras_mtanet import PresetError, UsageError, load_pretrained, publish
from keras_mtanet.inference.predictor import Predictor
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES
from keras_mtanet.presets import card
from keras_mtanet.presets import folder as preset_folder
from keras_mtanet.presets.decisions import Decisions

PRIOR = {"Neutral": 0.4, "Anger": 0.1, "Disgust": 0.02, "Fear": 0.03, "Happiness": 0.3, "Sadness": 0.1,
         "Surprise": 0.05}
THRESHOLDS = {"AU1": 0.6, "AU2": 0.55, "AU4": 0.8, "AU6": 0.3, "AU12": 0.45, "AU15": 0.9, "AU20": 0.85,
              "AU25": 0.5}
RULES = {"au_thresholds": THRESHOLDS, "unreliable_aus": ["AU15"], "expression_training_prior": PRIOR,
         "expression_prior_power": 0.5, "expression_prior": "balanced"}


def test_balanced_prior_divides_the_training_prior_out_as_computed_by_hand():
    rules = Decisions.from_metadata(RULES)
    p = [0.40, 0.05, 0.05, 0.05, 0.30, 0.05, 0.10]
    # By hand, log p - 0.5 log prior: Neutral log(.40) - .5 log(.40) = .5 log(.40) = -0.458; Surprise
    # log(.10) - .5 log(.05) = -2.303 + 1.498 = -0.805; Disgust log(.05) - .5 log(.02) = -2.996 + 1.956 = -1.040;
    # Happiness .5 log(.30) = -0.602. Neutral still wins at tau 0.5 ...
    assert EXPR_NAMES[rules.expression(p)] == "Neutral"
    # ... but at tau 1: Neutral log(.4/.4) = 0, Surprise log(.10/.05) = 0.693, Disgust log(.05/.02) = 0.916: Disgust.
    full = Decisions.from_metadata({**RULES, "expression_prior_power": 1.0})
    assert EXPR_NAMES[full.expression(p)] == "Disgust"
    assert np.allclose(full.expression_scores(p), np.log(p) - np.log(list(PRIOR.values())))
    assert EXPR_NAMES[Decisions.from_metadata(RULES, expression_prior="training").expression(p)] == "Neutral"
    batch = np.array([p, [0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1]])
    assert full.expression(batch).tolist() == [EXPR_NAMES.index("Disgust"), EXPR_NAMES.index("Disgust")]


def test_au_thresholds_are_per_au_and_a_number_overrides_them():
    rules = Decisions.from_metadata(RULES)
    p = np.array([0.61, 0.55, 0.79, 0.31, 0.46, 0.95, 0.5, 0.5])
    # above: AU1 .61 > .6, AU2 .55 is not > .55, AU4 .79 < .8, AU6 .31 > .3, AU12 .46 > .45, AU15 .95 > .9,
    # AU20 .5 < .85, AU25 .5 is not > .5
    assert rules.aus_on(p).tolist() == [1, 0, 0, 1, 1, 1, 0, 0]
    assert Decisions.from_metadata(RULES, au_threshold=0.5).aus_on(p).tolist() == [1, 1, 1, 0, 0, 1, 0, 0]
    assert rules.aus_on(np.stack([p, p])).shape == (2, 8)
    described = rules.describe()
    assert described["au_threshold"] == "preset" and described["unreliable_aus"] == ["AU15"]
    assert Decisions.from_metadata(RULES, au_threshold=0.5).describe()["au_threshold"] == "0.5"


def test_presets_without_rules_keep_the_challenge_rule():
    rules = Decisions.from_metadata({"au_threshold": 0.5})
    assert rules.expression_prior == "training" and np.all(rules.au_thresholds == 0.5)
    assert rules.expression([0.1, 0.5, 0.4, 0, 0, 0, 0]) == 1
    with pytest.raises(UsageError, match="stores no training prior"):
        Decisions.from_metadata({}, expression_prior="balanced")


@pytest.mark.parametrize("field, value, message", [
    ("au_thresholds", {**THRESHOLDS, "AU4": 1.2}, "between 0 and 1"),
    ("au_thresholds", {"AU1": 0.5}, "missing AU2"),
    ("au_thresholds", "high", "expected 8 numbers"),
    ("unreliable_aus", ["AU99"], "names from AU1"),
    ("expression_training_prior", {**PRIOR, "Neutral": 0.9}, "sum to 1"),
    ("expression_training_prior", {**PRIOR, "Anger": -0.1, "Neutral": 0.6}, "positive"),
    ("expression_prior_power", float("nan"), "number from 0"),
    ("expression_prior", "uniform", "one of balanced, training"),
])
def test_bad_rules_in_metadata_are_one_line_preset_errors(field, value, message):
    with pytest.raises(PresetError, match=message) as info:
        Decisions.from_metadata({**RULES, field: value}, path="p/metadata.json")
    assert str(info.value).startswith(f"p/metadata.json: {field}") and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, math.inf, True])
def test_au_threshold_must_be_a_probability(value):
    with pytest.raises(UsageError, match="between 0 and 1"):
        Decisions.from_metadata(RULES, au_threshold=value)


def test_rules_round_trip_through_a_published_preset_and_decide_the_rows(server, tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    meta = preset_folder.preset_metadata(model, "nothing (test)", extra=RULES)
    folder = preset_folder.save_preset(model, tmp_path / "preset", meta, card.model_card_text(meta, "t"))
    sha = publish(str(folder), "org/rules", tag="v1", endpoint=server.endpoint)
    loaded = load_pretrained(f"hf://org/rules@{sha}", cache_dir=tmp_path / "cache", endpoint=server.endpoint)
    assert {k: loaded.metadata[k] for k in RULES} == json.loads(json.dumps(RULES))
    image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    out = {k: np.asarray(v)[0] for k, v in loaded.predict(image[None].astype("float32"), verbose=0).items()}
    for prior, au_threshold in (("balanced", None), ("training", 0.5)):
        row = Predictor(loaded, detector=None, runtime="keras", expression_prior=prior,
                        au_threshold=au_threshold).predict_image(image)
        row = row.iloc[0] if hasattr(row, "iloc") else row[0]
        thresholds = np.array([THRESHOLDS[a] for a in AU_NAMES]) if au_threshold is None else 0.5
        assert [int(row[a]) for a in AU_NAMES] == (out["au"] > thresholds).astype(int).tolist()
        logp = np.log(out["expr"]) - (0.5 * np.log(list(PRIOR.values())) if prior == "balanced" else 0)
        assert row["expression"] == EXPR_NAMES[int(np.argmax(logp))]
        assert row["expression_prior"] == prior and row["unreliable_aus"] == "AU15"
        assert row["au_threshold"] == ("preset" if au_threshold is None else "0.5")
    # default: the preset's stored choice
    assert Predictor(loaded, detector=None, runtime="keras").decisions.expression_prior == "balanced"
