"""The cartoon faces of the synthetic data set, drawn with anti-aliased primitives in numpy.

What is drawn follows the labels of a ``FrameState``:

- AU1 raises the inner brows, AU2 the outer brows, AU4 lowers the brows and draws them together;
  AU6 raises the cheeks (red cheek patches, narrower eyes); AU12 pulls the lip corners up, AU15 pulls them
  down; AU20 stretches the lips sideways; AU25 parts the lips.
- Anger presses the lips and narrows the eyes, Disgust wrinkles the nose and raises the upper lip (cues
  outside the 8 AUs).
- Valence bends the mouth and arousal opens the eyes and lifts the brows, so both can be read off the image.

Nuisances drawn: head pose (roll, yaw, scale, shift), face shape, skin tone, background, hair, blur, noise
and occluders. ``keras_mtanet.data.synthetic`` decides what each frame shows; this module only draws it.
"""

import dataclasses

import numpy as np

from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

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

