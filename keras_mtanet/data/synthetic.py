"""Procedural synthetic faces whose visible features follow affect labels.

A cartoon face is drawn with anti-aliased primitives in numpy. What is drawn follows the labels:

- AU1 raises the inner brows, AU2 the outer brows, AU4 lowers the brows and draws them together;
  AU6 raises the cheeks (red cheek patches, narrower eyes); AU12 pulls the lip corners up, AU15 pulls them
  down; AU20 stretches the lips sideways; AU25 parts the lips.
- Expressions are AU combinations (EMFACS-style prototypes restricted to the 8 AUs) plus cues outside them:
  pressed lips and narrowed eyes for Anger, a wrinkled nose and raised upper lip for Disgust.
- Valence bends the mouth and arousal opens the eyes and lifts the brows, so both can be read off the image.

Nuisance variation: head pose (roll, yaw, scale, shift), face shape, skin tone, background, hair, blur,
noise and occluders. Videos are smooth sequences of expression segments with their onsets.

Everything is seeded: the same arguments give the same pixels and labels. ``write_affwild2`` writes the
exact Aff-Wild2 (ABAW 2020) on-disk layout, quirks included, so the real readers are tested on it.
"""

import dataclasses
from pathlib import Path

import numpy as np

from keras_mtanet.labels import (AU_NAMES, EXPR_NAMES, UNANNOTATED_AU, UNANNOTATED_EXPR, UNANNOTATED_VA,
                                 VA_NAMES)

AU_INDEX = {name: i for i, name in enumerate(AU_NAMES)}

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
ANGER, DISGUST = EXPR_NAMES.index("Anger"), EXPR_NAMES.index("Disgust")

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 128], [198, 134, 96], [141, 85, 56],
                       [96, 60, 40]], np.float32)


@dataclasses.dataclass
class Identity:
    """What stays fixed for one person across a video."""
    skin: np.ndarray
    hair: np.ndarray
    background: np.ndarray
    background2: np.ndarray
    face_width: float
    face_height: float
    eye_spacing: float
    mouth_y: float
    hair_line: float


@dataclasses.dataclass
class FrameState:
    """Everything that determines one frame: labels (continuous) and nuisances."""
    au: np.ndarray            # (8,) intensities in [0, 1]; a label is active at >= 0.5
    expression: int
    expression_intensity: float
    valence: float
    arousal: float
    roll: float = 0.0         # radians
    yaw: float = 0.0          # -1..1, horizontal turn
    scale: float = 1.0
    shift: tuple = (0.0, 0.0)
    blur: float = 0.0         # gaussian sigma, in pixels of a 112 px image
    noise: float = 0.0        # std in 0-255 units
    occluder: tuple = None    # (kind, cx, cy, rx, ry, rgb) in face coordinates


def random_identity(rng):
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(np.floor(tone))
    skin = SKIN_TONES[lo] + (tone - lo) * (SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[lo])
    return Identity(
        skin=skin * rng.uniform(0.9, 1.05),
        hair=rng.uniform(10, 120, 3).astype(np.float32) * rng.uniform(0.5, 1.2),
        background=rng.uniform(0, 255, 3).astype(np.float32),
        background2=rng.uniform(0, 255, 3).astype(np.float32),
        face_width=rng.uniform(0.56, 0.68),
        face_height=rng.uniform(0.78, 0.86),
        eye_spacing=rng.uniform(0.23, 0.28),
        mouth_y=rng.uniform(0.42, 0.48),
        hair_line=rng.uniform(-0.72, -0.55),
    )


# ---------------------------------------------------------------------------------------------------------
# drawing


def _coverage(distance, pixel):
    """Anti-aliased coverage from a signed distance (negative inside), in face units."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def _ellipse(x, y, cx, cy, rx, ry):
    return (np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * min(rx, ry)


def _segment(x, y, x0, y0, x1, y1, half_thickness):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy)) - half_thickness


def _paint(canvas, alpha, rgb):
    canvas += alpha[..., None] * (np.asarray(rgb, np.float32) - canvas)


def _blur(img, sigma):
    if sigma < 0.3:
        return img
    radius = int(np.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    rows = sum(k[i] * pad[:, i:i + w] for i in range(len(k)))
    return sum(k[i] * rows[i:i + h] for i in range(len(k)))


def render_face(state, identity, size=112):
    """Draw one face crop of ``size`` x ``size`` RGB pixels (uint8) for ``state`` and ``identity``."""
    au = dict(zip(AU_NAMES, np.clip(state.au, 0.0, 1.0)))
    arousal, valence = state.arousal, state.valence
    press = state.expression_intensity if state.expression == ANGER else 0.0
    wrinkle = state.expression_intensity if state.expression == DISGUST else 0.0

    # Pixel grid -> face coordinates (face roughly in [-1, 1]) through the inverse head pose.
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gx, gy = np.meshgrid(lin, lin)
    zoom = 1.3 * state.scale  # aligned crops are tight around the face, as Aff-Wild2's are
    gx, gy = (gx - state.shift[0]) / zoom, (gy - state.shift[1]) / zoom
    c, s = np.cos(state.roll), np.sin(state.roll)
    x, y = c * gx + s * gy, -s * gx + c * gy
    pixel = 2.0 / size / zoom
    turn = 0.22 * state.yaw  # features slide towards the turned side
    squash = 1.0 - 0.25 * abs(state.yaw)

    img = np.empty((size, size, 3), np.float32)
    mix = (gy[..., None] + 1.0) / 2.0
    img[:] = identity.background * (1 - mix) + identity.background2 * mix

    fw, fh = identity.face_width * squash, identity.face_height
    _paint(img, _coverage(_ellipse(x, y, 0.0, -0.1, fw * 1.15, fh * 0.95), pixel) * (y < 0.25),
           identity.hair)
    face = _coverage(_ellipse(x, y, turn * 0.3, 0.05, fw, fh), pixel)
    _paint(img, face, identity.skin)
    fringe = identity.hair_line + 0.04 * np.sin(9.0 * x + 10.0 * identity.hair_line)
    _paint(img, face * _coverage(y - fringe, pixel), identity.hair)

    skin_dark = identity.skin * 0.72
    # Cheeks (AU6).
    for side in (-1, 1):
        cx = side * identity.eye_spacing * 1.15 * squash + turn
        _paint(img, 0.85 * au["AU6"] * _coverage(_ellipse(x, y, cx, 0.13, 0.13, 0.09), pixel),
               identity.skin * np.array([1.1, 0.55, 0.55]))

    # Eyes: arousal opens them, AU6 narrows them from below.
    openness = np.clip(0.55 + 0.45 * arousal - 0.35 * au["AU6"] + 0.2 * au["AU2"] - 0.3 * press, 0.15, 1.2)
    eye_y = -0.15
    for side in (-1, 1):
        cx = side * identity.eye_spacing * squash + turn
        ry = 0.07 * openness
        _paint(img, _coverage(_ellipse(x, y, cx, eye_y, 0.115 * squash, ry), pixel), (245, 245, 245))
        iris = _coverage(_ellipse(x, y, cx + 0.03 * state.yaw, eye_y, 0.045, min(0.045, ry)), pixel)
        _paint(img, iris, (40, 30, 25))
        _paint(img, _coverage(np.abs(_ellipse(x, y, cx, eye_y, 0.115 * squash, ry)) - 0.008, pixel),
               skin_dark * 0.6)

    # Brows: AU1 inner up, AU2 outer up, AU4 down and together; arousal lifts a little.
    lift = 0.05 * arousal
    for side in (-1, 1):
        inner_x = side * (0.08 - 0.035 * au["AU4"]) * squash + turn
        outer_x = side * (identity.eye_spacing + 0.14) * squash + turn
        inner_y = -0.3 - 0.12 * au["AU1"] + 0.08 * au["AU4"] - lift
        outer_y = -0.31 - 0.14 * au["AU2"] + 0.02 * au["AU4"] - lift
        _paint(img, _coverage(_segment(x, y, inner_x, inner_y, outer_x, outer_y, 0.04), pixel),
               identity.hair * 0.8)

    # Nose, and the Disgust wrinkles across it.
    _paint(img, _coverage(_segment(x, y, turn * 1.3, -0.08, turn * 1.3 + 0.03, 0.2, 0.018), pixel), skin_dark)
    for k in range(2):
        yy = -0.02 + 0.07 * k
        _paint(img, wrinkle * _coverage(_segment(x, y, turn - 0.12, yy, turn + 0.12, yy - 0.02, 0.022),
                                        pixel), skin_dark * 0.55)

    # Mouth: a parabola whose corners follow AU12/AU15 and valence; AU20 widens it, AU25 opens it.
    half_w = (0.2 + 0.13 * au["AU20"] + 0.04 * au["AU12"] - 0.06 * press) * squash
    bend = 0.12 * au["AU12"] - 0.12 * au["AU15"] + 0.18 * valence
    mx, my = turn, identity.mouth_y - 0.05 * wrinkle  # Disgust raises the upper lip
    u = (x - mx) / half_w
    inside = np.abs(u) <= 1.0
    centre_line = my - bend * (u ** 2 - 0.3)
    gap = (0.15 * au["AU25"] + 0.05 * au["AU25"] * max(arousal, 0.0)) * (1.0 - u ** 2)
    opening = (np.abs(y - centre_line) - gap / 2.0)
    _paint(img, _coverage(opening, pixel) * inside * (gap > 0.004), (60, 15, 20))
    lip = 0.034 - 0.02 * press - 0.01 * au["AU20"]
    lip_color = identity.skin * np.array([0.85, 0.5, 0.5]) * (1.0 - 0.35 * press)
    for sign in (-1, 1):
        edge = centre_line + sign * gap / 2.0
        _paint(img, _coverage(np.abs(y - edge - sign * lip / 2.0) - lip / 2.0, pixel) * inside, lip_color)

    # Occluder: a hand, glasses frame or sticker in front of the face.
    if state.occluder is not None:
        kind, cx, cy, rx, ry, rgb = state.occluder
        if kind == "box":
            d = np.maximum(np.abs(x - cx) - rx, np.abs(y - cy) - ry)
        else:
            d = _ellipse(x, y, cx, cy, rx, ry)
        _paint(img, _coverage(d, pixel), rgb)

    img = _blur(img, state.blur * size / 112.0)
    return img


def finish(img, rng, noise):
    """Add sensor noise and quantise to uint8."""
    if noise > 0:
        img = img + rng.normal(0.0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# sequences


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
    rng = np.random.default_rng(seed)
    identity = random_identity(rng)
    states = video_states(rng, n_frames, nuisance=nuisance)
    frames = np.stack([finish(render_face(s, identity, size), rng, s.noise) for s in states])
    return frames, state_labels(states)


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


# ---------------------------------------------------------------------------------------------------------
# Aff-Wild2 layout

TASK_DIRS = {"va": "VA_Set", "expr": "EXPR_Set", "au": "AU_Set"}
TASK_HEADERS = {"va": ",".join(VA_NAMES), "expr": ",".join(EXPR_NAMES), "au": ",".join(AU_NAMES)}
SPLITS = ("Training_Set", "Validation_Set")


def format_annotation_line(task, value):
    """One line of an Aff-Wild2 annotation file for ``task``."""
    if task == "va":
        return "%.6g,%.6g" % (value[0], value[1])
    if task == "expr":
        return str(int(value))
    return ",".join(str(int(v)) for v in value)


def write_annotation_file(path, task, values):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(TASK_HEADERS[task] + "\n")
        for v in values:
            f.write(format_annotation_line(task, v) + "\n")


def _encode_jpeg(frame, quality=92):
    import tensorflow as tf

    return tf.io.encode_jpeg(frame, quality=quality).numpy()


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
    root = Path(root)
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

            crop_dir = root / "cropped_aligned" / video
            crop_dir.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(video_frames, start=1):
                if i not in missing:
                    (crop_dir / f"{i:05d}.jpg").write_bytes(_encode_jpeg(frame))

            for task in tasks:
                values = labels[task].copy()
                if rng.random() < 0.5 and unannotated_rate > 0:
                    run = max(1, int(unannotated_rate * frames))
                    start = int(rng.integers(0, frames - run + 1))
                    values[start:start + run] = {"va": UNANNOTATED_VA, "au": UNANNOTATED_AU,
                                                 "expr": UNANNOTATED_EXPR}[task]
                write_annotation_file(root / "annotations" / TASK_DIRS[task] / split / f"{video}.txt", task,
                                      values)
            truth[split][video] = {"labels": labels, "tasks": tasks, "missing": missing}
    return truth
