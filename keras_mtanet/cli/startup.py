"""How the ``keras-mtanet`` command starts: without the native libraries' start-up logs.

Importing TensorFlow prints about ten lines from its C++ code (oneDNN notices, "All log messages before
absl::InitializeLog() ...", CUDA probes) straight to file descriptor 2, before any Python code could filter
them; ``TF_CPP_MIN_LOG_LEVEL`` quiets only some of them (the oneDNN and cudart lines go through Abseil's own
logger), and only when set before TensorFlow loads. So ``keras_mtanet.cli`` calls ``quiet_start()`` before it
imports anything else: when the process is the ``keras-mtanet`` command and ``--verbose`` was not given, it sets
the environment and imports Keras with descriptor 2 captured, then writes back every captured line except the
native libraries' info and warning lines (``keras_mtanet.inference.native_logs``). A Python program that
imports keras_mtanet is left alone.
"""

import sys
from pathlib import Path

from keras_mtanet.inference.native_logs import native_logs_dropped, quiet_environment

COMMAND = "keras-mtanet"
MODULES = ("keras_mtanet", "keras_mtanet.cli")  # python -m ...
VERBOSE_FLAG = "--verbose"


def launched_as_command():
    """Whether this process is the ``keras-mtanet`` command (the console script, ``python -m keras_mtanet`` or
    ``python -m keras_mtanet.cli``), not a program that imports the package."""
    if Path(sys.argv[0]).stem == COMMAND:
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] in MODULES


def verbose_requested(argv=None):
    """Whether ``--verbose`` is among the command's options (before a ``--`` that ends them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return VERBOSE_FLAG in (argv[:argv.index("--")] if "--" in argv else argv)


def quiet_start():
    """For the ``keras-mtanet`` command without ``--verbose``: quiet the environment and import Keras (and its
    backend) with the native start-up logs dropped. Does nothing in any other process."""
    if not launched_as_command() or verbose_requested():
        return
    quiet_environment()
    with native_logs_dropped():
        import keras  # noqa: F401  (loads the backend, whose C++ start-up logs are dropped here)


