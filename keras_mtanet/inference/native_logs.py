"""The native libraries' log lines (TensorFlow's and TensorFlow Lite's C++ start-up notices, Abseil's banner,
MediaPipe's, FFmpeg's) kept off the user's terminal: ``native_logs_dropped`` captures file descriptor 2 for a
block and writes back every line but theirs. Used by the command's start (``keras_mtanet.cli.startup``) and by
the steps that start native code later (a face detector, a runtime, the MediaPipe teacher)."""

import contextlib
import os
import re
import sys
import tempfile

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



def quiet_environment():
    """Set ``QUIET_ENVIRONMENT``'s variables that the user has not set."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)



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
