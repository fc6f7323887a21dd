"""The default preset reads real faces: it loads offline, says honestly what it learned from, and agrees with
people on photographs (the bundled astronaut portrait; FER+ crowd votes where ../shared holds FER+)."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from keras_mtanet import Predictor, load_pretrained
from keras_mtanet.inference.sources import Source, read_image
from keras_mtanet.labels import EXPR_NAMES
from keras_mtanet.presets import registry

FERPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"
REAL_PRESETS = ("mtanet_se_resnet18_ferplus_112", "mtanet_se_resnet18_ferplus")


@pytest.fixture(scope="module", params=REAL_PRESETS)
def real(request):
    return load_pretrained(request.param)


def test_the_default_is_a_real_face_preset_and_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_pretrained()
    assert model.metadata["name"] == registry.DEFAULT_PRESET in REAL_PRESETS
    assert model.color_mode == "grayscale" and "FER+" in model.metadata["training_data"]


def test_model_cards_say_what_the_presets_learned_from(real):
    entry = registry.list_presets()[real.metadata["name"]]
    card = (Path(entry["folder"]) / "README.md").read_text()
    for phrase in ("FER2013", "research terms", "MIT", "not FACS-coded by people", "not rated by people",
                   "Not for decisions about a person", "grey"):
        assert phrase in card, phrase
    recipe = json.loads((Path(entry["folder"]) / "train.json").read_text())
    assert real.metadata["alignment_template"] == recipe["alignment_template"]  # the measured FER+ framing


def test_the_astronauts_smile_reads_as_happiness(real):
    with resources.as_file(resources.files("keras_mtanet") / "assets" / "astronaut.jpg") as path:
        photo = read_image(path)
    records = Predictor(real).predict_source(Source("astronaut", "array", photo))
    assert len(records) == 1 and records[0]["face_detected"] == 1
    face = records[0]
    # She smiles broadly, lips parted (hand-read from the photograph).
    assert face["expression"] == "Happiness" and face["Happiness_prob"] > 0.5
    assert face["AU12_prob"] > 0.5 and face["valence"] > 0.3


@pytest.mark.skipif(not FERPLUS.is_dir(), reason="FER+ is not beside the checkout (../shared/data/ferplus)")
def test_presets_agree_with_the_crowd_on_clear_fer_plus_test_faces(real):
    """FER+ test faces that at least 8 of 10 people gave the same label: the preset's expression matches."""
    import cv2

    from keras_mtanet.data import ferplus

    votes = ferplus.read_votes(FERPLUS, "test")
    columns = list(ferplus.EXPR_VOTE_COLUMNS)
    clear = [(name, columns.index(int(np.argmax(v)))) for name, v in votes.items()
             if v.max() >= 8 and int(np.argmax(v)) in columns][:300]
    size = real.input_shape[1]
    faces = np.stack([cv2.resize(cv2.imread(str(FERPLUS / "FER2013Test" / name), cv2.IMREAD_GRAYSCALE), (size, size),
                                 interpolation=cv2.INTER_LINEAR) for name, _ in clear]).astype("float32")
    predicted = real.predict(np.repeat(faces[..., None], 3, axis=-1), verbose=0)["expr"].argmax(axis=1)
    truth = np.array([c for _, c in clear])
    accuracy = float(np.mean(predicted == truth))
    assert accuracy > 0.85, (accuracy, {EXPR_NAMES[c]: int(np.sum(truth == c)) for c in set(truth)})


def test_the_default_carries_decision_rules_its_card_reports():
    from keras_mtanet.presets.decisions import Decisions

    model = load_pretrained()
    rules = Decisions.from_metadata(model.metadata)
    assert rules.expression_prior == "balanced" and 0 < rules.prior_power <= 1
    # The stored prior is FER+ train's class mix: neutral and happiness most, disgust least.
    order = np.argsort(rules.training_prior)
    assert EXPR_NAMES[order[-1]] == "Neutral" and EXPR_NAMES[order[0]] == "Disgust"
    entry = registry.list_presets()[registry.DEFAULT_PRESET]
    card = (Path(entry["folder"]) / "README.md").read_text()
    assert "## Decision rules (chosen on validation data)" in card
    for au, threshold in zip(rules.describe()["au_thresholds"], rules.au_thresholds):
        section = card.split("## Decision rules")[1]
        row = next(line for line in section.splitlines() if line.startswith(f"| {au} | "))
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[1]) == pytest.approx(threshold, abs=5e-4)
        assert cells[4] == ("no" if au in rules.unreliable_aus else "yes")
