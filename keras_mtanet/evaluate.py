"""Evaluate a preset on an Aff-Wild2-layout split and write ABAW prediction files.

Prediction files follow the official format: ``OUT/{VA_Set,EXPR_Set,AU_Set}/<video>.txt`` with the annotation
file's header and one line for every annotation line (VA: ``valence,arousal`` floats; EXPR: a class id; AU:
eight 0/1 values), written by ``data.affwild2``, the one home of the format. Frames without a usable crop get
the prediction of the nearest frame that has one. Scores are computed from exactly what is written, against
every annotated line. Smoothing is ``keras_mtanet.inference.smoothing``.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mtanet import files
from keras_mtanet.data import affwild2, datasets
from keras_mtanet.data.affwild2 import read_annotations
from keras_mtanet.errors import DataError, first_line
from keras_mtanet.inference.smoothing import smooth_series, smoothing_window
from keras_mtanet.labels import AU_NAMES, AU_THRESHOLD, EXPR_NAMES
from keras_mtanet.metrics import abaw_scores
from keras_mtanet.presets.decisions import Decisions

# The ABAW challenge's own rule: every AU on above 0.5, the expression the argmax of the posteriors.
CHALLENGE_RULE = Decisions(AU_THRESHOLD, au_rule=f"{AU_THRESHOLD:g}")


def predict_frames(model, index, batch_size=64, log=None):
    """Per-frame outputs for ``index`` as ``{"va", "au", "expr"}`` arrays aligned with it, and a boolean mask
    of the frames that were predicted (an image that fails to decode is left out, not shifted). The images
    that failed to decode are counted and named in one ``log`` line."""
    size = int(model.input_shape[1])
    positions = np.arange(len(index), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(index.paths, dtype=str), positions))
    ds = ds.map(lambda path, pos: (datasets.decode_and_resize(path, size), pos),
                num_parallel_calls=datasets.parallel_calls(), deterministic=True)
    # Undecodable images drop out here; the positions never seen name them below.
    ds = datasets.finish(ds.ignore_errors().batch(batch_size))
    out = {"va": np.zeros((len(index), 2), np.float32), "au": np.zeros((len(index), len(AU_NAMES)), np.float32),
           "expr": np.zeros((len(index), len(EXPR_NAMES)), np.float32)}
    done = np.zeros(len(index), bool)
    for images, pos in ds:
        pred = model.predict_on_batch(images)
        pos = pos.numpy()
        for key in out:
            out[key][pos] = np.asarray(pred[key])
        done[pos] = True
    undecodable = np.flatnonzero(~done)
    if len(undecodable) and log is not None:
        named = ", ".join(str(index.paths[i]) for i in undecodable[:10])
        more = f" and {len(undecodable) - 10} more" if len(undecodable) > 10 else ""
        log(f"{len(undecodable)} crop(s) passed the file check but could not be decoded (left out, filled from "
            f"the nearest predicted frame): {named}{more}")
    return out, done


def fill_nearest(length, frame_numbers, values):
    """Values for frames 1..length from the nearest frame in ``frame_numbers`` (1-based, sorted)."""
    frame_numbers = np.asarray(frame_numbers)
    targets = np.arange(1, length + 1)
    right = np.clip(np.searchsorted(frame_numbers, targets), 0, len(frame_numbers) - 1)
    left = np.clip(right - 1, 0, len(frame_numbers) - 1)
    use_left = np.abs(targets - frame_numbers[left]) <= np.abs(frame_numbers[right] - targets)
    return values[np.where(use_left, left, right)]


def video_predictions(index, outputs, done, window):
    """``{video: {"frames": frame numbers, "va", "au", "expr"}}`` from predicted frames, smoothed per video."""
    videos = {}
    names = np.asarray(index.videos)
    for video in dict.fromkeys(index.videos):
        rows = np.flatnonzero((names == video) & done)
        if len(rows) == 0:
            continue
        order = rows[np.argsort(index.frames[rows])]
        videos[video] = {"frames": index.frames[order]}
        for key in ("va", "au", "expr"):
            videos[video][key] = smooth_series(outputs[key][order], window)
    return videos


def prediction_rows(annotations, videos, decisions=CHALLENGE_RULE):
    """The rows of every prediction file, as they are written: ``{task: {video: (labels, rows)}}``.

    VA rows are clipped to [-1, 1] and rounded to 6 decimals, EXPR rows are class ids, AU rows 0/1, both decided by
    ``decisions`` (``keras_mtanet.presets.decisions.Decisions``).
    """
    per_task, missing = {}, set()
    for task, per_video in annotations.items():
        for video, labels in per_video.items():
            if video not in videos:
                missing.add(video)
                continue
            v = videos[video]
            values = fill_nearest(len(labels), v["frames"], v[task])
            if task == "va":
                rows = np.round(np.clip(values, -1.0, 1.0), 6)
            elif task == "expr":
                rows = decisions.expression(values).astype(np.int32)
            else:
                rows = decisions.aus_on(values).astype(np.float32)
            per_task.setdefault(task, {})[video] = (labels, rows)
    if missing:
        raise DataError(f"no frame could be predicted for video(s) {', '.join(sorted(missing))}: "
                        "their crops are all missing or corrupt")
    return per_task


def scores_of(rows):
    y_true = {t: np.concatenate([lab for lab, _ in v.values()]) for t, v in rows.items()}
    y_pred = {t: np.concatenate([r for _, r in v.values()]) for t, v in rows.items()}
    return abaw_scores(y_true, y_pred)


def write_prediction_files(rows, out_dir):
    """Write ``OUT/{VA_Set,EXPR_Set,AU_Set}/<video>.txt`` in the annotation files' format (VA with 6 decimals),
    each under a temporary name and renamed."""
    for task, videos in rows.items():
        for video, (_, values) in videos.items():
            affwild2.write_annotation_file(affwild2.prediction_path(out_dir, task, video), task, values,
                                           va_format=affwild2.PREDICTION_VA_FORMAT)


def evaluate(model, root, split="Validation_Set", predictions_dir=None, smooth=None, fps=30.0, batch_size=64,
             log=print, expression_prior=None, au_threshold=None):
    """Predict every frame of a split, write prediction files and return the scores.

    The prediction files and the main scores follow the preset's decision rules, or the ones given
    (``expression_prior``, ``au_threshold``; see ``keras_mtanet.presets.decisions``).

    Returns:
        ``{**abaw_scores, "frames": n, "predicted_frames": m, "decisions": {...}, "challenge_rule": {...}}`` for
        the written predictions, ``"challenge_rule"`` holding the ABAW scores under the challenge's own rule (AUs
        at 0.5, the posteriors' argmax); with smoothing, also ``"unsmoothed": {...}`` (the same without it) and
        ``"smooth_frames"``.
    """
    decisions = Decisions.from_metadata(getattr(model, "metadata", None), expression_prior, au_threshold)
    index = affwild2.read_index(root, split)
    if len(index) == 0:
        raise DataError(f"{root}: split {split!r} has no usable frames")
    outputs, done = predict_frames(model, index, batch_size, log=log)
    window = smoothing_window(smooth, fps)
    annotations = read_annotations(root, split)
    videos = video_predictions(index, outputs, done, window)
    rows = prediction_rows(annotations, videos, decisions)
    scores = scores_of(rows)
    scores["decisions"] = decisions.describe()
    scores["challenge_rule"] = scores_of(prediction_rows(annotations, videos, CHALLENGE_RULE))
    if window > 1:
        scores["unsmoothed"] = scores_of(prediction_rows(annotations, video_predictions(index, outputs, done, 1),
                                                         decisions))
        scores["smooth_frames"] = window
    if predictions_dir:
        write_prediction_files(rows, predictions_dir)
    scores["frames"] = int(index.stats["annotated_frames"])
    scores["predicted_frames"] = int(done.sum())
    log(f"{split}: {scores['predicted_frames']} frames predicted of {scores['frames']} annotated "
        f"({index.stats['missing_crops']} without a crop, {index.stats['corrupt_crops']} corrupt: filled from the "
        "nearest predicted frame)")
    return scores


def write_metrics(path, scores):
    """Write the scores as JSON (to a temporary name, then renamed onto ``path``)."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file in the way, or no permission
        raise DataError(f"{folder}: cannot create folder ({error.strerror or first_line(error)})") from None
    with files.AtomicFile(path, "w", user_file=True) as f:
        f.write(files.dump_json(scores))
