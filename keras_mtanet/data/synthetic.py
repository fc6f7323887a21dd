"""Procedural synthetic faces whose visible features follow affect labels.

Videos are smooth sequences of expression segments with their onsets: expressions are AU combinations
(EMFACS-style prototypes restricted to the 8 AUs) with a prototype valence/arousal, plus spontaneous single
AUs, smooth valence/arousal noise and head motion. ``keras_mtanet.data.cartoon`` draws each frame (which AU
moves which part of the face is documented there).

Everything is seeded: the same arguments give the same pixels and labels. ``write_affwild2`` writes the
exact Aff-Wild2 (ABAW 2020) on-disk layout, quirks included, through ``data.affwild2`` (the one home of that
format), so the real readers are tested on it.
"""

from pathlib import Path

import numpy as np

from keras_mtanet.data import affwild2
from keras_mtanet.data.affwild2 import SPLITS
from keras_mtanet.data.cartoon import FrameState, finish, random_identity, render_face
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA

# Expression -> (AUs drawn at full intensity, prototype (valence, arousal)).
EXPRESSION_PROTOTYPES = {
    "Neutral": ((), (0.0, -0.2)),
    "Anger": (("AU4",), (-0.6, 0.6)),
    "Disgust": (("AU15",), (-0.6, 0.1)),
    "Fear": (("AU1", "AU2", "AU4", "AU20", "AU25"), (-0.5, 0.8)),
    "Happiness": (("AU6", "AU12"), (0.7, 0.4)),
    "Sadness": (("AU1", "AU4", "AU15"), (-0.6, -0.5)),
    "Surprise": (("AU1", "AU2", "AU25"), (0.3, 0.8)),
}
PROTOTYPE_AUS = np.array([[1.0 if au in EXPRESSION_PROTOTYPES[e][0] else 0.0 for au in AU_NAMES]
                          for e in EXPR_NAMES], np.float32)
PROTOTYPE_VA = np.array([EXPRESSION_PROTOTYPES[e][1] for e in EXPR_NAMES], np.float32)


def _smooth_noise(rng, n, scale, smoothness):
    """A smooth random curve of length n with standard deviation ``scale`` (filtered white noise)."""
    width = max(1, int(smoothness))
    raw = rng.normal(0.0, 1.0, n + 2 * width)
    kernel = np.hanning(2 * width + 3)[1:-1]
    kernel /= np.sqrt(np.sum(kernel ** 2))  # unit variance whatever the length
    return scale * np.convolve(raw, kernel, mode="same")[width:width + n]


def video_states(rng, n_frames, min_segment=8, max_segment=20, nuisance=1.0):
    """Per-frame states for one video: expression segments with onsets, smooth VA and head motion.

    Segments go through the expressions in a shuffled cycle, so every identity shows most of them and a model
    cannot read the expression off who is in the video.
    """
    expr_track = np.zeros(n_frames, np.int64)
    intensity = np.zeros(n_frames, np.float32)
    strength = np.zeros(n_frames, np.float32)
    order = []
    t = 0
    while t < n_frames:
        length = int(rng.integers(min_segment, max_segment + 1))
        if not order:
            order = list(rng.permutation(len(EXPR_NAMES)))
        expression = int(order.pop())
        onset = min(int(rng.integers(2, 5)), length)
        ramp = np.ones(length, np.float32)
        ramp[:onset] = np.linspace(0.2, 1.0, onset)
        end = min(t + length, n_frames)
        expr_track[t:end] = expression
        intensity[t:end] = ramp[:end - t]
        strength[t:end] = rng.uniform(0.75, 1.0)
        t = end

    level = intensity * strength
    aus = PROTOTYPE_AUS[expr_track] * level[:, None]
    # Spontaneous single AUs on top of the expression, e.g. a brow flash while neutral.
    for j in range(len(AU_NAMES)):
        bumps = np.clip(_smooth_noise(rng, n_frames, 1.0, 8) - 1.2, 0.0, None) * 1.5
        aus[:, j] = np.clip(np.maximum(aus[:, j], bumps), 0.0, 1.0)
    # An expression reads as such once it is half-way through its onset.
    labels = np.where(level >= 0.5, expr_track, 0)
    va = PROTOTYPE_VA[expr_track] * level[:, None]
    va[:, 0] += _smooth_noise(rng, n_frames, 0.15, 10)
    va[:, 1] += _smooth_noise(rng, n_frames, 0.15, 10)
    va = np.clip(va, -1.0, 1.0)

    roll = _smooth_noise(rng, n_frames, 0.08 * nuisance, 15)
    yaw = np.clip(_smooth_noise(rng, n_frames, 0.3 * nuisance, 15), -0.8, 0.8)
    scale = 1.0 + _smooth_noise(rng, n_frames, 0.05 * nuisance, 20)
    sx = _smooth_noise(rng, n_frames, 0.04 * nuisance, 20)
    sy = _smooth_noise(rng, n_frames, 0.04 * nuisance, 20)
    blur = rng.uniform(0.0, 1.2) * nuisance
    noise = rng.uniform(0.0, 8.0) * nuisance
    occluder = None
    if rng.random() < 0.15 * nuisance:
        kind = "box" if rng.random() < 0.5 else "ellipse"
        occluder = (kind, rng.uniform(-0.7, 0.7), rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.25),
                    rng.uniform(0.1, 0.2), rng.uniform(0, 255, 3))
    return [FrameState(au=aus[i], expression=int(labels[i]), expression_intensity=float(level[i]),
                       valence=float(va[i, 0]), arousal=float(va[i, 1]), roll=float(roll[i]),
                       yaw=float(yaw[i]), scale=float(scale[i]), shift=(float(sx[i]), float(sy[i])),
                       blur=blur, noise=noise, occluder=occluder)
            for i in range(n_frames)]


def state_labels(states):
    """``{"va": (N, 2) float32, "au": (N, 8) float32 0/1, "expr": (N,) int32}`` for a list of states."""
    return {
        "va": np.array([[s.valence, s.arousal] for s in states], np.float32),
        "au": (np.stack([s.au for s in states]) >= 0.5).astype(np.float32),
        "expr": np.array([s.expression for s in states], np.int32),
    }


def render_video(seed, n_frames=90, size=112, nuisance=1.0):
    """One synthetic video: ``(frames (N, size, size, 3) uint8, labels dict)``."""
    (frames, labels), = render_video_chunks(seed, n_frames, size, nuisance, chunk=max(1, n_frames))
    return frames, labels


def render_video_chunks(seed, n_frames=90, size=112, nuisance=1.0, chunk=256):
    """``render_video``'s frames and labels, ``chunk`` frames at a time: the same video (same random draws) with
    memory bounded by the chunk, for long videos."""
    rng = np.random.default_rng(seed)
    identity = random_identity(rng)
    states = video_states(rng, n_frames, nuisance=nuisance)  # a few numbers per frame
    for start in range(0, n_frames, chunk):
        part = states[start:start + chunk]
        yield (np.stack([finish(render_face(s, identity, size), rng, s.noise) for s in part]),
               state_labels(part))


def generate(n, size=64, seed=0, frames_per_video=30, nuisance=1.0):
    """``n`` labelled synthetic face crops in memory: ``(images (n, size, size, 3) uint8, labels)``.

    Frames come from ``ceil(n / frames_per_video)`` videos with different identities, so the set is
    diverse but has the temporal correlation of real video data.

    Example:
        >>> images, labels = generate(256, size=64, seed=1)
        >>> images.shape, labels["va"].shape, labels["au"].shape, labels["expr"].shape
        ((256, 64, 64, 3), (256, 2), (256, 8), (256,))
    """
    frames, labels = [], []
    seeds = np.random.SeedSequence(seed).spawn(int(np.ceil(n / frames_per_video)))
    for video_seed in seeds:
        f, lab = render_video(video_seed, frames_per_video, size, nuisance)
        frames.append(f)
        labels.append(lab)
    images = np.concatenate(frames)[:n]
    return images, {k: np.concatenate([lab[k] for lab in labels])[:n] for k in labels[0]}


def mask_partial(labels, rng, va=0.2, au=0.3, expr=0.3):
    """Copy of ``labels`` with Aff-Wild2's unannotated codes on a random share of rows per task."""
    out = {k: v.copy() for k, v in labels.items()}
    n = len(out["va"])
    out["va"][rng.random(n) < va] = UNANNOTATED_VA
    out["au"][rng.random(n) < au] = UNANNOTATED_AU
    out["expr"][rng.random(n) < expr] = UNANNOTATED_EXPR
    return out



def _encode_jpeg(frame, quality=92):
    import tensorflow as tf

    return tf.io.encode_jpeg(frame, quality=quality).numpy()


# Left in every root write_affwild2 writes into, first: such a root may be written into again; no other is.
MARKER = ".keras_mtanet_synthetic"


def check_data_root(root):
    """``UsageError`` unless synthetic data may be generated into ``root``: it is missing, an empty folder or
    one ``write_affwild2`` wrote into (``MARKER``), so a user's own folder is never written into."""
    from keras_mtanet.errors import UsageError
    from keras_mtanet.files import printable

    root = Path(root)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise UsageError(f"{printable(root)}: is not a folder; --format synthetic generates its data into a new "
                         "or empty folder")
    if root.is_dir() and not (root / MARKER).is_file() and any(root.iterdir()):
        raise UsageError(f"{printable(root)}: is not empty and holds no synthetic data set (no {MARKER}); "
                         "--format synthetic generates its data into a new or empty folder (choose another --data)")


def write_affwild2(root, train_videos=14, val_videos=6, frames=90, size=112, seed=0, missing_crop_rate=0.02,
                   unannotated_rate=0.05, partial_tasks=True, two_person_video=True, nuisance=1.0):
    """Write a synthetic data set in the exact Aff-Wild2 (ABAW 2020) layout under ``root``.

    ``root/cropped_aligned/<video>/<i:05d>.jpg`` holds frame i (1-based) of each video and
    ``root/annotations/{VA_Set,EXPR_Set,AU_Set}/{Training_Set,Validation_Set}/<video>.txt`` one header line
    and one line per frame. Quirks reproduced: some frames have no crop (``missing_crop_rate``), some
    annotation runs are unannotated (``unannotated_rate``: -5 / -1), with ``partial_tasks`` some videos
    appear in only one or two task folders, and with ``two_person_video`` one video of each split has two
    people, named ``<video>_left`` and ``<video>_right``.

    Returns:
        ``{split: {video: {"labels": dict, "tasks": tuple, "missing": sorted frame numbers}}}``: the ground
        truth that was written (labels before masking, with the task coverage and missing crops).
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / MARKER).write_text("written by keras_mtanet.data.synthetic.write_affwild2\n", encoding="utf-8")
    rng = np.random.default_rng(seed)
    truth = {}
    counter = 0
    for split, count in zip(SPLITS, (train_videos, val_videos)):
        truth[split] = {}
        names = []
        for v in range(count):
            base = f"{'train' if split == SPLITS[0] else 'val'}_{v:03d}"
            if two_person_video and v == count - 1 and count > 1:
                names += [base + "_left", base + "_right"]
            else:
                names.append(base)
        for k, video in enumerate(names):
            counter += 1
            video_seed = np.random.SeedSequence([seed, counter])
            video_frames, labels = render_video(video_seed, frames, size, nuisance)
            tasks = ("va", "au", "expr")
            if partial_tasks and k % 5 == 3:
                tasks = (("va",), ("au", "expr"), ("va", "expr"))[k % 3]
            missing = sorted(int(i) + 1 for i in np.flatnonzero(rng.random(frames) < missing_crop_rate))

            # The folder exists even when every crop of the video is missing.
            affwild2.crop_folder(root, video).mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(video_frames, start=1):
                if i not in missing:
                    affwild2.write_crop(root, video, i, _encode_jpeg(frame))

            for task in tasks:
                values = labels[task].copy()
                if rng.random() < 0.5 and unannotated_rate > 0:
                    run = max(1, int(unannotated_rate * frames))
                    start = int(rng.integers(0, frames - run + 1))
                    values[start:start + run] = affwild2.UNANNOTATED[task]
                affwild2.write_annotation_file(affwild2.annotation_path(root, task, split, video), task, values)
            truth[split][video] = {"labels": labels, "tasks": tasks, "missing": missing}
    return truth
