"""ABAW 2020 metrics: streaming Keras metrics for training, and ``abaw_scores`` on numpy arrays.

Definitions (Kollias et al., "Analysing Affective Behavior in the First ABAW 2020 Competition", FG 2020):

- VA: concordance correlation coefficient over all annotated frames, per dimension; score = mean of the two.
- EXPR: 0.67 * macro F1 + 0.33 * accuracy, F1 averaged (unweighted) over the classes that occur in the
  annotations or the predictions, as ``sklearn.metrics.f1_score(average="macro")`` does.
- AU: 0.5 * mean per-AU F1 + 0.5 * accuracy over all AU decisions; a probability above 0.5 means "active";
  an AU never active in annotations or predictions has F1 0, as sklearn's binary F1 gives.

Unannotated entries (VA below -2, AU below 0, EXPR below 0) are excluded everywhere, entry by entry: an AU
entry with the unannotated code leaves out that AU of that frame alone (the frame's other AUs still count, in
the F1 of their AU and in the accuracy), and a valence entry below -2 does not hide the arousal beside it. An
AU with no annotated entry at all scores F1 0, as sklearn's binary F1 of nothing does. The streaming metrics
keep sufficient statistics, so their result is the dataset-level value whatever the batch size or order.

Soft targets are scored as hard decisions: an AU target is active above 0.5 (the threshold the predictions
use), an expression distribution (N, 7) counts as its argmax class (the first on ties, as ``numpy.argmax``), and
a distribution with a negative entry or no positive entry (all zero) is unannotated.
"""

import keras
import numpy as np
from keras import ops

from keras_mtanet.labels import AU_NAMES, AU_THRESHOLD, EXPR_NAMES, VA_VALID_MIN

EXPR_F1_WEIGHT, EXPR_ACC_WEIGHT = 0.67, 0.33
AU_F1_WEIGHT, AU_ACC_WEIGHT = 0.5, 0.5
SCORE_KEYS = ("ccc_valence", "ccc_arousal", "va_score", "expr_f1", "expr_acc", "expr_score",
              "au_f1", "au_acc", "au_score")


@keras.saving.register_keras_serializable(package="keras_mtanet")
class CCC(keras.metrics.Metric):
    """Dataset-level concordance correlation coefficient of one VA column.

    Keeps the count, both means, both centred sums of squares and the centred cross product, merged batch by
    batch with Chan et al.'s pairwise update, so float32 state stays accurate over millions of frames and the
    result does not depend on how the data were batched.

    Args:
        dim: 0 for valence, 1 for arousal.

    Example:
        >>> m = CCC(dim=0)
        >>> m.update_state([[0.1, 0.0], [0.5, 0.0], [-5.0, -5.0]], [[0.1, 0.3], [0.5, 0.1], [0.0, 0.0]])
        >>> round(float(m.result()), 4)
        1.0
    """

    def __init__(self, dim=0, name=None, dtype=None):
        super().__init__(name=name or f"ccc_{('valence', 'arousal')[dim] if dim in (0, 1) else dim}",
                         dtype=dtype)
        self.dim = int(dim)
        self._stats = {k: self.add_variable(shape=(), initializer="zeros", name=k, dtype="float32")
                       for k in ("n", "mean_t", "mean_p", "m2_t", "m2_p", "c")}

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.convert_to_tensor(y_true), "float32")[:, self.dim]
        p = ops.cast(ops.convert_to_tensor(y_pred), "float32")[:, self.dim]
        w = ops.cast(t > VA_VALID_MIN, "float32")
        if sample_weight is not None:
            w = w * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        nb = ops.sum(w)
        safe_nb = ops.maximum(nb, 1e-12)
        mt_b = ops.sum(w * t) / safe_nb
        mp_b = ops.sum(w * p) / safe_nb
        dt, dp = t - mt_b, p - mp_b
        m2t_b = ops.sum(w * dt * dt)
        m2p_b = ops.sum(w * dp * dp)
        c_b = ops.sum(w * dt * dp)

        s = self._stats
        na = ops.convert_to_tensor(s["n"])
        n = na + nb
        frac_b = nb / ops.maximum(n, 1e-12)
        cross = na * frac_b  # na * nb / n
        delta_t = mt_b - ops.convert_to_tensor(s["mean_t"])
        delta_p = mp_b - ops.convert_to_tensor(s["mean_p"])
        s["m2_t"].assign(ops.convert_to_tensor(s["m2_t"]) + m2t_b + delta_t * delta_t * cross)
        s["m2_p"].assign(ops.convert_to_tensor(s["m2_p"]) + m2p_b + delta_p * delta_p * cross)
        s["c"].assign(ops.convert_to_tensor(s["c"]) + c_b + delta_t * delta_p * cross)
        s["mean_t"].assign(ops.convert_to_tensor(s["mean_t"]) + delta_t * frac_b)
        s["mean_p"].assign(ops.convert_to_tensor(s["mean_p"]) + delta_p * frac_b)
        s["n"].assign(n)

    def result(self):
        s = self._stats
        n = ops.maximum(ops.convert_to_tensor(s["n"]), 1e-12)
        diff = ops.convert_to_tensor(s["mean_t"]) - ops.convert_to_tensor(s["mean_p"])
        denom = ops.convert_to_tensor(s["m2_t"]) + ops.convert_to_tensor(s["m2_p"]) + n * diff * diff
        return ops.where(denom > 0, 2.0 * ops.convert_to_tensor(s["c"]) / ops.maximum(denom, 1e-30), 0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "dim": self.dim}


class _AUConfusion(keras.metrics.Metric):
    """Per-AU true/false positive/negative counts over annotated entries."""

    def __init__(self, num_aus=len(AU_NAMES), threshold=AU_THRESHOLD, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_aus = int(num_aus)
        self.threshold = float(threshold)
        self.counts = self.add_variable(shape=(4, self.num_aus), initializer="zeros", name="counts",
                                        dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.convert_to_tensor(y_true), "float32")
        p = ops.cast(ops.cast(ops.convert_to_tensor(y_pred), "float32") > self.threshold, "float32")
        w = ops.cast(t >= 0.0, "float32")
        if sample_weight is not None:
            w = w * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        t = ops.cast(t > 0.5, "float32")
        tp = ops.sum(w * t * p, axis=0)
        fp = ops.sum(w * (1.0 - t) * p, axis=0)
        fn = ops.sum(w * t * (1.0 - p), axis=0)
        tn = ops.sum(w * (1.0 - t) * (1.0 - p), axis=0)
        self.counts.assign(ops.convert_to_tensor(self.counts) + ops.stack([tp, fp, fn, tn]))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_aus": self.num_aus, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="keras_mtanet")
class AUF1(_AUConfusion):
    """Mean over AUs of each AU's F1 (ABAW's AU F1); an AU with no positive anywhere counts 0."""

    def __init__(self, num_aus=len(AU_NAMES), threshold=AU_THRESHOLD, name="au_f1", dtype=None):
        super().__init__(num_aus, threshold, name=name, dtype=dtype)

    def result(self):
        counts = ops.convert_to_tensor(self.counts)
        tp, fp, fn = counts[0], counts[1], counts[2]
        denom = 2.0 * tp + fp + fn
        return ops.mean(ops.where(denom > 0, 2.0 * tp / ops.maximum(denom, 1.0), 0.0))


@keras.saving.register_keras_serializable(package="keras_mtanet")
class AUAccuracy(_AUConfusion):
    """Accuracy over all annotated AU decisions, flattened (ABAW's AU accuracy)."""

    def __init__(self, num_aus=len(AU_NAMES), threshold=AU_THRESHOLD, name="au_acc", dtype=None):
        super().__init__(num_aus, threshold, name=name, dtype=dtype)

    def result(self):
        c = ops.sum(ops.convert_to_tensor(self.counts), axis=1)
        return (c[0] + c[3]) / ops.maximum(ops.sum(c), 1.0)


class _ExprConfusion(keras.metrics.Metric):
    """Confusion matrix (true class x predicted class) over annotated rows."""

    def __init__(self, num_classes=len(EXPR_NAMES), name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                           name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.convert_to_tensor(y_true)
        if len(t.shape) == 2 and t.shape[-1] == self.num_classes and self.num_classes > 1:
            valid = ops.cast((ops.min(t, axis=-1) >= 0) & (ops.max(t, axis=-1) > 0), "float32")
            t = ops.argmax(t, axis=-1)
        else:
            t = ops.reshape(ops.cast(t, "int32"), (-1,))
            valid = ops.cast(t >= 0, "float32")
        p = ops.convert_to_tensor(y_pred)
        p = ops.argmax(p, axis=-1) if len(p.shape) == 2 and p.shape[-1] > 1 else ops.reshape(p, (-1,))
        w = valid
        if sample_weight is not None:
            w = w * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        t_hot = ops.one_hot(ops.maximum(ops.cast(t, "int32"), 0), self.num_classes) * w[:, None]
        p_hot = ops.one_hot(ops.cast(p, "int32"), self.num_classes)
        self.confusion.assign(ops.convert_to_tensor(self.confusion) + ops.matmul(ops.transpose(t_hot), p_hot))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_mtanet")
class ExprF1(_ExprConfusion):
    """Macro F1 over the expression classes that occur in the annotations or the predictions."""

    def __init__(self, num_classes=len(EXPR_NAMES), name="expr_f1", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        cm = ops.convert_to_tensor(self.confusion)
        tp = ops.diagonal(cm)
        denom = ops.sum(cm, axis=0) + ops.sum(cm, axis=1)  # 2tp + fp + fn
        present = ops.cast(denom > 0, "float32")
        f1 = 2.0 * tp / ops.maximum(denom, 1.0)
        return ops.sum(f1 * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="keras_mtanet")
class ExprAccuracy(_ExprConfusion):
    """Accuracy over annotated expression rows."""

    def __init__(self, num_classes=len(EXPR_NAMES), name="expr_acc", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        cm = ops.convert_to_tensor(self.confusion)
        return ops.sum(ops.diagonal(cm)) / ops.maximum(ops.sum(cm), 1.0)


def default_metrics():
    """The metrics ``MTANet.compile()`` uses when none are given, keyed by output.

    Keras prefixes each name with its output, so logs read ``va_ccc_valence``, ``au_f1``, ``expr_acc``...
    """
    return {"va": [CCC(0), CCC(1)], "au": [AUF1(name="f1"), AUAccuracy(name="acc")],
            "expr": [ExprF1(name="f1"), ExprAccuracy(name="acc")]}


# ---------------------------------------------------------------------------------------------------------
# numpy reference implementation (float64), used for evaluation files and by the validation callback


def ccc_np(y_true, y_pred):
    """Concordance correlation coefficient of two 1-D arrays (population moments, float64)."""
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.size == 0:
        return float("nan")
    mt, mp = t.mean(), p.mean()
    cov = np.mean((t - mt) * (p - mp))
    denom = t.var() + p.var() + (mt - mp) ** 2
    if not np.isfinite(denom):  # a NaN or infinite prediction: no score, not a perfect miss
        return float("nan")
    return float(2.0 * cov / denom) if denom > 0 else 0.0


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else 0.0


def abaw_scores(y_true, y_pred):
    """ABAW 2020 scores for whichever tasks appear in both dicts.

    Args:
        y_true: ``{"va": (N, 2) floats, -5 unannotated; "au": (N, 8) 0/1 or probabilities, -1 unannotated;
            "expr": (N,) class ids, -1 unannotated, or (N, 7) distributions}``; any subset of the keys.
        y_pred: ``{"va": (N, 2); "au": (N, 8) probabilities or 0/1; "expr": (N, 7) probabilities or (N,) ids}``.

    Returns:
        A dict with ``ccc_valence, ccc_arousal, va_score`` (if "va" given), ``expr_f1, expr_acc, expr_score``
        (if "expr"), ``au_f1, au_acc, au_score`` (if "au"). A task with no annotated entry scores NaN, and so
        does a task whose predictions hold a NaN or infinity on an annotated row (a diverged model).

    Raises:
        ValueError: arrays of the wrong shape (VA not (N, 2), AU not (N, K) in both, expression not (N,) or (N, 7)),
            unequal row counts, or an expression id above 6.
    """
    scores = {}
    if "va" in y_true and "va" in y_pred:
        t = _shaped("va", "annotations", y_true["va"], 2)
        p = _shaped("va", "predictions", y_pred["va"], 2)
        _check_rows("va", t, p)
        for d, key in enumerate(("ccc_valence", "ccc_arousal")):
            valid = t[:, d] > VA_VALID_MIN
            scores[key] = ccc_np(t[valid, d], p[valid, d])
        scores["va_score"] = (scores["ccc_valence"] + scores["ccc_arousal"]) / 2.0
    if "expr" in y_true and "expr" in y_pred:
        t = expr_ids(y_true["expr"])
        p = np.asarray(y_pred["expr"], np.float64)
        if p.ndim == 2 and p.shape[1] == len(EXPR_NAMES):
            finite = np.isfinite(p).all(axis=1)
            p = p.argmax(axis=-1)
        elif p.ndim == 1:
            finite = np.isfinite(p)
            p = np.where(finite, p, -1).astype(np.int64)
        else:
            raise ValueError(f"abaw_scores: 'expr' predictions must be (N, {len(EXPR_NAMES)}) probabilities or "
                             f"(N,) class ids, got shape {p.shape}.")
        _check_rows("expr", t, p)
        _check_ids("expr predictions", p[finite])
        valid = t >= 0
        nonfinite = not finite[valid].all()
        t, p = t[valid], p[valid]
        if t.size == 0 or nonfinite:
            f1 = acc = float("nan")
        else:
            classes = np.union1d(t, p)
            f1 = float(np.mean([_f1(np.sum((t == c) & (p == c)), np.sum((t != c) & (p == c)),
                                    np.sum((t == c) & (p != c))) for c in classes]))
            acc = float(np.mean(t == p))
        scores.update(expr_f1=f1, expr_acc=acc, expr_score=EXPR_F1_WEIGHT * f1 + EXPR_ACC_WEIGHT * acc)
    if "au" in y_true and "au" in y_pred:
        t = _shaped("au", "annotations", y_true["au"], None)  # any number of AUs, the same in both
        p = _shaped("au", "predictions", y_pred["au"], t.shape[1])
        _check_rows("au", t, p)
        valid = t >= 0
        nonfinite = not np.isfinite(p[valid]).all()
        p = p > AU_THRESHOLD
        if not valid.any() or nonfinite:
            f1 = acc = float("nan")
        else:
            t = t > 0.5
            f1s = [_f1(np.sum(t[v, j] & p[v, j]), np.sum(~t[v, j] & p[v, j]), np.sum(t[v, j] & ~p[v, j]))
                   for j in range(t.shape[1]) for v in [valid[:, j]]]
            f1 = float(np.mean(f1s))
            acc = float(np.mean(t[valid] == p[valid]))
        scores.update(au_f1=f1, au_acc=acc, au_score=AU_F1_WEIGHT * f1 + AU_ACC_WEIGHT * acc)
    return scores


def expr_ids(y):
    """Expression class ids (N,) from ids or (N, 7) distributions (argmax; -1 for an unannotated row)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == len(EXPR_NAMES):
        valid = (y.min(axis=1) >= 0) & (y.max(axis=1) > 0)
        return np.where(valid, y.argmax(axis=1), -1).astype(np.int64)
    if y.ndim != 1:
        raise ValueError(f"abaw_scores: 'expr' annotations must be (N,) class ids or (N, {len(EXPR_NAMES)}) "
                         f"distributions, got shape {y.shape}.")
    y = np.asarray(y, np.float64)
    if not np.isfinite(y).all() or (y != np.round(y)).any():
        raise ValueError("abaw_scores: 'expr' annotations must be whole class ids (-1 unannotated).")
    y = y.astype(np.int64)
    _check_ids("expr annotations", y)
    return y


def _shaped(task, what, values, width):
    """``values`` as a float64 (N, ``width``) array (``width`` None: any); ``ValueError`` for any other shape
    (never reshaped)."""
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or width is not None and values.shape[1] != width:
        raise ValueError(f"abaw_scores: {task!r} {what} must be (N, {width or 'K'}), got shape {values.shape}.")
    return values


def _check_ids(what, ids):
    if ids.size and ids.max() >= len(EXPR_NAMES):
        raise ValueError(f"abaw_scores: {what} hold class id {int(ids.max())}; ids run 0-{len(EXPR_NAMES) - 1} "
                         "(-1 unannotated).")


def _check_rows(task, t, p):
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"abaw_scores: {task!r} has {t.shape[0]} annotation rows but {p.shape[0]} "
                         "prediction rows.")
