"""Test fixture: generated videos of real face photographs moving over a background, with faceless stretches.

Used by the tests (``import scenes``: pytest puts this folder on ``sys.path``) and by
``benchmarks/video_fps.py`` (which adds this folder itself). The face pixels come from a photograph the caller
passes (e.g. scikit-image's ``astronaut()``), so detectors see a real face, and the true box of every face in
every frame is known. It lived in ``keras_mtanet/inference/scenes.py`` before: fixtures stay out of the package.
"""

import cv2
import numpy as np

FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "MJPG"}


def face_patch(photo, box, margin=0.6):
    """The face at ``box`` (x, y, w, h) of ``photo`` with ``margin`` times the box size around it, and the box
    position inside the patch."""
    x, y, w, h = (int(round(v)) for v in box)
    mx, my = int(margin * w), int(margin * h)
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(photo.shape[1], x + w + mx), min(photo.shape[0], y + h + my)
    return photo[y0:y1, x0:x1].copy(), np.array([x - x0, y - y0, w, h], np.float64)


def mirrored(patch, box):
    """The patch flipped left-right (a second, different-looking face) and its face box in the flipped patch."""
    x, y, w, h = box
    return patch[:, ::-1].copy(), np.array([patch.shape[1] - x - w, y, w, h], np.float64)


def background(height, width, seed=0):
    """A smooth, textured background that contains no face."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([90 + 60 * xx, 110 + 40 * yy, 140 - 50 * xx], axis=-1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)), (0, 0), 6)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def compose(n_frames, patches, size=(480, 640), faceless=(), seed=0):
    """Frames (uint8 RGB) and the true face boxes per frame.

    Args:
        patches: ``[(patch, box_in_patch, (x_start, y_start), (dx, dy)), ...]``: each patch moves by
            (dx, dy) pixels per frame from its start position.
        faceless: frame numbers drawn without any face.

    Returns:
        ``(frames, boxes)``: an array (n, H, W, 3) and, per frame, the list of (x, y, w, h) boxes drawn.
    """
    height, width = size
    bg = background(height, width, seed)
    frames, boxes = np.empty((n_frames, height, width, 3), np.uint8), []
    faceless = set(faceless)
    for i in range(n_frames):
        frame = bg.copy()
        drawn = []
        if i not in faceless:
            for patch, box, (x0, y0), (dx, dy) in patches:
                x, y = int(round(x0 + dx * i)), int(round(y0 + dy * i))
                ph, pw = patch.shape[:2]
                frame[y:y + ph, x:x + pw] = patch[:max(0, min(ph, height - y)), :max(0, min(pw, width - x))]
                drawn.append(np.array([x + box[0], y + box[1], box[2], box[3]]))
        frames[i] = frame
        boxes.append(drawn)
    return frames, boxes


def write_video(path, frames, fps=25.0):
    """Write RGB ``frames`` to ``path`` (.mp4 / .mov: MPEG-4 Part 2; .avi / .mkv: Motion JPEG)."""
    path = str(path)
    suffix = path[path.rfind("."):].lower()
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC.get(suffix, "MJPG")), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write this video format")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
