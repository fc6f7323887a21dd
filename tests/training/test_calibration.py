"""Choosing the decision rules on validation data (keras_mtanet.training.calibration), against hand-computed and
sklearn-free independent values."""

import numpy as np
import pytest

from keras_mtanet.labels import AU_NAMES, EXPR_NAMES
from keras_mtanet.training import calibration


def test_class_prior_from_votes_and_from_ids():
    votes = np.array([[3, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 2, 0, 0], [0, 0, 0, 0, 0, 0, 0]], np.float32)
    prior = calibration.class_prior(votes)  # rows normalised: (.75, .25, 0..) and (0, 0, 0, 0, 1, ...)
    assert prior[0] == pytest.approx(0.375, abs=1e-5) and prior[1] == pytest.approx(0.125, abs=1e-5)
    assert prior[4] == pytest.approx(0.5, abs=1e-5) and np.all(prior > 0) and prior.sum() == pytest.approx(1)
    ids = calibration.class_prior(np.array([0, 0, 4, -1]))
    assert ids[0] == pytest.approx(2 / 3, abs=1e-5) and ids[4] == pytest.approx(1 / 3, abs=1e-5)


def test_balanced_accuracy_and_macro_f1_by_hand():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2])
    # recalls: class 0 2/3, class 1 1/2, class 2 1 -> 13/18
    assert calibration.balanced_accuracy(truth, predicted) == pytest.approx(13 / 18)
    # F1: class 0 tp 2, 3 predicted + 3 true -> 4/6; class 1 tp 1, 2 + 2 -> 2/4; class 2 -> 1
    assert calibration.macro_f1(truth, predicted) == pytest.approx((4 / 6 + 0.5 + 1) / 3)


def test_roc_auc_counts_ties_half():
    # pairs (pos, neg): (.9, .1) 1, (.9, .5) 1, (.5, .1) 1, (.5, .5) 0.5 -> 3.5 / 4
    assert calibration.roc_auc([0.9, 0.5, 0.1, 0.5], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert np.isnan(calibration.roc_auc([0.1, 0.2], [1, 1]))


def test_youden_threshold_respects_the_negative_rate():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    t, tpr, fpr = calibration.youden_threshold(scores, labels)
    # best split: above 0.325 -> tpr 1 (0.35, .6, .7, .8), fpr 1/4 (0.4); above 0.5 -> tpr 3/4, fpr 0: J .75 both;
    # the first maximum (the lower threshold) is kept
    assert (tpr - fpr) == pytest.approx(0.75)
    t, tpr, fpr = calibration.youden_threshold(scores, labels, max_negative_rate=0.0)
    assert 0.4 < t < 0.6 and tpr == pytest.approx(0.75) and fpr == 0.0


def test_best_f1_threshold():
    t, f1 = calibration.best_f1_threshold([0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1])
    assert 0.2 < t < 0.4 and f1 == pytest.approx(1.0)


def test_choose_prior_power_prefers_the_balanced_decision_on_a_skewed_model():
    rng = np.random.default_rng(0)
    prior = np.array([0.6, 0.1, 0.05, 0.05, 0.1, 0.05, 0.05])
    truth = np.repeat(np.arange(7), 50)
    # A model whose posteriors carry the prior: likelihood favouring the truth, times the prior.
    like = rng.dirichlet(np.ones(7), len(truth)) + np.eye(7)[truth] * 0.6
    post = like * prior
    post /= post.sum(axis=1, keepdims=True)
    power, table = calibration.choose_prior_power({"v": (truth, post)}, prior)
    assert power > 0.5
    assert table[power]["v"]["balanced_accuracy"] > table[0.0]["v"]["balanced_accuracy"] + 0.1
    # tau 1 recovers the likelihood's argmax exactly
    assert calibration.expression_scores(truth, post, prior, 1.0)["accuracy"] == \
        pytest.approx(np.mean(like.argmax(axis=1) == truth))


def test_choose_au_thresholds_uses_prototypes_and_human_labels():
    rng = np.random.default_rng(1)
    names = list(EXPR_NAMES)
    truth = np.array([names.index("Neutral")] * 200 + [names.index("Happiness")] * 100
                     + [names.index("Sadness")] * 100)
    au = rng.uniform(0.5, 0.9, (len(truth), 8))  # every AU high on every face: the 0.5 rule would say all on
    happy = truth == names.index("Happiness")
    au[happy, AU_NAMES.index("AU6")] += 0.3  # mostly separable from neutral faces (AUC about 0.97)
    smiles = rng.integers(0, 2, 50)
    human = {"AU12": (np.where(smiles == 1, 0.7, 0.3) + rng.normal(0, 0.01, 50), smiles)}
    thresholds, unreliable, evidence = calibration.choose_au_thresholds(au, truth, max_negative_rate=0.2,
                                                                        human=human)
    assert set(thresholds) == set(AU_NAMES)
    assert 0.3 < thresholds["AU12"] < 0.7 and evidence["AU12"]["f1"] == pytest.approx(1.0)
    neutral = truth == names.index("Neutral")
    for au_name in ("AU6", "AU4", "AU15"):
        k = AU_NAMES.index(au_name)
        assert np.mean(au[neutral, k] > thresholds[au_name]) <= 0.2
    assert evidence["AU6"]["auc"] > 0.75 and "AU6" not in unreliable
    assert "AU15" in unreliable and "AU4" in unreliable  # sadness faces look like neutral ones here
    assert "AU20" in unreliable and np.isnan(evidence["AU20"]["auc"])  # no fear faces: no evidence
