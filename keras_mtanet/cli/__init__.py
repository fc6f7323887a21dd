"""The ``keras-mtanet`` command line: ``main`` and the command table; each command is one module of this package
holding its flags (``add_arguments``) and its body (``run``).

Choices (detectors, runtimes, precisions, data formats, backbones, strategies, export formats) come from the
modules that define them. A command's module is imported only when that command runs or its ``--help`` is
asked, so ``keras-mtanet --help`` imports none of them.

User errors (a bad option, bad data, a missing preset, a Hub failure) print one line, ``keras-mtanet: error:
...``, and exit with status 2; no traceback. The native libraries' start-up logs are dropped unless
``--verbose`` (``keras_mtanet.cli.startup``).
"""

import argparse
import errno
import importlib
import sys

from keras_mtanet.cli.startup import VERBOSE_FLAG, quiet_start

quiet_start()  # before anything loads Keras: see keras_mtanet/cli/startup.py

from keras_mtanet.cli.common import refuse_empty  # noqa: E402
from keras_mtanet.inference.native_logs import quiet_environment  # noqa: E402
from keras_mtanet.version import __version__  # noqa: E402

# name -> (one-line summary, description); the command's flags and body are in keras_mtanet.cli.<name>
# (add_arguments, run), imported only when that command runs or its --help is asked.
COMMANDS = {
    "demo": ("run the embedded default preset on a real photo (no network)",
                ("Finds the faces in the bundled public-domain astronaut photograph (and its mirror image), prints "
                 "valence/arousal, AUs and the expression of each and draws them into a picture. --synthetic runs a "
                 "preset on a generated video of the package's synthetic faces instead, beside their generated "
                 "truth.")),
    "presets": ("list the named presets", None),
    "predict": ("predict affect for every face in images, folders, videos or a webcam",
                ("Exit status: 0 when every input was read, 1 when some failed (they are named on stderr; the "
                 "others are still written), 2 on a usage error, 130 / 143 when stopped by Ctrl-C / SIGTERM (what "
                 "was finished is written). --output is written under a temporary name beside it and renamed when "
                 "done; when every input fails an existing file is left as it was. Images over 40 megapixels: "
                 "JPEGs are decoded at 1/2, 1/4 or 1/8 size (boxes still in the original's pixels), others refused.")),
    "train": ("train MTANet with model.fit and write a preset to --output", None),
    "teach": ("label FER+ with teachers: AUs from MediaPipe blendshapes, valence/arousal from the votes",
                ("Writes one row per image (AU probabilities, derived valence/arousal, whether the face was found) to "
                 "--output. Interrupted runs resume: the same command skips every image already done. Needs pip "
                 "install 'keras-mtanet[teacher]'.")),
    "evaluate": ("score a preset on an Aff-Wild2-layout split, write ABAW files", None),
    "export": ("export a preset for serving (formats: see export --help)", None),
    "publish": ("publish a preset folder to the Hugging Face Hub", None),
}


def build_parser(command=None):
    """The parser; only ``command``'s arguments are added (every command's when None)."""
    parser = argparse.ArgumentParser(
        prog="keras-mtanet",
        description="Multi-task facial affect (valence/arousal, action units, expressions) with MTANet.")
    parser.add_argument("--version", action="version", version=f"keras-mtanet {__version__}")
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show the native libraries' logs (TensorFlow's C++ start-up lines, FFmpeg, OpenCV)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, description) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=summary, description=description)
        # Also accepted after the command; the global flag's value stands when it is not given here.
        command_parser.add_argument(VERBOSE_FLAG, action="store_true", default=argparse.SUPPRESS,
                                    help=argparse.SUPPRESS)
        if command in (None, name):
            command_module(name).add_arguments(command_parser)
    return parser


def command_module(name):
    """The module of command ``name``: its ``add_arguments(parser)`` and ``run(args)``."""
    return importlib.import_module(f"keras_mtanet.cli.{name}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not args.verbose:
        quiet_environment()
    from keras_mtanet.errors import MTANetError
    from keras_mtanet.files import printable, shortened

    # SIGTERM (kill, a scheduler's stop) takes Ctrl-C's path: commands finish their files and exit 143.
    previous = _catch_sigterm()
    try:
        refuse_empty(args)
        return command_module(args.command).run(args)
    except MTANetError as error:
        print(f"keras-mtanet: error: {printable(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a name longer than the file system allows, met wherever it is first used
        if error.errno != errno.ENAMETOOLONG:
            raise
        name = printable(error.filename)
        print(f"keras-mtanet: error: {shortened(name)}: name too long "
              f"({len(name)} characters)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"keras-mtanet: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        _restore_sigterm(previous)


def _command_of(argv):
    """The command named in ``argv`` (its first word that is not an option), or None."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

def _on_sigterm(signum, frame):
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated()


def _catch_sigterm():
    """Install the SIGTERM handler (main thread only); returns what to restore, or None."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return (previous,)


def _restore_sigterm(previous):
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous[0] if previous[0] is not None else signal.SIG_DFL)

