"""The ``keras-mtanet`` command line.

User errors (bad data, a missing preset, a Hub failure) print one line, ``keras-mtanet: error: ...``, and
exit with status 2; no traceback.
"""

import argparse
import os
import sys
from pathlib import Path

from keras_mtanet.version import __version__


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-mtanet",
        description="Multi-task facial affect (valence/arousal, action units, expressions) with MTANet.")
    parser.add_argument("--version", action="version", version=f"keras-mtanet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded default preset on a real photo (no network)",
                          description="Finds the faces in the bundled public-domain astronaut photograph (and its "
                                      "mirror image), prints valence/arousal, AUs and the expression of each and "
                                      "draws them into a picture. --synthetic runs a preset on a generated video of "
                                      "the package's synthetic faces instead, beside their generated truth.")
    demo.add_argument("--model", help="preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)")
    demo.add_argument("--image", nargs="+", metavar="IMAGE", help="your own photos instead of the bundled one")
    demo.add_argument("--plot", help="draw the faces and predictions into this image file (default: a new file "
                                     "in a temporary folder, whose path is printed)")
    demo.add_argument("--synthetic", action="store_true", help="a generated video of synthetic faces instead")
    demo.add_argument("--frames", type=int, default=None,
                      help=f"--synthetic: frames of the generated video, 1 to {MAX_DEMO_FRAMES} (default 120)")
    demo.add_argument("--seed", type=int, default=2024, help="--synthetic: seed of the generated video")
    demo.add_argument("--output", help="also write the predictions to this CSV file (one row per face, or per "
                                       "frame with --synthetic)")

    sub.add_parser("presets", help="list the named presets")

    predict = sub.add_parser("predict", help="predict affect for every face in images, folders, videos or a webcam",
                             description="Exit status: 0 when every input was read, 1 when some failed (they are "
                                         "named on stderr; the others are still written), 2 on a usage error, "
                                         "130 / 143 when stopped by Ctrl-C / SIGTERM (what was finished is "
                                         "written). --output is written under a temporary name beside it and "
                                         "renamed when done; when every input fails an existing file is left "
                                         "as it was. Images over 40 megapixels: JPEGs are decoded at 1/2, 1/4 "
                                         "or 1/8 size (boxes still in the original's pixels), others refused.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image, folder, glob, video file (mp4/avi/mov...) or webcam index (0)")
    predict.add_argument("--model", help="preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)")
    predict.add_argument("--output", required=True, help="FILE.csv or FILE.json: one row per face per frame")
    predict.add_argument("--plot", help="also draw VA, AUs, expressions and the circumplex into this image "
                                        "(.png, .pdf, .svg, .jpg, ...)")
    predict.add_argument("--smooth", help="smooth each face over time: seconds (0.5) or frames (15f); videos only")
    predict.add_argument("--batch-size", type=int, default=32, help="face crops per model call (default 32)")
    predict.add_argument("--no-detect", action="store_true",
                         help="inputs are already aligned face crops (e.g. Aff-Wild2 cropped_aligned)")
    predict.add_argument("--detector", choices=("mtcnn", "haar"), default="mtcnn",
                         help="mtcnn: box + 5 landmarks (default); haar: OpenCV cascade, faster, rougher")
    predict.add_argument("--every", type=int, default=1, metavar="N",
                         help="run the detector on every N-th video frame, tracking faces in between")
    predict.add_argument("--stride", type=int, default=1, metavar="K", help="predict only every K-th video frame")
    predict.add_argument("--max-frames", type=int, help="stop each video or webcam after this many frames")
    predict.add_argument("--min-face", type=int, default=40, help="smallest face side in pixels (default 40)")
    predict.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                         help="bfloat16: about twice as fast on CPUs with AMX / AVX-512 BF16 (default float32)")
    predict.add_argument("--quiet", action="store_true", help="no progress line")

    train = sub.add_parser("train", help="train MTANet with model.fit and write a preset to --output")
    train.add_argument("--data", required=True, help="data root (synthetic: created if missing)")
    train.add_argument("--format", required=True, choices=("affwild2", "affectnet", "ferplus", "synthetic"))
    train.add_argument("--labels", metavar="LABELS.csv",
                       help="ferplus: the teacher label cache from keras-mtanet teach (AU and valence/arousal "
                            "targets; without it FER+ trains expressions only)")
    train.add_argument("--output", required=True, help="run folder; ends up holding a loadable preset")
    train.add_argument("--config", help="JSON training config (see zoo/*/train.json); flags override it")
    train.add_argument("--init", metavar="PRESET",
                       help="start from a preset's weights (name, hf://ORG/REPO[@REV] or folder); its architecture "
                            "is used, its heads too where the label sets match")
    train.add_argument("--backbone", choices=("se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101"))
    train.add_argument("--input-size", type=int)
    train.add_argument("--width", type=float, help="multiplier on the backbone's filter counts (1.0: standard)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                       help="mirrored: local devices; multiworker: the cluster in TF_CONFIG")
    train.add_argument("--mixed-precision", action="store_true", default=None,
                       help="bfloat16 compute on CPU, float16 with loss scaling on GPU")
    train.add_argument("--resume", action="store_true",
                       help="require an interrupted run to continue (one is always continued when present)")
    train.add_argument("--no-tensorboard", action="store_true")

    teach = sub.add_parser("teach", help="label FER+ with teachers: AUs from MediaPipe blendshapes, valence/arousal "
                                         "from the votes",
                           description="Writes one row per image (AU probabilities, derived valence/arousal, whether "
                                       "the face was found) to --output. Interrupted runs resume: the same command "
                                       "skips every image already done. Needs pip install 'keras-mtanet[teacher]'.")
    teach.add_argument("--data", required=True, help="FER+ root (FER2013Train/, FER2013Valid/, FER2013Test/)")
    teach.add_argument("--format", default="ferplus", choices=("ferplus",))
    teach.add_argument("--teacher-model", required=True, metavar="PATH",
                       help="MediaPipe face_landmarker.task (from Google's MediaPipe Face Landmarker page; its "
                            "sha256 is checked)")
    teach.add_argument("--output", required=True, metavar="LABELS.csv", help="the label cache to write")
    teach.add_argument("--splits", nargs="+", default=["train", "valid", "test"], choices=("train", "valid", "test"),
                       help="splits to label (default: all three)")

    evaluate = sub.add_parser("evaluate", help="score a preset on an Aff-Wild2-layout split, write ABAW files")
    evaluate.add_argument("--model", help="run folder, preset name or hf://ORG/REPO[@REV] (default: embedded)")
    evaluate.add_argument("--data", required=True, help="Aff-Wild2 root (annotations/ and cropped_aligned/)")
    evaluate.add_argument("--format", default="affwild2", choices=("affwild2",))
    evaluate.add_argument("--split", default="Validation_Set")
    evaluate.add_argument("--predictions", help="write OUT/{VA_Set,EXPR_Set,AU_Set}/<video>.txt here")
    evaluate.add_argument("--metrics", help="write the scores to this JSON file")
    evaluate.add_argument("--smooth", help="temporal smoothing window: seconds (0.5) or frames (15f)")
    evaluate.add_argument("--fps", type=float, default=30.0, help="frame rate for --smooth in seconds")
    evaluate.add_argument("--batch-size", type=int, default=64)

    export = sub.add_parser("export", help="export a preset as a SavedModel, TFLite or ONNX file")
    export.add_argument("--model", help="preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)")
    export.add_argument("--format", required=True, choices=("savedmodel", "tflite", "onnx"))
    export.add_argument("--output", required=True, help="SavedModel folder, or .tflite / .onnx file")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output (written beside it first, then swapped in)")
    export.add_argument("--int8", action="store_true", help="TFLite with int8 weights and activations")
    export.add_argument("--calibration", help="folder of aligned face crops to calibrate --int8 (default: "
                                              "generated synthetic faces, right only for synthetic presets)")

    publish = sub.add_parser("publish", help="publish a preset folder to the Hugging Face Hub")
    publish.add_argument("run_dir", help="a preset folder, e.g. a finished training run")
    publish.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    publish.add_argument("--tag", help="tag the new commit")
    publish.add_argument("--private", action="store_true", help="create the repo private")
    publish.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    publish.add_argument("--description", default="", help="description for the printed registry entry")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Bad frames and missing webcams are reported once by keras-mtanet; silence FFmpeg's own log lines (read
    # when OpenCV first opens a video).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    from keras_mtanet.errors import MTANetError
    from keras_mtanet.inference.output import printable

    # SIGTERM (kill, a scheduler's stop) takes Ctrl-C's path: commands finish their files and exit 143.
    previous = _catch_sigterm()
    try:
        return COMMANDS[args.command](args)
    except MTANetError as error:
        print(f"keras-mtanet: error: {printable(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"keras-mtanet: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        _restore_sigterm(previous)


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


# The generated video and its predictions are held in memory: 10000 frames peaked at 2.6 GB (1 minute on 2
# CPU cores); 100000000 frames once grew to 22 GB before failing.
MAX_DEMO_FRAMES = 10000


MAX_DEMO_IMAGES = 8
DEMO_PHOTO = "astronaut.jpg"  # keras_mtanet/assets: NASA, public domain (see assets/README.md)


def run_demo(args):
    from keras_mtanet.data.errors import DataError

    if args.synthetic:
        return run_synthetic_demo(args)
    if args.frames is not None:
        raise DataError("--frames applies to --synthetic only")
    return run_photo_demo(args)


def run_photo_demo(args):
    import tempfile
    from importlib import resources

    import cv2
    import numpy as np

    from keras_mtanet import load_pretrained
    from keras_mtanet.data.errors import DataError
    from keras_mtanet.inference import output, plots
    from keras_mtanet.inference.predictor import Predictor
    from keras_mtanet.inference.sources import Source, read_image

    if args.output:
        output.check_output_path(args.output)
    if args.plot:
        plots.check_image_path(args.plot)
    if args.image and len(args.image) > MAX_DEMO_IMAGES:
        raise DataError(f"--image: give at most {MAX_DEMO_IMAGES} photos (they are drawn side by side); use "
                        "keras-mtanet predict for more")
    if args.image:
        photos = [(str(path), read_image(path)) for path in args.image]
        described = ", ".join(output.printable(name) for name, _ in photos)
    else:
        with resources.as_file(resources.files("keras_mtanet") / "assets" / DEMO_PHOTO) as path:
            photo = read_image(path)
        photos = [("astronaut+mirror", np.concatenate([photo, photo[:, ::-1]], axis=1))]
        described = ("scikit-image's astronaut photograph (NASA, public domain) beside its mirror image: two faces "
                     "that should get about the same predictions")
    model = load_pretrained(args.model)
    meta = model.metadata
    predictor = Predictor(model)
    print(f"model: {output.plain(meta.get('name') or args.model or 'default')} ({model.backbone_name}, "
          f"{model.input_shape[1]} px {getattr(model, 'color_mode', 'rgb')}, {model.count_params():,} parameters)")
    print(f"trained on: {output.plain(meta.get('training_data') or 'not stated by the preset')}")
    print(f"input: {described}")
    print()
    print(f"{'image':<18} face  {'box (x, y, w, h)':<20} valence arousal  {'expression (p)':<18} active AUs (p > 0.5)")
    records = []
    for name, image in photos:
        found = predictor.predict_source(Source(name, "array", image))
        records.extend(found)
        for r in found:
            if not r["face_detected"]:
                print(f"{output.printable(name)[:18]:<18}    -  no face found")
                continue
            aus = ",".join(au for au in output.AU_COLUMNS if r[au]) or "-"
            box = f"{r['x']:.0f}, {r['y']:.0f}, {r['w']:.0f}, {r['h']:.0f}"
            p = r[f"{r['expression']}_prob"]
            print(f"{output.printable(name)[:18]:<18} {r['face_id']:4d}  {box:<20} {r['valence']:+.2f}   "
                  f"{r['arousal']:+.2f}    {r['expression']:<10} ({p:.2f})  {aus}")
    print()
    print(f"what the preset is: {output.plain(meta.get('description') or 'see its model card')}")
    if args.output:
        with output.RecordWriter(args.output) as writer:
            writer.write(records)
        print(f"per-face predictions: {output.printable(args.output)}")
    plot = args.plot or str(Path(tempfile.mkdtemp(prefix="keras-mtanet-demo-")) / "faces.png")
    drawn = plots.draw_faces([image for _, image in photos], records, [name for name, _ in photos])
    ok, data = cv2.imencode(Path(plot).suffix.lower() or ".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"{output.printable(plot)}: OpenCV cannot write this image format")
    with output.AtomicFile(plot, "wb") as f:
        f.write(data.tobytes())
    print(f"plot: {output.printable(plot)}")
    return 0


def run_synthetic_demo(args):
    import numpy as np

    from keras_mtanet import abaw_scores, load_pretrained
    from keras_mtanet.data import synthetic
    from keras_mtanet.data.errors import DataError
    from keras_mtanet.inference.output import check_writable, plain, printable
    from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

    frames = 120 if args.frames is None else args.frames
    if not 1 <= frames <= MAX_DEMO_FRAMES:
        raise DataError(f"--frames {frames}: give 1 to {MAX_DEMO_FRAMES} frames")
    if args.output:
        check_writable(args.output)  # before the model loads
    model = load_pretrained(args.model or "mtanet_se_resnet18_synth")
    meta = model.metadata
    size = int(model.input_shape[1])  # the checked config's, not the metadata's say-so
    video, labels = synthetic.render_video(np.random.SeedSequence([args.seed, 7]), frames, size)
    out = model.predict(video.astype("float32"), verbose=0)
    print(f"model: {plain(meta.get('name') or args.model)} ({model.backbone_name}, {size} px, "
          f"{model.count_params():,} parameters)")
    print(f"trained on: {plain(meta.get('training_data') or 'not stated by the preset')}")
    print(f"input: a generated video of {frames} synthetic faces (seed {args.seed}), not seen in training")
    print()
    print(" frame  valence arousal  expression (p)        active AUs              | truth: V     A    expression")
    step = max(1, frames // 12)
    for i in range(0, frames, step):
        expr = int(out["expr"][i].argmax())
        aus = ",".join(n for n, p in zip(AU_NAMES, out["au"][i]) if p > 0.5) or "-"
        print(f"{i:6d}  {out['va'][i, 0]:+.2f}   {out['va'][i, 1]:+.2f}    {EXPR_NAMES[expr]:<10} "
              f"({out['expr'][i, expr]:.2f})  {aus:<23} |  {labels['va'][i, 0]:+.2f} {labels['va'][i, 1]:+.2f} "
              f" {EXPR_NAMES[labels['expr'][i]]}")
    scores = abaw_scores(labels, out)
    print()
    print("ABAW scores on this video: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print("These faces are synthetic cartoons: the scores show the pipeline at work, not real-world affect.")
    if args.output:
        write_demo_csv(args.output, out)
        print(f"per-frame predictions: {printable(args.output)}")
    return 0


def write_demo_csv(path, out):
    import csv

    from keras_mtanet.inference.output import AU_PROB_COLUMNS, EXPR_PROB_COLUMNS, AtomicFile
    from keras_mtanet.labels import EXPR_NAMES

    # Written beside ``path`` under a temporary name and renamed onto it when complete.
    with AtomicFile(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "valence", "arousal", *AU_PROB_COLUMNS, *EXPR_PROB_COLUMNS, "expression"])
        for i in range(len(out["va"])):
            writer.writerow([i, *(f"{v:.5f}" for v in out["va"][i]), *(f"{v:.5f}" for v in out["au"][i]),
                             *(f"{v:.5f}" for v in out["expr"][i]), EXPR_NAMES[int(out["expr"][i].argmax())]])


def run_presets(args):
    from keras_mtanet import list_presets

    for name, entry in list_presets().items():
        where = "embedded" if entry.get("embedded") else f"{entry['repo_id']}@{entry['revision'][:12]}"
        print(f"{name:<32} {where:<40} {entry.get('description', '')}")
    return 0


def run_predict(args):
    import cv2

    from keras_mtanet.data.errors import DataError
    from keras_mtanet.inference import output, predictor, progress, sources

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its warnings repeat our error lines

    for flag, value in (("--batch-size", args.batch_size), ("--every", args.every), ("--stride", args.stride),
                        ("--max-frames", 1 if args.max_frames is None else args.max_frames),
                        ("--min-face", args.min_face)):
        if value < 1:
            raise DataError(f"{flag} must be at least 1")
    # Every bad option and unwritable output fails here, before the model loads.
    output.check_output_path(args.output)
    if args.plot:
        from keras_mtanet.inference import plots
        plots.check_plot_path(args.plot)
    if args.smooth:
        predictor.smoothing_window(args.smooth, predictor.DEFAULT_FPS)
    found, problems = sources.expand_inputs(args.inputs)
    if not found:
        raise DataError("; ".join(problems) or "no input")
    show = output.printable
    for problem in problems:
        print(f"keras-mtanet: error: {show(problem)}", file=sys.stderr)
    runner = predictor.Predictor(args.model, detector=None if args.no_detect else args.detector,
                                 batch_size=args.batch_size, detect_every=args.every, min_face_size=args.min_face,
                                 precision=args.precision)
    bar = progress.ProgressLine(enabled=not args.quiet)
    # Ids of the sources named on stderr: unreadable (or failed in detection), and truncated videos (read in part).
    failed, truncated, for_plot, buffered = set(), set(), [], {}

    def report(source, message, where=failed):
        where.add(id(source))
        bar.clear()
        print(f"keras-mtanet: error: {show(message)}", file=sys.stderr)

    def put(records):
        writer.write(records)
        if args.plot:
            for_plot.extend(records)

    writer = output.RecordWriter(args.output)
    try:
        events = runner.stream(found, args.stride, args.max_frames, progress=bar.update)
        try:
            for kind, source, payload in events:
                if kind == "records":
                    if args.smooth and source.kind != "image":
                        buffered.setdefault(id(source), (source, []))[1].extend(payload)
                    else:
                        put(payload)
                elif kind == "error":
                    report(source, payload)
                elif kind == "done":
                    if id(source) in buffered:
                        source, records = buffered.pop(id(source))
                        put(predictor.smooth_records(records, args.smooth, source.fps))
                    if source.truncated_at is not None:
                        report(source, source.truncation_message(), truncated)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: keep what was finished, the video in progress too, as a complete file.
            events.close()
            bar.close()
            for source, records in buffered.values():
                put(predictor.smooth_records(records, args.smooth, source.fps))
            if writer.close():
                print(f"keras-mtanet: stopped; the {writer.count} rows so far are in {show(args.output)}",
                      file=sys.stderr)
            raise
        finally:
            events.close()
        bar.close()
        written = writer.close()
    finally:
        writer.discard()  # after an error: the temporary file goes, --output is left as it was
    counts, corrupt = runner.counts, sum(s.corrupt_frames for s in found)
    n_failed = len(failed | truncated) + len(problems)
    print(f"{counts['frames']} frames from {len(found) - len(failed)} of {len(found) + len(problems)} inputs: "
          f"{counts['faces']} faces, {counts['frames_without_face']} frames without a face"
          + (f", {corrupt} corrupt or missing video frames skipped" if corrupt else ""))
    if args.plot and for_plot:
        plots.plot_records(for_plot, args.plot, title=", ".join(args.inputs)[:80])
        print(f"plot: {show(args.plot)}")
    if written:
        print(f"predictions: {show(args.output)}")
    else:
        print(f"keras-mtanet: no predictions; {show(args.output)} "
              + ("left as it was" if os.path.lexists(args.output) else "not written"), file=sys.stderr)
    if n_failed:
        print(f"keras-mtanet: {n_failed} input(s) failed", file=sys.stderr)
        return 1
    return 0


def run_train(args):
    from keras_mtanet import train

    config = train.load_config(args.config, backbone=args.backbone, input_size=args.input_size, width=args.width,
                               epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                               strategy=args.strategy, mixed_precision=args.mixed_precision)
    train.train(config, args.data, args.format, args.output, resume=args.resume,
                tensorboard=not args.no_tensorboard, labels=args.labels, init=args.init)
    return 0


def run_teach(args):
    from keras_mtanet.teachers import teach

    teach.teach(args.data, args.teacher_model, args.output, splits=tuple(dict.fromkeys(args.splits)),
                data_format=args.format)
    return 0


def run_evaluate(args):
    import math
    from pathlib import Path

    from keras_mtanet import evaluate, load_pretrained
    from keras_mtanet.data.errors import DataError
    from keras_mtanet.inference import output

    # Bad options and unwritable outputs fail here, before the model loads and the split is predicted.
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise DataError(f"--fps {args.fps:g}: must be a positive number of frames per second")
    if args.batch_size < 1:
        raise DataError("--batch-size must be at least 1")
    evaluate.smoothing_window(args.smooth, args.fps)
    if args.predictions:
        output.check_writable_folder(args.predictions, "--predictions")
    if args.metrics:
        if Path(args.metrics).parent.is_dir():
            output.check_writable(args.metrics, "--metrics")
        else:  # write_metrics creates the folder
            output.check_writable_folder(Path(args.metrics).parent, "--metrics folder")
    model = load_pretrained(args.model)
    scores = evaluate.evaluate(model, args.data, args.split, args.predictions, smooth=args.smooth, fps=args.fps,
                               batch_size=args.batch_size)
    keys = ("ccc_valence", "ccc_arousal", "va_score", "expr_f1", "expr_acc", "expr_score", "au_f1", "au_acc",
            "au_score")
    print("scores: " + ", ".join(f"{k} {scores[k]:.4f}" for k in keys if k in scores))
    if "unsmoothed" in scores:
        print(f"without smoothing ({scores['smooth_frames']}-frame window off): "
              + ", ".join(f"{k} {scores['unsmoothed'][k]:.4f}" for k in keys if k in scores["unsmoothed"]))
    if args.metrics:
        evaluate.write_metrics(args.metrics, scores)
        print(f"metrics: {args.metrics}")
    if args.predictions:
        print(f"prediction files: {args.predictions}")
    return 0


def run_export(args):
    from keras_mtanet import export, load_pretrained
    from keras_mtanet.data.errors import DataError

    if args.int8 and args.format != "tflite":
        raise DataError("--int8 applies to --format tflite only")
    export.check_export_path(args.output, args.format, args.overwrite)  # before the model loads
    model = load_pretrained(args.model)
    calibration = None
    if args.int8:
        calibration = export.calibration_images(model, args.calibration)
        if args.calibration is None:
            print("int8 calibration: generated synthetic faces (use --calibration with aligned crops of real "
                  "faces for a model trained on real data)")
    path = export.export(model, args.output, args.format, int8=args.int8, calibration=calibration,
                         overwrite=args.overwrite)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    print(f"{args.format}{' int8' if args.int8 else ''}: {path} ({size / 1e6:.1f} MB); input 'image' "
          f"(N, {model.input_shape[1]}, {model.input_shape[2]}, 3) float32 RGB in [0, 255]; outputs va, au, expr")
    return 0


def run_publish(args):
    from keras_mtanet import hub

    sha = hub.publish(args.run_dir, args.repo_id, tag=args.tag, private=args.private or None,
                      endpoint=args.endpoint)
    print(f"published {args.run_dir} to {args.repo_id} at commit {sha}")
    print("registry entry (zoo/<name>/preset.json):")
    print(hub.dump_entry(hub.registry_entry(args.run_dir, args.repo_id, sha, args.description)), end="")
    return 0


COMMANDS = {"demo": run_demo, "presets": run_presets, "predict": run_predict, "train": run_train,
            "teach": run_teach, "evaluate": run_evaluate, "publish": run_publish, "export": run_export}


if __name__ == "__main__":
    sys.exit(main())
