"""Masked multi-task losses for partially annotated affect data.

Aff-Wild2 marks frames a task did not annotate (VA -5, AU -1, EXPR -1). Every loss here averages over the
annotated entries of the batch only, and returns 0 (never NaN) for a batch with none.
"""

import keras
from keras import ops

from keras_mtanet.labels import VA_VALID_MIN

_EPS = 1e-7


def _masked_mean(values, mask):
    count = ops.sum(mask)
    return ops.sum(values * mask) / ops.maximum(count, 1.0)


def _weights(sample_weight, y_true):
    """Per-row weights broadcast to ``y_true``'s shape, or ones."""
    if sample_weight is None:
        return ops.ones_like(y_true)
    w = ops.cast(sample_weight, "float32")
    w = ops.reshape(w, (-1,) + (1,) * (len(y_true.shape) - 1))
    return ops.broadcast_to(w, ops.shape(y_true))


def concordance(y_true, y_pred, weights):
    """Weighted concordance correlation coefficient per column, and whether each column had data.

    Args:
        y_true, y_pred: (N, D) float tensors.
        weights: (N, D) non-negative weights; 0 excludes an entry.
    Returns:
        ``(ccc, has_data)``, both of shape (D,).
    """
    n = ops.sum(weights, axis=0)
    safe_n = ops.maximum(n, _EPS)
    mean_t = ops.sum(weights * y_true, axis=0) / safe_n
    mean_p = ops.sum(weights * y_pred, axis=0) / safe_n
    dt = y_true - mean_t
    dp = y_pred - mean_p
    var_t = ops.sum(weights * dt * dt, axis=0) / safe_n
    var_p = ops.sum(weights * dp * dp, axis=0) / safe_n
    cov = ops.sum(weights * dt * dp, axis=0) / safe_n
    ccc = 2.0 * cov / (var_t + var_p + ops.square(mean_t - mean_p) + _EPS)
    return ccc, ops.cast(n > 0, "float32")


class _MaskedLoss(keras.losses.Loss):
    """Base: the loss is already a batch mean over valid entries, so Keras's reduction is bypassed."""

    def __init__(self, name, **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="none", **kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            y_true = ops.convert_to_tensor(y_true)
            y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
            return self.compute(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        return self.compute(y_true, ops.cast(y_pred, "float32"), None)

    def get_config(self):
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="keras_mtanet")
class CCCLoss(_MaskedLoss):
    """``1 - mean CCC`` over the VA columns, computed on the batch's annotated rows.

    Targets below -2 (Aff-Wild2 uses -5) are unannotated and excluded per column; a column with no annotated
    entry is left out of the mean, and a batch with none gives 0.

    Example:
        >>> loss = CCCLoss()
        >>> value = loss([[0.1, 0.2], [0.5, -0.3], [-5.0, -5.0]], [[0.2, 0.1], [0.4, -0.2], [0.9, 0.9]])
        >>> round(float(value), 4)  # the -5 row is skipped: 1 - (CCC 0.8 + CCC 15/17) / 2
        0.1588
    """

    def __init__(self, name="ccc_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def compute(self, y_true, y_pred, sample_weight):
        y_true = ops.cast(y_true, "float32")
        valid = ops.cast(y_true > VA_VALID_MIN, "float32")
        ccc, has_data = concordance(y_true, y_pred, valid * _weights(sample_weight, y_true))
        return ops.sum((1.0 - ccc) * has_data) / ops.maximum(ops.sum(has_data), 1.0)


@keras.saving.register_keras_serializable(package="keras_mtanet")
class MaskedBinaryCrossentropy(_MaskedLoss):
    """Binary cross-entropy over annotated AU entries; entries below 0 (Aff-Wild2: -1) are skipped.

    Targets are 0/1 labels or probabilities in [0, 1] (soft targets from a teacher, ``keras_mtanet.teachers``).

    Args:
        pos_weight: optional weight on the positive term, a scalar or one value per AU (rare AUs).
    """

    def __init__(self, pos_weight=None, name="masked_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = pos_weight

    def compute(self, y_true, y_pred, sample_weight):
        y_true = ops.cast(y_true, "float32")
        valid = ops.cast(y_true >= 0.0, "float32")
        target = ops.clip(y_true, 0.0, 1.0)
        p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        pos = target * ops.log(p)
        if self.pos_weight is not None:
            pos = pos * ops.convert_to_tensor(self.pos_weight, "float32")
        bce = -(pos + (1.0 - target) * ops.log(1.0 - p))
        weights = valid * _weights(sample_weight, y_true)
        return ops.sum(bce * weights) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        pos_weight = self.pos_weight
        if pos_weight is not None and not isinstance(pos_weight, (int, float)):
            pos_weight = [float(v) for v in pos_weight]
        return {**super().get_config(), "pos_weight": pos_weight}


@keras.saving.register_keras_serializable(package="keras_mtanet")
class MaskedCategoricalCrossentropy(_MaskedLoss):
    """Cross-entropy over expression rows that are annotated.

    Targets are class ids, shape (N,) or (N, 1), with negative ids (Aff-Wild2: -1) unannotated; or
    one-hot / soft rows of shape (N, C) (FER+ vote distributions), normalised to sum to 1, where a row with a
    negative entry or no positive entry (all zero) is unannotated.

    Args:
        label_smoothing: mass spread uniformly over the classes, as in ``keras.losses.CategoricalCrossentropy``.
    """

    def __init__(self, label_smoothing=0.0, name="masked_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def compute(self, y_true, y_pred, sample_weight):
        num_classes = y_pred.shape[-1]
        if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes and num_classes > 1:
            y_true = ops.cast(y_true, "float32")
            mass = ops.sum(ops.maximum(y_true, 0.0), axis=-1, keepdims=True)
            valid = ops.cast((ops.min(y_true, axis=-1) >= 0.0) & (mass[:, 0] > 0.0), "float32")
            target = ops.maximum(y_true, 0.0) / ops.maximum(mass, _EPS)
        else:
            ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
            valid = ops.cast(ids >= 0, "float32")
            target = ops.one_hot(ops.maximum(ids, 0), num_classes)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        ce = -ops.sum(target * ops.log(ops.clip(y_pred, _EPS, 1.0)), axis=-1)
        weights = valid
        if sample_weight is not None:
            weights = weights * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return ops.sum(ce * weights) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def default_losses():
    """The losses ``MTANet.compile()`` uses when none are given."""
    return {"va": CCCLoss(), "au": MaskedBinaryCrossentropy(), "expr": MaskedCategoricalCrossentropy()}


@keras.saving.register_keras_serializable(package="keras_mtanet")
class TaskUncertainty(keras.layers.Layer):
    """Learned homoscedastic-uncertainty task weights (Kendall, Gal & Cipolla, CVPR 2018).

    Holds one log-variance ``s_t`` per task and combines task losses as ``sum_t exp(-s_t) * L_t + s_t``:
    a task's weight falls as its loss stays high, and ``+ s_t`` keeps the weights from collapsing to zero.
    The variables start at 0 (all weights 1).
    """

    def __init__(self, tasks=("va", "au", "expr"), **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.log_vars = {t: self.add_weight(shape=(), initializer="zeros", name=f"log_var_{t}")
                         for t in self.tasks}
        self.built = True

    def combine(self, task_losses):
        """The weighted total of ``{task: scalar loss}``."""
        total = 0.0
        for task, loss in task_losses.items():
            s = ops.cast(self.log_vars[task], "float32")
            total = total + ops.exp(-s) * loss + s
        return total

    def weights_dict(self):
        """Current effective weights ``exp(-s_t)`` as Python floats."""
        return {t: float(ops.convert_to_numpy(ops.exp(-v))) for t, v in self.log_vars.items()}

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "tasks": list(self.tasks)}
