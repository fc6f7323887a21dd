"""``keras-mtanet demo``: a preset on a real photo (default) or on a generated video of synthetic faces, printed as
a table, with the predictions written through the same record writer as ``keras-mtanet predict``."""

import contextlib
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from keras_mtanet import files
from keras_mtanet.cli.common import MODEL_HELP, add_decision_arguments, check_decision_arguments, decisions_line
from keras_mtanet.errors import DataError, UsageError
from keras_mtanet.files import check_not_an_input, printable
from keras_mtanet.inference import native_logs, plots, records
from keras_mtanet.inference.records import plain
from keras_mtanet.inference.sources import Frame, Source, read_image

# The generated video is rendered, predicted and written CHUNK frames at a time; only the 17 outputs and labels per
# frame are kept for the scores (about 0.2 KB a frame). 100000000 frames once grew to 22 GB before failing; the
# cap keeps a run under about half an hour on 2 cores.
MAX_FRAMES = 100_000
CHUNK = 256
DEFAULT_FRAMES = 120
MAX_IMAGES = 8  # drawn side by side
PHOTO = "astronaut.jpg"  # keras_mtanet/assets: NASA, public domain (see assets/README.md)
SYNTHETIC_PRESET = "mtanet_se_resnet18_synth"


def add_arguments(p):
    p.add_argument("--model", help=f"{MODEL_HELP}; --synthetic: {SYNTHETIC_PRESET}")
    p.add_argument("--image", nargs="+", metavar="IMAGE", help="your own photos instead of the bundled one")
    p.add_argument("--plot", help="draw the faces and predictions into this image file (default: a new file in a "
                                  "temporary folder, whose path is printed)")
    p.add_argument("--synthetic", action="store_true", help="a generated video of synthetic faces instead")
    p.add_argument("--frames", type=int, default=None,
                   help=f"--synthetic: frames of the generated video, 1 to {MAX_FRAMES} "
                        f"(default {DEFAULT_FRAMES})")
    p.add_argument("--seed", type=int, default=2024, help="--synthetic: seed of the generated video")
    p.add_argument("--output", help="also write the predictions to this .csv or .json file, as keras-mtanet "
                                    "predict does (one row per face, or per frame with --synthetic)")
    add_decision_arguments(p)


def run(args):
    from keras_mtanet.errors import UsageError
    check_decision_arguments(args)
    rules = {"expression_prior": args.expression_prior, "au_threshold": args.au_threshold}
    if args.synthetic:
        given = [flag for flag, value in (("--image", args.image), ("--plot", args.plot)) if value]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise UsageError(f"{' and '.join(given)} {verb} to the photo demo, not --synthetic")
        return synthetic_demo(args.model, args.frames, args.seed, args.output, **rules)
    if args.frames is not None:
        raise UsageError("--frames applies to --synthetic only")
    return photo_demo(args.model, args.image, args.output, args.plot, quiet=not args.verbose, **rules)


def check_frames(frames):
    """The synthetic video's frame count (``DEFAULT_FRAMES`` for None); ``UsageError`` outside 1..MAX_FRAMES."""
    frames = DEFAULT_FRAMES if frames is None else frames
    if not 1 <= frames <= MAX_FRAMES:
        raise UsageError(f"--frames {frames}: give 1 to {MAX_FRAMES} frames")
    return frames


def photo_demo(model=None, images=None, output_path=None, plot_path=None, quiet=False, expression_prior=None,
               au_threshold=None):
    """Find the faces in ``images`` (paths; default: the bundled astronaut photograph beside its mirror image),
    print each face's predictions, write them to ``output_path`` (.csv / .json) and draw them into
    ``plot_path`` (default: a new file in a temporary folder). ``quiet``: drop the detector's native start-up
    log lines (``native_logs.native_logs_dropped``). ``expression_prior``, ``au_threshold``: the decision rules
    (``Predictor``'s; default: the preset's)."""
    import cv2

    from keras_mtanet.inference.predictor import Predictor
    from keras_mtanet.model.task import load_pretrained

    if output_path:
        records.check_output_path(output_path)
    if plot_path:
        plots.check_image_path(plot_path)
        check_not_an_input(plot_path, images or (), "--plot")
    if images and len(images) > MAX_IMAGES:
        raise UsageError(f"--image: give at most {MAX_IMAGES} photos (they are drawn side by side); use "
                         "keras-mtanet predict for more")
    failed = []
    if images:
        photos = []
        for path in images:  # an unreadable photo is named and counted; the others are still shown
            try:
                photos.append((str(path), read_image(path)))
            except DataError as error:
                failed.append(str(error))
                print(f"keras-mtanet: error: {printable(error)}", file=sys.stderr)
        if not photos:
            raise DataError(f"--image: none of the {len(images)} photos could be read")
        described = ", ".join(printable(name) for name, _ in photos)
    else:
        with resources.as_file(resources.files("keras_mtanet") / "assets" / PHOTO) as path:
            photo = read_image(path)
        photos = [("astronaut+mirror", np.concatenate([photo, photo[:, ::-1]], axis=1))]
        described = ("scikit-image's astronaut photograph (NASA, public domain) beside its mirror image: two faces "
                     "that should get about the same predictions")
    loaded = load_pretrained(model)
    meta = loaded.metadata
    with native_logs.quiet_unless(not quiet):
        predictor = Predictor(loaded, expression_prior=expression_prior, au_threshold=au_threshold)
    unreliable = set(predictor.decisions.unreliable_aus)
    print(f"model: {plain(meta.get('name') or model or 'default')} ({loaded.backbone_name}, "
          f"{loaded.input_shape[1]} px {getattr(loaded, 'color_mode', 'rgb')}, {loaded.count_params():,} parameters)")
    print(f"trained on: {plain(meta.get('training_data') or 'not stated by the preset')}")
    print(f"input: {described}")
    print(decisions_line(predictor.decisions) + (" (marked ?)" if unreliable else ""))
    print()
    print(f"{'image':<18} face  {'box (x, y, w, h)':<20} valence arousal  {'expression (p)':<18} active AUs")
    rows = []
    for name, image in photos:
        found = predictor.predict_source(Source(name, "array", image))
        rows.extend(found)
        for r in found:
            if not r["face_detected"]:
                print(f"{printable(name)[:18]:<18}    -  no face found")
                continue
            aus = ",".join(au + ("?" if au in unreliable else "") for au in records.AU_COLUMNS if r[au]) or "-"
            box = f"{r['x']:.0f}, {r['y']:.0f}, {r['w']:.0f}, {r['h']:.0f}"
            p = r[f"{r['expression']}_prob"]
            print(f"{printable(name)[:18]:<18} {r['face_id']:4d}  {box:<20} {r['valence']:+.2f}   "
                  f"{r['arousal']:+.2f}    {r['expression']:<10} ({p:.2f})  {aus}")
    print()
    print(f"what the preset is: {plain(meta.get('description') or 'see its model card')}")
    if output_path:
        with records.RecordWriter(output_path) as writer:
            writer.write(rows)
        print(f"per-face predictions: {printable(output_path)}")
    plot = plot_path or str(Path(tempfile.mkdtemp(prefix="keras-mtanet-demo-")) / "faces.png")
    drawn = plots.draw_faces([image for _, image in photos], rows, [name for name, _ in photos])
    ok, data = cv2.imencode(Path(plot).suffix.lower() or ".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"{printable(plot)}: OpenCV cannot write this image format")
    with files.AtomicFile(plot, "wb", user_file=True) as f:
        f.write(data.tobytes())
    print(f"plot: {printable(plot)}")
    if failed:
        print(f"keras-mtanet: {len(failed)} of {len(images)} photos could not be read", file=sys.stderr)
        return 1
    return 0


def synthetic_demo(model=None, frames=None, seed=2024, output_path=None, expression_prior=None, au_threshold=None):
    """Run a preset (default: the synthetic one) on a generated video of ``frames`` synthetic faces, print every
    few frames beside their generated truth and the ABAW scores, and write one record per frame to
    ``output_path`` (.csv / .json; each frame is a whole aligned face, as ``predict --no-detect`` gives), its
    decisions made by the preset's rules or the ones given (``expression_prior``, ``au_threshold``)."""
    from keras_mtanet.data import synthetic
    from keras_mtanet.labels import AU_NAMES, EXPR_NAMES
    from keras_mtanet.metrics import abaw_scores
    from keras_mtanet.model.task import load_pretrained
    from keras_mtanet.presets.decisions import Decisions

    frames = check_frames(frames)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"--seed {seed}: give a whole number from 0 (numpy seeds are not negative)")
    if output_path:
        records.check_output_path(output_path)  # before the model loads
    loaded = load_pretrained(model or SYNTHETIC_PRESET)
    meta = loaded.metadata
    decisions = Decisions.from_metadata(meta, expression_prior, au_threshold)
    size = int(loaded.input_shape[1])  # the checked config's, not the metadata's say-so
    name = f"synthetic video (seed {seed})"
    parts, truth = [], []
    start = 0
    with records.RecordWriter(output_path) if output_path else contextlib.nullcontext() as writer:
        for video, labels in synthetic.render_video_chunks(np.random.SeedSequence([seed, 7]), frames, size,
                                                           chunk=CHUNK):
            out = {k: np.asarray(v) for k, v in loaded.predict_on_batch(video.astype("float32")).items()}
            if writer is not None:
                writer.write(frame_records(name, video, out, start, decisions))
            parts.append(out)
            truth.append(labels)
            start += len(video)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    labels = {k: np.concatenate([t[k] for t in truth]) for k in truth[0]}
    print(f"model: {plain(meta.get('name') or model)} ({loaded.backbone_name}, {size} px, "
          f"{loaded.count_params():,} parameters)")
    print(f"trained on: {plain(meta.get('training_data') or 'not stated by the preset')}")
    print(f"input: a generated video of {frames} synthetic faces (seed {seed}), not seen in training")
    print(decisions_line(decisions))
    print()
    print(" frame  valence arousal  expression (p)        active AUs              | truth: V     A    expression")
    for i in range(0, frames, max(1, frames // 12)):
        expr = int(decisions.expression(out["expr"][i]))
        aus = ",".join(n for n, on in zip(AU_NAMES, decisions.aus_on(out["au"][i])) if on) or "-"
        print(f"{i:6d}  {out['va'][i, 0]:+.2f}   {out['va'][i, 1]:+.2f}    {EXPR_NAMES[expr]:<10} "
              f"({out['expr'][i, expr]:.2f})  {aus:<23} |  {labels['va'][i, 0]:+.2f} {labels['va'][i, 1]:+.2f} "
              f" {EXPR_NAMES[labels['expr'][i]]}")
    scores = abaw_scores(labels, {"va": out["va"], "au": decisions.aus_on(out["au"]),
                                  "expr": decisions.expression(out["expr"])})
    print()
    print("ABAW scores on this video: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print("These faces are synthetic cartoons: the scores show the pipeline at work, not real-world affect.")
    if output_path:
        print(f"per-frame predictions: {printable(output_path)}")
    return 0


def frame_records(name, video, out, start=0, decisions=records.DEFAULT_DECISIONS):
    """One record per frame of ``video`` (N, H, W, 3), numbered from ``start``, each frame a whole face crop
    (box = the frame, no detector score), with the model outputs ``out`` ({"va", "au", "expr"}, N rows each)
    decided by ``decisions``."""
    h, w = video.shape[1:3]
    box = (0.0, 0.0, float(w), float(h))
    return [records.face_record(Frame(name, start + i, None, video[i]), 0, box, float("nan"), out["va"][i],
                               out["au"][i], out["expr"][i], decisions) for i in range(len(video))]
