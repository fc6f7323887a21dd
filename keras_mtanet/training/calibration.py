"""Choosing a preset's decision rules on validation data (``keras_mtanet.presets.decisions`` applies them).

- ``expression_prior``: the training labels' class mix; ``choose_prior_power`` picks how much of it the balanced
  rule divides out (``tau``) by a balanced metric, the mean of balanced accuracy and macro F1, averaged over the
  validation sets given.
- ``choose_au_thresholds``: per AU, the threshold that best separates faces that should show it from faces that
  should not (Youden's J: true-positive rate minus false-positive rate), never letting more than
  ``max_negative_rate`` of the negatives on; AUs whose validation ROC AUC is below ``min_auc`` are unreliable.
  ``best_f1_threshold`` is the rule for an AU with human labels (GENKI-4K's smiles for AU12).
- ``face_predictions``: the model's outputs for the largest face of each image, through a ``Predictor``.

All of it is numpy on arrays the caller gathers; nothing here reads a test list.
"""

import numpy as np

from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

# EMFACS prototypes of the basic expressions (the AU teacher's, keras_mtanet.teachers.au), on our eight AUs.
PROTOTYPES = {"Happiness": ("AU6", "AU12"), "Surprise": ("AU1", "AU2", "AU25"),
              "Sadness": ("AU1", "AU4", "AU15"), "Fear": ("AU1", "AU2", "AU4", "AU20", "AU25"), "Anger": ("AU4",),
              "Disgust": ("AU15",)}
POWERS = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2))


def class_prior(expr_soft):
    """The class shares of training labels: (N, 7) vote distributions (all-zero rows unannotated) or (N,) class
    ids (-1 unannotated). Returns (7,) positive shares summing to 1 (a class never seen gets a tiny share)."""
    y = np.asarray(expr_soft, np.float64)
    if y.ndim == 1:
        y = y[y >= 0].astype(np.int64)
        counts = np.bincount(y, minlength=len(EXPR_NAMES)).astype(np.float64)
    else:
        rows = y[y.sum(axis=1) > 0]
        counts = (rows / rows.sum(axis=1, keepdims=True)).sum(axis=0)
    counts = np.maximum(counts, 1e-6 * max(counts.sum(), 1.0))
    return counts / counts.sum()


def balanced_accuracy(truth, predicted, classes=len(EXPR_NAMES)):
    """Mean recall over the classes present in ``truth``."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    recalls = [np.mean(predicted[truth == c] == c) for c in range(classes) if np.any(truth == c)]
    return float(np.mean(recalls))


def macro_f1(truth, predicted, classes=len(EXPR_NAMES)):
    """Mean F1 over the classes present in ``truth`` or predicted (a class predicted but absent scores 0)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    scores = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        n = np.sum(predicted == c) + np.sum(truth == c)
        if n:
            scores.append(2.0 * tp / n)
    return float(np.mean(scores))


def expression_scores(truth, probabilities, prior=None, power=0.0):
    """Accuracy, balanced accuracy and macro F1 of the decisions ``argmax(log p - power * log prior)``."""
    p = np.log(np.maximum(np.asarray(probabilities, np.float64), 1e-30))
    if prior is not None:
        p = p - power * np.log(np.asarray(prior, np.float64))
    predicted = p.argmax(axis=1)
    truth = np.asarray(truth)
    return {"accuracy": float(np.mean(predicted == truth)), "balanced_accuracy": balanced_accuracy(truth, predicted),
            "macro_f1": macro_f1(truth, predicted)}


def choose_prior_power(sets, prior, powers=POWERS):
    """The ``tau`` in ``powers`` with the best mean of balanced accuracy and macro F1, averaged over ``sets``
    (``{name: (truth class ids, (N, 7) probabilities)}``). Returns ``(tau, {tau: {name: scores}})``; ties go to
    the smaller power (less change from the model's own posterior)."""
    table, best, best_value = {}, None, -np.inf
    for power in powers:
        table[float(power)] = {name: expression_scores(t, p, prior, power) for name, (t, p) in sets.items()}
        value = np.mean([(s["balanced_accuracy"] + s["macro_f1"]) / 2 for s in table[float(power)].values()])
        if value > best_value + 1e-12:
            best, best_value = float(power), value
    return best, table


def roc_auc(scores, labels):
    """ROC AUC of ``scores`` for binary ``labels`` (Mann-Whitney, ties counted half); NaN without both classes."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def youden_threshold(scores, labels, max_negative_rate=1.0):
    """The threshold ``t`` (an AU is on when its score is above ``t``) maximising true-positive rate minus
    false-positive rate, among those that leave at most ``max_negative_rate`` of the negatives on. Candidates are
    the midpoints between consecutive distinct scores. Returns ``(t, tpr, fpr)``."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1]]])
    pos, neg = scores[labels], scores[~labels]
    tpr = (pos[None, :] > candidates[:, None]).mean(axis=1)
    fpr = (neg[None, :] > candidates[:, None]).mean(axis=1)
    allowed = fpr <= max_negative_rate + 1e-12
    j = np.where(allowed, tpr - fpr, -np.inf)
    k = int(np.argmax(j))
    return float(candidates[k]), float(tpr[k]), float(fpr[k])


def best_f1_threshold(scores, labels):
    """The threshold maximising F1 of ``score > t`` against binary ``labels``. Returns ``(t, f1)``."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2])
    on = scores[None, :] > candidates[:, None]
    tp = (on & labels[None, :]).sum(axis=1)
    f1 = 2.0 * tp / (on.sum(axis=1) + labels.sum())
    k = int(np.argmax(f1))
    return float(candidates[k]), float(f1[k])


def prototype_labels(truth):
    """Per AU, the faces that should show it and those that should not, from expression class ids: positives
    are faces whose class has the AU in its EMFACS prototype (``PROTOTYPES``), negatives are neutral faces.
    Returns ``{AU: (positive mask, negative mask)}``."""
    truth = np.asarray(truth)
    neutral = truth == EXPR_NAMES.index("Neutral")
    out = {}
    for au in AU_NAMES:
        classes = [EXPR_NAMES.index(name) for name, aus in PROTOTYPES.items() if au in aus]
        out[au] = (np.isin(truth, classes), neutral)
    return out


def choose_au_thresholds(au_probabilities, truth, max_negative_rate=0.2, min_auc=0.7, human=None, min_faces=20):
    """Per-AU thresholds and reliability from validation faces with expression labels.

    Args:
        au_probabilities: (N, 8) AU probabilities of the validation faces.
        truth: (N,) their expression class ids (-1: no label).
        max_negative_rate: the largest share of neutral faces an AU may be on for.
        min_auc: an AU whose prototype-vs-neutral ROC AUC is below this is unreliable.
        human: ``{AU: (probabilities, 0/1 labels)}`` for AUs with human labels (e.g. GENKI-4K's smiles for
            AU12): their threshold maximises F1 on those, and their AUC is measured there.
        min_faces: an AU with fewer prototype or neutral faces than this is unreliable, its threshold the one
            that leaves ``max_negative_rate`` of the neutral faces on.

    Returns:
        ``(thresholds {AU: t}, unreliable [AU, ...], evidence {AU: {...}})``.
    """
    au_probabilities = np.asarray(au_probabilities, np.float64)
    human = human or {}
    thresholds, unreliable, evidence = {}, [], {}
    for k, (au, (positive, negative)) in enumerate(prototype_labels(truth).items()):
        if au in human:
            scores, labels = (np.asarray(v) for v in human[au])
            t, f1 = best_f1_threshold(scores, labels)
            auc = roc_auc(scores, labels)
            evidence[au] = {"rule": "best F1 against human labels", "auc": auc, "f1": f1,
                            "positives": int(labels.sum()), "negatives": int((1 - labels).sum())}
        elif positive.sum() < min_faces or negative.sum() < min_faces:  # no evidence: keep neutral faces off
            t = float(np.quantile(au_probabilities[negative, k], 1.0 - max_negative_rate)) if negative.any() else 0.5
            auc = float("nan")
            evidence[au] = {"rule": f"too few faces to judge; at most {max_negative_rate:g} of neutral faces on",
                            "auc": auc, "positives": int(positive.sum()), "negatives": int(negative.sum())}
        else:
            keep = positive | negative
            scores, labels = au_probabilities[keep, k], positive[keep]
            t, tpr, fpr = youden_threshold(scores, labels, max_negative_rate)
            auc = roc_auc(scores, labels)
            evidence[au] = {"rule": f"Youden's J, at most {max_negative_rate:g} of neutral faces on", "auc": auc,
                            "true_positive_rate": tpr, "neutral_on_rate": fpr, "positives": int(labels.sum()),
                            "negatives": int((~labels).sum())}
        thresholds[au] = float(np.clip(t, 1e-4, 1 - 1e-4))
        evidence[au]["threshold"] = thresholds[au]
        if not auc >= min_auc:
            unreliable.append(au)
    return thresholds, unreliable, evidence


def face_predictions(predictor, paths, on_error=None):
    """The model's outputs for the largest face found in each image: ``(found (N,) bool, va (N, 2), au (N, 8),
    expr (N, 7))`` through ``predictor`` (a ``Predictor``; its detector decides what a face is). Images without a
    face, or that cannot be read, give ``found`` False and NaN outputs."""
    from keras_mtanet.inference.predictor import RecordList
    from keras_mtanet.inference.records import AU_PROB_COLUMNS, EXPR_PROB_COLUMNS

    n = len(paths)
    found = np.zeros(n, bool)
    va, au, expr = np.full((n, 2), np.nan), np.full((n, len(AU_NAMES)), np.nan), np.full((n, len(EXPR_NAMES)), np.nan)
    where = {str(p): i for i, p in enumerate(paths)}
    best, rows = {}, RecordList()
    predictor.predict_files([str(p) for p in paths], output=rows, on_error=on_error or (lambda message: None))
    for record in rows:
        if not record["face_detected"]:
            continue
        i = where.get(record["source"])
        if i is None:
            continue
        area = record["w"] * record["h"]
        if i in best and best[i] >= area:
            continue
        best[i] = area
        found[i] = True
        va[i] = (record["valence"], record["arousal"])
        au[i] = [record[c] for c in AU_PROB_COLUMNS]
        expr[i] = [record[c] for c in EXPR_PROB_COLUMNS]
    return found, va, au, expr

