"""``keras-mtanet predict``: predict affect for every face in images, folders, videos or a webcam."""

import sys

from keras_mtanet.cli.common import (
    MODEL_HELP,
    add_decision_arguments,
    at_least_one,
    check_decision_arguments,
    decisions_line,
)


def add_arguments(p):
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
    add_decision_arguments(p)
    p.add_argument("--progress", action="store_true", help="draw the progress bar even when stderr is not a "
                                                           "terminal")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    import os

    from keras_mtanet import files
    from keras_mtanet.errors import UsageError
    from keras_mtanet.inference import (
        detection,
        export_cache,
        plots,
        predictor,
        progress,
        records,
        runtimes,
        smoothing,
        sources,
    )
    from keras_mtanet.inference.native_logs import quiet_unless

    if not args.verbose:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its warnings repeat our error lines
    at_least_one(batch_size=args.batch_size, every=args.every, stride=args.stride, max_frames=args.max_frames,
                 min_face=args.min_face)
    check_decision_arguments(args)
    if args.progress and args.quiet:
        raise UsageError("--progress and --quiet contradict each other; give one")
    if args.no_detect and args.detector is not None:
        raise UsageError(f"--detector {args.detector} does nothing with --no-detect (inputs are face crops); give one")
    args.detector = args.detector or detection.DEFAULT_DETECTOR
    if args.runtime is None:
        args.runtime = runtimes.default_runtime(args.precision)
        if args.cache_dir is None and args.runtime != "keras":
            cache = export_cache.usable_default_cache()
            args.cache_dir = None if cache is None else str(cache)
    if args.precision not in runtimes.PRECISIONS[args.runtime]:
        raise UsageError(f"--precision {args.precision}: the {args.runtime} runtime runs in "
                         f"{' or '.join(runtimes.PRECISIONS[args.runtime])}")
    # Every bad option, input and unwritable output fails here, before the model loads.
    records.check_output_path(args.output)
    if args.plot:
        plots.check_plot_path(args.plot)
    if args.smooth:
        smoothing.smoothing_window(args.smooth, predictor.DEFAULT_FPS)
    found, problems = sources.expand_inputs(args.inputs)
    if not found:
        raise UsageError("; ".join(problems) or "no input")
    if args.plot:
        files.check_not_an_input(args.plot, [s.location for s in found if s.kind in ("image", "video")], "--plot")
    show = files.printable
    for problem in problems:
        print(f"keras-mtanet: error: {show(problem)}", file=sys.stderr)
    with quiet_unless(args.verbose):  # the detector's and the runtime's native start-up lines
        runner = predictor.Predictor(args.model, detector=None if args.no_detect else args.detector,
                                     batch_size=args.batch_size, detect_every=args.every,
                                     min_face_size=args.min_face, precision=args.precision, runtime=args.runtime,
                                     cache_dir=args.cache_dir, expression_prior=args.expression_prior,
                                     au_threshold=args.au_threshold)
    print(decisions_line(runner.decisions))
    bar = progress.Progress(enabled=False if args.quiet else (True if args.progress else None))
    writer = records.RecordWriter(args.output)
    sink = _Keep(writer) if args.plot else writer
    try:
        with bar:
            report = runner.predict_files(found, output=sink, stride=args.stride, max_frames=args.max_frames,
                                          smooth=args.smooth, progress=bar.update,
                                          on_error=lambda message: bar.message(f"keras-mtanet: error: {show(message)}"))
        written = writer.close()
    except KeyboardInterrupt:
        if writer.close():  # what was finished, as a complete file
            print(f"keras-mtanet: stopped; the {writer.count} rows so far are in {show(args.output)}",
                  file=sys.stderr)
        raise
    finally:
        writer.discard()  # after an error: the temporary file goes, --output is left as it was
    corrupt = report.corrupt_frames
    print(f"{report.frames} frames from {report.inputs - report.unreadable} of {report.inputs + len(problems)} "
          f"inputs: {report.faces} faces, {report.frames_without_face} frames without a face"
          + (f", {corrupt} corrupt or missing video frames skipped" if corrupt else ""))
    if args.plot and sink.records:
        plots.plot_records(sink.records, args.plot, title=", ".join(args.inputs)[:80])
        print(f"plot: {show(args.plot)}")
    if written:
        print(f"predictions: {show(args.output)}")
    else:
        print(f"keras-mtanet: no predictions; {show(args.output)} "
              + ("left as it was" if os.path.lexists(args.output) else "not written"), file=sys.stderr)
    n_failed = report.failed + len(problems)
    if n_failed:
        print(f"keras-mtanet: {n_failed} input(s) failed", file=sys.stderr)
        return 1
    return 0


class _Keep:
    """Writes records to ``writer`` and keeps them (for ``--plot``)."""

    def __init__(self, writer):
        self.writer, self.records = writer, []

    def write(self, records):
        self.writer.write(records)
        self.records.extend(records)
