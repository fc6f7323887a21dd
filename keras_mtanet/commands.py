"""What each ``keras-mtanet`` command does once ``keras_mtanet.cli`` has parsed its arguments: check every option,
input and output before anything heavy loads, then call into the package. Modules load per command, on use."""

import sys


def at_least_one(**options):
    """``UsageError`` naming the first option below 1 (``--batch-size`` for ``batch_size``)."""
    from keras_mtanet.errors import UsageError

    for name, value in options.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")


def run_demo(args):
    from keras_mtanet.errors import UsageError
    from keras_mtanet.inference import demo

    if args.synthetic:
        given = [flag for flag, value in (("--image", args.image), ("--plot", args.plot)) if value]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise UsageError(f"{' and '.join(given)} {verb} to the photo demo, not --synthetic")
        return demo.synthetic_demo(args.model, args.frames, args.seed, args.output)
    if args.frames is not None:
        raise UsageError("--frames applies to --synthetic only")
    return demo.photo_demo(args.model, args.image, args.output, args.plot, quiet=not args.verbose)


def run_presets(args):
    from keras_mtanet import list_presets
    from keras_mtanet.inference.output import printable

    for name, entry in list_presets().items():
        if "error" in entry:  # a malformed registry entry: listed with its one-line problem
            print(f"{name:<32} {'(unusable)':<40} {printable(entry['error'])}")
            continue
        where = "embedded" if entry.get("embedded") else f"{entry['repo_id']}@{entry['revision'][:12]}"
        print(f"{name:<32} {where:<40} {entry.get('description', '')}")
    return 0


def run_predict(args):
    import os

    from keras_mtanet import files
    from keras_mtanet.errors import UsageError
    from keras_mtanet.inference import detection, output, plots, predictor, progress, runtimes, sources
    from keras_mtanet.startup import quiet_unless

    if not args.verbose:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its warnings repeat our error lines
    at_least_one(batch_size=args.batch_size, every=args.every, stride=args.stride, max_frames=args.max_frames,
                 min_face=args.min_face)
    if args.progress and args.quiet:
        raise UsageError("--progress and --quiet contradict each other; give one")
    if args.no_detect and args.detector is not None:
        raise UsageError(f"--detector {args.detector} does nothing with --no-detect (inputs are face crops); give one")
    args.detector = args.detector or detection.DEFAULT_DETECTOR
    if args.runtime is None:
        args.runtime = runtimes.default_runtime(args.precision)
        if args.cache_dir is None and args.runtime != "keras":
            cache = runtimes.usable_default_cache()
            args.cache_dir = None if cache is None else str(cache)
    if args.precision not in runtimes.PRECISIONS[args.runtime]:
        raise UsageError(f"--precision {args.precision}: the {args.runtime} runtime runs in "
                         f"{' or '.join(runtimes.PRECISIONS[args.runtime])}")
    # Every bad option, input and unwritable output fails here, before the model loads.
    output.check_output_path(args.output)
    if args.plot:
        plots.check_plot_path(args.plot)
    if args.smooth:
        predictor.smoothing_window(args.smooth, predictor.DEFAULT_FPS)
    found, problems = sources.expand_inputs(args.inputs)
    if not found:
        raise UsageError("; ".join(problems) or "no input")
    if args.plot:
        files.check_not_an_input(args.plot, [s.location for s in found if s.kind in ("image", "video")], "--plot")
    show = output.printable
    for problem in problems:
        print(f"keras-mtanet: error: {show(problem)}", file=sys.stderr)
    with quiet_unless(args.verbose):  # the detector's and the runtime's native start-up lines
        runner = predictor.Predictor(args.model, detector=None if args.no_detect else args.detector,
                                     batch_size=args.batch_size, detect_every=args.every,
                                     min_face_size=args.min_face, precision=args.precision, runtime=args.runtime,
                                     cache_dir=args.cache_dir)
    bar = progress.Progress(enabled=False if args.quiet else (True if args.progress else None))
    writer = output.RecordWriter(args.output)
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


def run_train(args):
    from keras_mtanet import files, train
    from keras_mtanet.errors import UsageError

    config = train.load_config(args.config, backbone=args.backbone, input_size=args.input_size, width=args.width,
                               epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                               strategy=args.strategy, distribution=args.distribution,
                               mixed_precision=args.mixed_precision)
    try:
        train.train(config, args.data, args.format, args.output, resume=args.resume,
                    tensorboard=not args.no_tensorboard, labels=args.labels, init=args.init)
    except Exception as error:  # a full disk while a checkpoint, log or the preset is written: one line
        reason = files.disk_failure(error)
        if reason is None:
            raise
        raise UsageError(f"{files.printable(args.output)}: cannot write ({reason}); the same command resumes the "
                         "run once there is room") from None
    return 0


def run_teach(args):
    from keras_mtanet.teachers import teach

    teach.teach(args.data, args.teacher_model, args.output, splits=tuple(dict.fromkeys(args.splits)),
                data_format=args.format, quiet=not args.verbose)
    return 0


def run_evaluate(args):
    import math
    from pathlib import Path

    from keras_mtanet import evaluate, load_pretrained
    from keras_mtanet.errors import UsageError
    from keras_mtanet.inference import output
    from keras_mtanet.metrics import SCORE_KEYS

    # Bad options and unwritable outputs fail here, before the model loads and the split is predicted.
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise UsageError(f"--fps {args.fps:g}: must be a positive number of frames per second")
    at_least_one(batch_size=args.batch_size)
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
    print("scores: " + ", ".join(f"{k} {scores[k]:.4f}" for k in SCORE_KEYS if k in scores))
    if "unsmoothed" in scores:
        print(f"without smoothing ({scores['smooth_frames']}-frame window off): "
              + ", ".join(f"{k} {scores['unsmoothed'][k]:.4f}" for k in SCORE_KEYS if k in scores["unsmoothed"]))
    if args.metrics:
        evaluate.write_metrics(args.metrics, scores)
        print(f"metrics: {args.metrics}")
    if args.predictions:
        print(f"prediction files: {args.predictions}")
    return 0


def run_export(args):
    from keras_mtanet import export, load_pretrained
    from keras_mtanet.errors import UsageError

    if args.int8 and args.format != "tflite":
        raise UsageError("--int8 applies to --format tflite only")
    if args.calibration is not None and not args.int8:
        raise UsageError("--calibration applies to --int8 only (float exports need no calibration)")
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
