"""Temporal smoothing of per-frame predictions: the window a ``--smooth`` option asks for, and a centred
moving average over it. Used by ``evaluate`` (per video) and ``inference.predictor`` (per face track)."""

import numpy as np

from keras_mtanet.errors import DataError


def smoothing_window(smooth, fps):
    """``--smooth`` value -> window length in frames: ``"0.5"`` is seconds (times fps), ``"15f"`` frames.

    Any length is accepted (``smooth_series`` caps it at what a track needs); ``fps`` must be positive. Zero,
    in seconds or frames (``"0"``, ``"0f"``), is no smoothing (a one-frame window), as None is.

    Example:
        >>> smoothing_window("0.5", 30), smoothing_window("15f", 30), smoothing_window(None, 30)
        (15, 15, 1)
    """
    if smooth in (None, "", "0"):
        return 1
    text = str(smooth).strip().lower()
    try:
        if float(text[:-1] if text.endswith("f") else text) == 0:
            return 1
    except ValueError:
        pass  # named below
    if not text.endswith("f") and not (fps is not None and np.isfinite(fps) and fps > 0):
        raise DataError(f"frame rate {fps!r}: must be a positive number of frames per second to smooth over "
                        "seconds")
    try:
        frames = int(text[:-1]) if text.endswith("f") else int(round(float(text) * fps))
    except (ValueError, OverflowError):
        raise DataError(f"--smooth {smooth!r}: give seconds (0.5) or frames (15f)") from None
    if frames < 1:
        raise DataError(f"--smooth {smooth!r}: the window must be at least one frame")
    return frames


def smooth_series(values, window):
    """Centred moving average along axis 0 (edges average over the frames available): frame ``k`` averages
    frames ``k + window // 2 - window + 1`` to ``k + window // 2``.

    Running sums make it O(length) for any window; a window of ``2 * length - 1`` frames or more covers the
    whole series from every frame, so each frame gets the series mean."""
    values = np.asarray(values)
    n = len(values)
    if window <= 1 or n < 2:
        return values
    window = int(min(window, 2 * n - 1))
    pad = window // 2
    k = np.arange(n)
    lo, hi = np.clip(k + pad - window + 1, 0, n), np.clip(k + pad + 1, 0, n)
    sums = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0, dtype=np.float64)])
    return (sums[hi] - sums[lo]) / (hi - lo).reshape((n,) + (1,) * (values.ndim - 1))
