"""How a preset's outputs become decisions: which AUs are on, which expression is shown.

The probabilities a model gives stay as they are; only the decisions drawn from them follow these rules, which a
preset stores in its ``metadata.json`` (chosen on validation data, never on a test list):

- ``au_thresholds``: ``{AU name: threshold}``; an AU is on when its probability is above its threshold. Presets
  without it use ``au_threshold`` (one number, 0.5 by default: the ABAW challenge's rule).
- ``unreliable_aus``: AUs whose validation evidence was too weak to trust; their decisions are still given, and
  marked (in the card, the output rows and the demo).
- ``expression_training_prior``: ``{class name: share}``, the class mix of the training labels, and
  ``expression_prior_power`` (``tau``, default 1). Under the ``"balanced"`` prior the expression is
  ``argmax(log p - tau * log prior)``: the training prior divided out of the posteriors (logit adjustment, Menon et
  al., ICLR 2021), so that a class the training data held rarely is not called less often for that reason alone.
  Under ``"training"`` it is ``argmax(p)``, the model's own posterior.
- ``expression_prior``: the prior used when the caller names none (``"training"`` for presets without a stored
  prior).

``Decisions.from_metadata`` checks these fields as untrusted input (one ``PresetError`` line naming the file).
"""

import math

import numpy as np

from keras_mtanet.errors import PresetError, UsageError
from keras_mtanet.labels import AU_NAMES, AU_THRESHOLD, EXPR_NAMES

EXPRESSION_PRIORS = ("balanced", "training")
MAX_PRIOR_POWER = 4.0


class Decisions:
    """The decision rules of a preset (see the module docstring).

    Args:
        au_thresholds: one number for every AU, or a sequence / ``{name: value}`` of one per AU, each in (0, 1).
        unreliable_aus: names of AUs marked unreliable.
        training_prior: the training labels' class shares (sequence or ``{name: share}``), or None.
        prior_power: ``tau``, how much of the prior the balanced rule divides out (0: none, 1: all of it).
        expression_prior: ``"balanced"`` or ``"training"``; balanced needs a ``training_prior``.
        au_rule: how the thresholds were chosen, for output rows: ``"preset"`` or the number given.
    """

    def __init__(self, au_thresholds=AU_THRESHOLD, unreliable_aus=(), training_prior=None, prior_power=1.0,
                 expression_prior="training", au_rule=None):
        self.au_thresholds = _thresholds(au_thresholds, UsageError, "au_thresholds")
        self.unreliable_aus = tuple(_names(unreliable_aus, AU_NAMES, UsageError, "unreliable_aus"))
        self.training_prior = None if training_prior is None else _prior(training_prior, UsageError,
                                                                         "training_prior")
        self.prior_power = _power(prior_power, UsageError, "prior_power")
        if expression_prior not in EXPRESSION_PRIORS:
            raise UsageError(f"expression_prior {expression_prior!r}: choose one of {', '.join(EXPRESSION_PRIORS)}")
        if expression_prior == "balanced" and self.training_prior is None:
            raise UsageError("expression_prior 'balanced': this model stores no training prior to divide out "
                             "(use 'training')")
        self.expression_prior = expression_prior
        self.au_rule = au_rule if au_rule is not None else "preset"

    @classmethod
    def from_metadata(cls, meta, expression_prior=None, au_threshold=None, path="metadata.json"):
        """The rules a preset's metadata gives, checked (``PresetError`` naming ``path``), with the caller's
        choices: ``expression_prior`` (None: the preset's default) and ``au_threshold`` (a number overriding every
        AU's threshold; None: the preset's)."""
        meta = meta or {}
        fields = check_metadata_fields(meta, path)
        prior = fields["training_prior"]
        if expression_prior is None:
            expression_prior = fields["expression_prior"]
        if au_threshold is None:
            thresholds, rule = fields["au_thresholds"], "preset"
        else:
            thresholds = check_threshold(au_threshold)
            rule = f"{thresholds:g}"
        return cls(thresholds, fields["unreliable_aus"], prior, fields["prior_power"], expression_prior, rule)

    def aus_on(self, probabilities):
        """0/1 integers, same shape as ``probabilities`` (..., 8): each AU above its threshold."""
        return (np.asarray(probabilities, np.float64) > self.au_thresholds).astype(np.int64)

    def expression_scores(self, probabilities):
        """The scores whose argmax is the expression: ``log p - tau * log prior`` (balanced) or ``p``."""
        p = np.asarray(probabilities, np.float64)
        if self.expression_prior == "training":
            return p
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(p, 1e-30)) - self.prior_power * np.log(self.training_prior)

    def expression(self, probabilities):
        """Class ids (..., 7) -> (...): the expression each row of probabilities decides."""
        return np.argmax(self.expression_scores(probabilities), axis=-1)

    def describe(self):
        """The rules as a JSON-ready dict (for output headers and metrics files)."""
        return {"expression_prior": self.expression_prior,
                "expression_prior_power": self.prior_power if self.expression_prior == "balanced" else 0.0,
                "au_threshold": self.au_rule,
                "au_thresholds": dict(zip(AU_NAMES, map(float, self.au_thresholds))),
                "unreliable_aus": list(self.unreliable_aus)}

    def __repr__(self):
        return f"Decisions({self.describe()})"


def check_threshold(value, name="--au-threshold"):
    """A threshold in (0, 1) as a float, else ``UsageError``."""
    if not _is_number(value) or not 0.0 < value < 1.0:
        raise UsageError(f"{name} {value!r}: give a probability between 0 and 1 (exclusive)")
    return float(value)


def check_metadata_fields(meta, path):
    """The decision fields of ``metadata.json`` checked: ``{"au_thresholds": array (8,), "unreliable_aus",
    "training_prior": array (7,) or None, "prior_power", "expression_prior"}``."""
    thresholds = meta.get("au_thresholds", meta.get("au_threshold", AU_THRESHOLD))
    prior = meta.get("expression_training_prior")
    fields = {"au_thresholds": _thresholds(thresholds, PresetError, f"{path}: au_thresholds"),
              "unreliable_aus": _names(meta.get("unreliable_aus", []), AU_NAMES, PresetError,
                                       f"{path}: unreliable_aus"),
              "training_prior": None if prior is None else _prior(prior, PresetError,
                                                                  f"{path}: expression_training_prior"),
              "prior_power": _power(meta.get("expression_prior_power", 1.0), PresetError,
                                    f"{path}: expression_prior_power")}
    default = meta.get("expression_prior", "training" if prior is None else "balanced")
    if default not in EXPRESSION_PRIORS:
        raise PresetError(f"{path}: expression_prior must be one of {', '.join(EXPRESSION_PRIORS)}")
    if default == "balanced" and prior is None:
        raise PresetError(f"{path}: expression_prior is 'balanced' but no expression_training_prior is stored")
    fields["expression_prior"] = default
    return fields


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer)) \
        and math.isfinite(value)


def _per_name(value, names, error, what):
    """One float per name from a number, a sequence in ``names`` order or a ``{name: value}`` map."""
    if _is_number(value):
        return np.full(len(names), float(value))
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names), key=str)
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise error(f"{what}: needs exactly {', '.join(names)}"
                        + (f"; unknown {', '.join(map(str, unknown))}" if unknown else "")
                        + (f"; missing {', '.join(missing)}" if missing else ""))
        value = [value[n] for n in names]
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != len(names) \
            or not all(_is_number(v) for v in value):
        raise error(f"{what}: expected {len(names)} numbers ({', '.join(names)})")
    return np.asarray(value, np.float64)


def _thresholds(value, error, what):
    values = _per_name(value, AU_NAMES, error, what)
    if not np.all((values > 0.0) & (values < 1.0)):
        raise error(f"{what}: every threshold must lie between 0 and 1 (exclusive)")
    return values


def _prior(value, error, what):
    values = _per_name(value, EXPR_NAMES, error, what)
    if not np.all(values > 0.0) or abs(values.sum() - 1.0) > 1e-3:
        raise error(f"{what}: class shares must be positive and sum to 1")
    return values / values.sum()


def _power(value, error, what):
    if not _is_number(value) or not 0.0 <= value <= MAX_PRIOR_POWER:
        raise error(f"{what}: must be a number from 0 to {MAX_PRIOR_POWER:g}")
    return float(value)


def _names(value, names, error, what):
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v in names for v in value):
        raise error(f"{what}: expected a list of names from {', '.join(names)}")
    return list(dict.fromkeys(value))
