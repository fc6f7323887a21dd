"""What the command modules share: the --model help text and the checks of option values."""

from keras_mtanet.errors import UsageError
from keras_mtanet.presets.decisions import EXPRESSION_PRIORS, check_threshold

MODEL_HELP = "preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)"


def at_least_one(**options):
    """``UsageError`` naming the first option below 1 (``--batch-size`` for ``batch_size``)."""
    for name, value in options.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")


def refuse_empty(args):
    """``UsageError`` for an empty value ('') of an option or argument naming a file, folder or preset: Path('')
    is the current folder, which no command should read, train into or replace unasked."""
    for name, value in vars(args).items():
        if name not in ("command", "description") and (value == "" or isinstance(value, list) and "" in value):
            shown = name.upper() if name in ("inputs", "run_dir") else f"--{name.replace('_', '-')}"
            raise UsageError(f"{shown}: empty value (''); give a name")


def add_decision_arguments(p):
    """``--expression-prior`` and ``--au-threshold``: the decision rules of ``predict``, ``demo`` and ``evaluate``
    (``keras_mtanet.presets.decisions``)."""
    p.add_argument("--expression-prior", choices=EXPRESSION_PRIORS,
                   help="balanced: divide the preset's training class prior out of the expression posteriors "
                        "before deciding, so a class rare in training is not called less for that alone; "
                        "training: the posteriors' argmax; default: the preset's choice (see its model card)")
    p.add_argument("--au-threshold", type=float, metavar="P",
                   help="one probability threshold for every AU decision (0.5: the ABAW challenge's rule); "
                        "default: the preset's per-AU thresholds")


def check_decision_arguments(args):
    """``UsageError`` for an ``--au-threshold`` outside (0, 1)."""
    if args.au_threshold is not None:
        check_threshold(args.au_threshold)


def decisions_line(decisions):
    """One line saying how the AU decisions and the expression were made, for the top of a command's output."""
    rule = ("the preset's per-AU thresholds" if decisions.au_rule == "preset"
            else f"every AU above {decisions.au_rule}")
    line = f"decisions: expression under the {decisions.expression_prior} prior; AUs on at {rule}"
    if decisions.unreliable_aus:
        line += (f"; unreliable for this preset (weak validation evidence): {', '.join(decisions.unreliable_aus)}")
    return line
