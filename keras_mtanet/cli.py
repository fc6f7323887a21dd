"""The ``keras-mtanet`` command line.

User errors (bad data, a missing preset, a Hub failure) print one line, ``keras-mtanet: error: ...``, and
exit with status 2; no traceback.
"""

import argparse
import os
import sys

from keras_mtanet.version import __version__


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-mtanet",
        description="Multi-task facial affect (valence/arousal, action units, expressions) with MTANet.")
    parser.add_argument("--version", action="version", version=f"keras-mtanet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded default preset on generated faces (no network)")
    demo.add_argument("--model", help="preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)")
    demo.add_argument("--frames", type=int, default=120, help="frames of the generated video (default 120)")
    demo.add_argument("--seed", type=int, default=2024, help="seed of the generated video")
    demo.add_argument("--output", help="also write the per-frame predictions to this CSV file")

    sub.add_parser("presets", help="list the named presets")

    predict = sub.add_parser("predict", help="predict affect for every face in images, folders, videos or a webcam",
                             description="Exit status: 0 when every input was read, 1 when some failed (they are "
                                         "named on stderr; the others are still written), 2 on a usage error.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image, folder, glob, video file (mp4/avi/mov...) or webcam index (0)")
    predict.add_argument("--model", help="preset name, hf://ORG/REPO[@REV] or folder (default: embedded preset)")
    predict.add_argument("--output", required=True, help="FILE.csv or FILE.json: one row per face per frame")
    predict.add_argument("--plot", help="also draw VA, AUs, expressions and the circumplex into this PNG")
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
    train.add_argument("--format", required=True, choices=("affwild2", "affectnet", "synthetic"))
    train.add_argument("--output", required=True, help="run folder; ends up holding a loadable preset")
    train.add_argument("--config", help="JSON training config (see zoo/*/train.json); flags override it")
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
    from keras_mtanet.data.errors import DataError
    from keras_mtanet.inference.detection import DependencyError
    from keras_mtanet.zoo import PresetError

    try:
        return COMMANDS[args.command](args)
    except (DataError, PresetError, DependencyError) as error:
        print(f"keras-mtanet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-mtanet: interrupted", file=sys.stderr)
        return 130


def run_demo(args):
    import numpy as np

    from keras_mtanet import abaw_scores, load_pretrained
    from keras_mtanet.data import synthetic
    from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

    model = load_pretrained(args.model)
    meta = model.metadata
    size = int(meta["input_size"][0])
    frames, labels = synthetic.render_video(np.random.SeedSequence([args.seed, 7]), args.frames, size)
    out = model.predict(frames.astype("float32"), verbose=0)
    print(f"model: {meta.get('name') or args.model} ({meta['backbone']}, {size} px, "
          f"{meta.get('parameters', 0):,} parameters)")
    print(f"trained on: {meta['training_data']}")
    print(f"input: a generated video of {args.frames} synthetic faces (seed {args.seed}), not seen in training")
    print()
    print(" frame  valence arousal  expression (p)        active AUs              | truth: V     A    expression")
    step = max(1, args.frames // 12)
    for i in range(0, args.frames, step):
        expr = int(out["expr"][i].argmax())
        aus = ",".join(n for n, p in zip(AU_NAMES, out["au"][i]) if p > 0.5) or "-"
        print(f"{i:6d}  {out['va'][i, 0]:+.2f}   {out['va'][i, 1]:+.2f}    {EXPR_NAMES[expr]:<10} "
              f"({out['expr'][i, expr]:.2f})  {aus:<23} |  {labels['va'][i, 0]:+.2f} {labels['va'][i, 1]:+.2f} "
              f" {EXPR_NAMES[labels['expr'][i]]}")
    scores = abaw_scores(labels, out)
    print()
    print("ABAW scores on this video: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print("These faces are synthetic cartoons; the embedded preset is not meant for real-world affect.")
    if args.output:
        write_demo_csv(args.output, out)
        print(f"per-frame predictions: {args.output}")
    return 0


def write_demo_csv(path, out):
    import csv

    from keras_mtanet.inference.output import AU_PROB_COLUMNS, EXPR_PROB_COLUMNS
    from keras_mtanet.labels import EXPR_NAMES

    with open(path, "w", newline="") as f:
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
                        ("--max-frames", args.max_frames or 1), ("--min-face", args.min_face)):
        if value < 1:
            raise DataError(f"{flag} must be at least 1")
    output.check_output_path(args.output)
    if args.smooth:
        predictor.smoothing_window(args.smooth, predictor.DEFAULT_FPS)  # reject a bad value before any work
    found, problems = sources.expand_inputs(args.inputs)
    if not found:
        raise DataError("; ".join(problems) or "no input")
    for problem in problems:
        print(f"keras-mtanet: error: {problem}", file=sys.stderr)
    runner = predictor.Predictor(args.model, detector=None if args.no_detect else args.detector,
                                 batch_size=args.batch_size, detect_every=args.every, min_face_size=args.min_face,
                                 precision=args.precision)
    bar = progress.ProgressLine(enabled=not args.quiet)
    unreadable, done_records, buffered = 0, [], {}
    with output.RecordWriter(args.output) as writer:
        for kind, source, payload in runner.stream(found, args.stride, args.max_frames, progress=bar.update):
            if kind == "records":
                if args.smooth and source.kind != "image":
                    buffered.setdefault(id(source), []).extend(payload)
                else:
                    writer.write(payload)
                    done_records.extend(payload)
            elif kind == "error":
                unreadable += 1
                bar.clear()
                print(f"keras-mtanet: error: {payload}", file=sys.stderr)
            elif kind == "done" and id(source) in buffered:
                records = predictor.smooth_records(buffered.pop(id(source)), args.smooth, source.fps)
                writer.write(records)
                done_records.extend(records)
    bar.close()
    counts, corrupt = runner.counts, sum(s.corrupt_frames for s in found)
    failed = unreadable + len(problems)
    print(f"{counts['frames']} frames from {len(found) - unreadable} of {len(found) + len(problems)} inputs: "
          f"{counts['faces']} faces, {counts['frames_without_face']} frames without a face"
          + (f", {corrupt} corrupt video frames skipped" if corrupt else ""))
    if args.plot and done_records:
        from keras_mtanet.inference import plots
        plots.plot_records(done_records, args.plot, title=", ".join(args.inputs)[:80])
        print(f"plot: {args.plot}")
    print(f"predictions: {args.output}")
    if failed:
        print(f"keras-mtanet: {failed} input(s) failed", file=sys.stderr)
        return 1
    return 0


def run_train(args):
    from keras_mtanet import train

    config = train.load_config(args.config, backbone=args.backbone, input_size=args.input_size, width=args.width,
                               epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                               strategy=args.strategy, mixed_precision=args.mixed_precision)
    train.train(config, args.data, args.format, args.output, resume=args.resume,
                tensorboard=not args.no_tensorboard)
    return 0


def run_evaluate(args):
    from keras_mtanet import evaluate, load_pretrained

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

    model = load_pretrained(args.model)
    calibration = None
    if args.int8:
        calibration = export.calibration_images(model, args.calibration)
        if args.calibration is None:
            print("int8 calibration: generated synthetic faces (use --calibration with aligned crops of real "
                  "faces for a model trained on real data)")
    path = export.export(model, args.output, args.format, int8=args.int8, calibration=calibration)
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
            "evaluate": run_evaluate, "publish": run_publish, "export": run_export}


if __name__ == "__main__":
    sys.exit(main())
