"""How the ``keras-mtanet`` command starts: without the native libraries' start-up logs.

Importing TensorFlow prints about ten lines from its C++ code (oneDNN notices, "All log messages before
absl::InitializeLog() ...", CUDA probes) straight to file descriptor 2, before any Python code could filter
them; ``TF_CPP_MIN_LOG_LEVEL`` quiets only some of them (the oneDNN and cudart lines go through Abseil's own
logger), and only when set before TensorFlow loads. ``import keras_mtanet`` loads Keras, hence TensorFlow, so
the package's ``__init__`` calls ``quiet_start()`` first: when the process is the ``keras-mtanet`` command and
``--verbose`` was not given, it sets the environment and imports Keras with descriptor 2 captured, then writes
back every captured line except the native libraries' info and warning lines. A Python program that imports
keras_mtanet is left alone.
"""

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

COMMAND = "keras-mtanet"
MODULES = ("keras_mtanet", "keras_mtanet.cli")  # python -m ...
VERBOSE_FLAG = "--verbose"
# Environment for a quiet command; values already set by the user win. TF_CPP_MIN_LOG_LEVEL 3 also drops the
# "failed call to cuInit" error every CPU-only machine gets on its first TensorFlow op; FFmpeg's own lines repeat
# what keras-mtanet reports about bad video frames and missing webcams.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "OPENCV_FFMPEG_LOGLEVEL": "-8"}
# Abseil / TensorFlow log lines at info or warning severity ("I0000 00:00:1795697422.371307  8353 port.cc:153] ..."),
# Abseil's banner, the second line of TensorFlow's CPU-feature notice, and TensorFlow Lite's info lines ("INFO:
# Created TensorFlow Lite XNNPACK delegate for CPU.", when the BlazeFace detector starts).
NATIVE_LOG_LINE = re.compile(r"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                             r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                             r"|WARNING: Logging before InitGoogle\(\) is written to STDERR"
                             r"|To enable the following instructions: .*rebuild TensorFlow"
                             r"|INFO: ")


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


def quiet_environment():
    """Set ``QUIET_ENVIRONMENT``'s variables that the user has not set."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def quiet_start():
    """For the ``keras-mtanet`` command without ``--verbose``: quiet the environment and import Keras (and its
    backend) with the native start-up logs dropped. Does nothing in any other process."""
    if not launched_as_command() or verbose_requested():
        return
    quiet_environment()
    with native_logs_dropped():
        import keras  # noqa: F401  (loads the backend, whose C++ start-up logs are dropped here)


def quiet_unless(verbose):
    """``native_logs_dropped()``, or a block left alone when ``verbose``: for the command's steps that start
    native code (a face detector, a runtime) after Keras is loaded."""
    return contextlib.nullcontext() if verbose else native_logs_dropped()


@contextlib.contextmanager
def native_logs_dropped():
    """Capture file descriptor 2 for the block; afterwards write back every captured line but native info and
    warning lines (``NATIVE_LOG_LINE``), so Python warnings and errors still show."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to quiet
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not NATIVE_LOG_LINE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
