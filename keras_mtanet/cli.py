"""The ``keras-mtanet`` command line: argument parsing, and calls into the modules that do the work.

Choices (detectors, runtimes, precisions, data formats, backbones, strategies, export formats) come from the
modules that define them. A command's arguments are added only when that command runs or its ``--help`` is
asked, so ``keras-mtanet --help`` imports none of those modules.

User errors (a bad option, bad data, a missing preset, a Hub failure) print one line, ``keras-mtanet: error:
...``, and exit with status 2; no traceback. The native libraries' start-up logs are dropped unless
``--verbose`` (``keras_mtanet.startup``).
"""

import argparse
import errno
import sys

from keras_mtanet.startup import VERBOSE_FLAG, quiet_environment
from keras_mtanet.version import __version__

MODEL_HELP = "preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)"


def build_parser(command=None):
    """The parser; only ``command``'s arguments are added (every command's when None)."""
    parser = argparse.ArgumentParser(
        prog="keras-mtanet",
        description="Multi-task facial affect (valence/arousal, action units, expressions) with MTANet.")
    parser.add_argument("--version", action="version", version=f"keras-mtanet {__version__}")
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show the native libraries' logs (TensorFlow's C++ start-up lines, FFmpeg, OpenCV)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, description, add_arguments, _) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=summary, description=description)
        # Also accepted after the command; the global flag's value stands when it is not given here.
        command_parser.add_argument(VERBOSE_FLAG, action="store_true", default=argparse.SUPPRESS,
                                    help=argparse.SUPPRESS)
        if command in (None, name):
            add_arguments(command_parser)
    return parser


def demo_arguments(p):
    from keras_mtanet.inference import demo

    p.add_argument("--model", help=f"{MODEL_HELP}; --synthetic: {demo.SYNTHETIC_PRESET}")
    p.add_argument("--image", nargs="+", metavar="IMAGE", help="your own photos instead of the bundled one")
    p.add_argument("--plot", help="draw the faces and predictions into this image file (default: a new file in a "
                                  "temporary folder, whose path is printed)")
    p.add_argument("--synthetic", action="store_true", help="a generated video of synthetic faces instead")
    p.add_argument("--frames", type=int, default=None,
                   help=f"--synthetic: frames of the generated video, 1 to {demo.MAX_FRAMES} "
                        f"(default {demo.DEFAULT_FRAMES})")
    p.add_argument("--seed", type=int, default=2024, help="--synthetic: seed of the generated video")
    p.add_argument("--output", help="also write the predictions to this .csv or .json file, as keras-mtanet "
                                    "predict does (one row per face, or per frame with --synthetic)")


def predict_arguments(p):
    from keras_mtanet.inference import detection, runtimes

    precisions = tuple(dict.fromkeys(p for names in runtimes.PRECISIONS.values() for p in names))
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image, folder, glob, video file (mp4/avi/mov...) or webcam index (0)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--output", required=True, help="FILE.csv or FILE.json: one row per face per frame")
    p.add_argument("--plot", help="also draw VA, AUs, expressions and the circumplex into this image "
                                  "(.png, .pdf, .svg, .jpg, ...)")
    p.add_argument("--smooth", help="smooth each face over time: seconds (0.5) or frames (15f), 0: not at all; "
                                    "videos only")
    p.add_argument("--batch-size", type=int, default=32, help="face crops per model call (default 32)")
    p.add_argument("--no-detect", action="store_true",
                   help="inputs are already aligned face crops (e.g. Aff-Wild2 cropped_aligned)")
    p.add_argument("--detector", choices=detection.DETECTORS,
                   help=f"face detector (default {detection.DEFAULT_DETECTOR}; see keras_mtanet.inference.detection)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="run the detector on every N-th video frame, tracking faces in between")
    p.add_argument("--stride", type=int, default=1, metavar="K",
                   help="predict video frames 0, K, 2K, ... only (default 1: every frame)")
    p.add_argument("--max-frames", type=int, metavar="N", help="predict at most N frames of each video or webcam")
    p.add_argument("--min-face", type=int, default=40, help="smallest face side in pixels (default 40)")
    p.add_argument("--runtime", choices=runtimes.RUNTIMES, default=None,
                   help="what runs the model: keras, or an exported form (same outputs to 1e-4 in float32; see "
                        "keras_mtanet.inference.runtimes); default: $KERAS_MTANET_RUNTIME, else the fastest "
                        "installed (openvino with keras-mtanet[openvino], else keras)")
    p.add_argument("--precision", choices=precisions, default="float32",
                   help="float32 (default); " + "; ".join(f"{name}: {', '.join(names)}" for name, names in
                                                           runtimes.PRECISIONS.items()))
    p.add_argument("--cache-dir", metavar="FOLDER", help="keep the runtime's exported model here between runs")
    p.add_argument("--progress", action="store_true", help="draw the progress bar even when stderr is not a "
                                                           "terminal")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train_arguments(p):
    from keras_mtanet import train
    from keras_mtanet.backbone import BACKBONES

    p.add_argument("--data", required=True, help="data root (synthetic: created if missing)")
    p.add_argument("--format", required=True, choices=train.FORMATS)
    p.add_argument("--labels", metavar="LABELS.csv",
                   help="ferplus: the teacher label cache from keras-mtanet teach (AU and valence/arousal targets; "
                        "without it FER+ trains expressions only)")
    p.add_argument("--output", required=True, help="run folder; ends up holding a loadable preset")
    p.add_argument("--config", help="JSON training config (see zoo/*/train.json); flags override it")
    p.add_argument("--init", metavar="PRESET",
                   help="start from a preset's weights (name, hf://ORG/REPO[@REV] or folder); its architecture is "
                        "used, its heads too where the label sets match")
    p.add_argument("--backbone", choices=tuple(BACKBONES))
    p.add_argument("--input-size", type=int)
    p.add_argument("--width", type=float, help="multiplier on the backbone's filter counts (1.0: standard)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", choices=train.STRATEGIES,
                   help="tf.distribute (TensorFlow backend): mirrored: local devices; multiworker: the cluster in "
                        "TF_CONFIG")
    p.add_argument("--distribution", choices=train.DISTRIBUTIONS,
                   help="keras.distribution (JAX backend): data-parallel over this process's devices, and over "
                        "processes joined by keras.distribution.initialize")
    p.add_argument("--mixed-precision", action="store_true", default=None,
                   help="bfloat16 compute on CPU, float16 with loss scaling on GPU")
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted run to continue (one is always continued when present)")
    p.add_argument("--no-tensorboard", action="store_true")


def teach_arguments(p):
    from keras_mtanet.data.ferplus import SPLITS
    from keras_mtanet.teachers.teach import FORMATS

    p.add_argument("--data", required=True, help="FER+ root (FER2013Train/, FER2013Valid/, FER2013Test/)")
    p.add_argument("--format", default=FORMATS[0], choices=FORMATS)
    p.add_argument("--teacher-model", required=True, metavar="PATH",
                   help="MediaPipe face_landmarker.task (from Google's MediaPipe Face Landmarker page; its sha256 "
                        "is checked)")
    p.add_argument("--output", required=True, metavar="LABELS.csv", help="the label cache to write")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                   help="splits to label (default: all)")


def evaluate_arguments(p):
    from keras_mtanet.evaluate import FORMATS

    p.add_argument("--model", help="run folder, preset name or hf://ORG/REPO[@REV] (default: embedded)")
    p.add_argument("--data", required=True, help="Aff-Wild2 root (annotations/ and cropped_aligned/)")
    p.add_argument("--format", default=FORMATS[0], choices=FORMATS)
    p.add_argument("--split", default="Validation_Set")
    p.add_argument("--predictions", help="write OUT/{VA_Set,EXPR_Set,AU_Set}/<video>.txt here")
    p.add_argument("--metrics", help="write the scores to this JSON file")
    p.add_argument("--smooth", help="temporal smoothing window: seconds (0.5) or frames (15f)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate for --smooth in seconds")
    p.add_argument("--batch-size", type=int, default=64)


def export_arguments(p):
    from keras_mtanet.export import FORMATS

    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="SavedModel folder, or the exported file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output (written beside it first, then swapped in)")
    p.add_argument("--int8", action="store_true", help="TFLite with int8 weights and activations")
    p.add_argument("--calibration", help="folder of aligned face crops to calibrate --int8 (default: generated "
                                         "synthetic faces, right only for synthetic presets)")


def publish_arguments(p):
    p.add_argument("run_dir", help="a preset folder, e.g. a finished training run")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--tag", help="tag the new commit")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--description", default="", help="description for the printed registry entry")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not args.verbose:
        quiet_environment()
    from keras_mtanet import commands
    from keras_mtanet.errors import MTANetError
    from keras_mtanet.files import shortened
    from keras_mtanet.inference.output import printable

    # SIGTERM (kill, a scheduler's stop) takes Ctrl-C's path: commands finish their files and exit 143.
    previous = _catch_sigterm()
    try:
        _refuse_empty(args)
        return getattr(commands, COMMANDS[args.command][3])(args)
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


def _refuse_empty(args):
    """``UsageError`` for an empty value ('') of an option or argument naming a file, folder or preset: Path('')
    is the current folder, which no command should read, train into or replace unasked."""
    from keras_mtanet.errors import UsageError

    for name, value in vars(args).items():
        if name not in ("command", "description") and (value == "" or isinstance(value, list) and "" in value):
            shown = name.upper() if name in ("inputs", "run_dir") else f"--{name.replace('_', '-')}"
            raise UsageError(f"{shown}: empty value (''); give a name")


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


# name -> (one-line summary, description, argument adder, the function in keras_mtanet.commands that runs it)
COMMANDS = {
    "demo": ("run the embedded default preset on a real photo (no network)",
             ("Finds the faces in the bundled public-domain astronaut photograph (and its mirror image), prints "
              "valence/arousal, AUs and the expression of each and draws them into a picture. --synthetic runs a "
              "preset on a generated video of the package's synthetic faces instead, beside their generated truth."),
             demo_arguments, "run_demo"),
    "presets": ("list the named presets", None, lambda p: None, "run_presets"),
    "predict": ("predict affect for every face in images, folders, videos or a webcam",
                ("Exit status: 0 when every input was read, 1 when some failed (they are named on stderr; the "
                 "others are still written), 2 on a usage error, 130 / 143 when stopped by Ctrl-C / SIGTERM (what "
                 "was finished is written). --output is written under a temporary name beside it and renamed when "
                 "done; when every input fails an existing file is left as it was. Images over 40 megapixels: "
                 "JPEGs are decoded at 1/2, 1/4 or 1/8 size (boxes still in the original's pixels), others refused."),
                predict_arguments, "run_predict"),
    "train": ("train MTANet with model.fit and write a preset to --output", None, train_arguments, "run_train"),
    "teach": ("label FER+ with teachers: AUs from MediaPipe blendshapes, valence/arousal from the votes",
              ("Writes one row per image (AU probabilities, derived valence/arousal, whether the face was found) to "
               "--output. Interrupted runs resume: the same command skips every image already done. Needs pip "
               "install 'keras-mtanet[teacher]'."), teach_arguments, "run_teach"),
    "evaluate": ("score a preset on an Aff-Wild2-layout split, write ABAW files", None, evaluate_arguments,
                 "run_evaluate"),
    "export": ("export a preset for serving (formats: see export --help)", None, export_arguments, "run_export"),
    "publish": ("publish a preset folder to the Hugging Face Hub", None, publish_arguments, "run_publish"),
}


if __name__ == "__main__":
    sys.exit(main())
