"""``keras-mtanet evaluate``: score a preset on an Aff-Wild2-layout split, write ABAW files."""

from keras_mtanet.cli.common import add_decision_arguments, at_least_one, check_decision_arguments, decisions_line


def add_arguments(p):
    from keras_mtanet.data.formats import formats_for

    formats = formats_for("evaluate")

    p.add_argument("--model", help="run folder, preset name or hf://ORG/REPO[@REV] (default: embedded)")
    p.add_argument("--data", required=True, help="Aff-Wild2 root (annotations/ and cropped_aligned/)")
    p.add_argument("--format", default=formats[0], choices=formats)
    p.add_argument("--split", default="Validation_Set")
    p.add_argument("--predictions", help="write OUT/{VA_Set,EXPR_Set,AU_Set}/<video>.txt here")
    p.add_argument("--metrics", help="write the scores to this JSON file")
    p.add_argument("--smooth", help="temporal smoothing window: seconds (0.5) or frames (15f)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate for --smooth in seconds")
    p.add_argument("--batch-size", type=int, default=64)
    add_decision_arguments(p)


def run(args):
    import math
    from pathlib import Path

    from keras_mtanet import evaluate
    from keras_mtanet.errors import UsageError
    from keras_mtanet.inference import records, smoothing
    from keras_mtanet.metrics import SCORE_KEYS
    from keras_mtanet.model.task import load_pretrained

    # Bad options and unwritable outputs fail here, before the model loads and the split is predicted.
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise UsageError(f"--fps {args.fps:g}: must be a positive number of frames per second")
    at_least_one(batch_size=args.batch_size)
    check_decision_arguments(args)
    smoothing.smoothing_window(args.smooth, args.fps)
    if args.predictions:
        records.check_writable_folder(args.predictions, "--predictions")
    if args.metrics:
        if Path(args.metrics).parent.is_dir():
            records.check_writable(args.metrics, "--metrics")
        else:  # write_metrics creates the folder
            records.check_writable_folder(Path(args.metrics).parent, "--metrics folder")
    from keras_mtanet.presets.decisions import Decisions

    model = load_pretrained(args.model)
    decisions = Decisions.from_metadata(model.metadata, args.expression_prior, args.au_threshold)
    print(decisions_line(decisions))
    scores = evaluate.evaluate(model, args.data, args.split, args.predictions, smooth=args.smooth, fps=args.fps,
                               batch_size=args.batch_size, expression_prior=args.expression_prior,
                               au_threshold=args.au_threshold)
    print("scores: " + ", ".join(f"{k} {scores[k]:.4f}" for k in SCORE_KEYS if k in scores))
    print("under the ABAW challenge's rule (AUs at 0.5, the posteriors' argmax): "
          + ", ".join(f"{k} {scores['challenge_rule'][k]:.4f}" for k in SCORE_KEYS if k in scores["challenge_rule"]))
    if "unsmoothed" in scores:
        print(f"without smoothing ({scores['smooth_frames']}-frame window off): "
              + ", ".join(f"{k} {scores['unsmoothed'][k]:.4f}" for k in SCORE_KEYS if k in scores["unsmoothed"]))
    if args.metrics:
        evaluate.write_metrics(args.metrics, scores)
        print(f"metrics: {args.metrics}")
    if args.predictions:
        print(f"prediction files: {args.predictions}")
    return 0
