"""What the command modules share: the --model help text and the checks of option values."""

from keras_mtanet.errors import UsageError

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
