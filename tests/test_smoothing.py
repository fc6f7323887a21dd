import numpy as np
import pytest

from keras_mtanet.errors import DataError
from keras_mtanet.inference.smoothing import smooth_series, smoothing_window


def test_smoothing_window_reads_seconds_and_frames():
    assert smoothing_window("0.5", 30) == 15 and smoothing_window("9f", 30) == 9
    assert smoothing_window(None, 30) == smoothing_window("0", 30) == 1
    assert smoothing_window("12f", None) == 12  # frames need no frame rate
    assert smoothing_window("0.04", 25) == 1 and smoothing_window("1e9", 30) == 30_000_000_000


@pytest.mark.parametrize("smooth,fps,message", [
    ("soon", 30, r"^--smooth 'soon': give seconds \(0.5\) or frames \(15f\)$"),
    ("-1f", 30, r"^--smooth '-1f': the window must be at least one frame$"),
    ("0.01", 30, r"^--smooth '0.01': the window must be at least one frame$"),
    ("0.5", 0, r"^frame rate 0: must be a positive number of frames per second to smooth over seconds$"),
    ("0.5", float("nan"), r"^frame rate nan: must be a positive"),
])
def test_bad_smoothing_options_are_one_line(smooth, fps, message):
    with pytest.raises(DataError, match=message):
        smoothing_window(smooth, fps)


def test_centred_moving_average_against_a_direct_loop():
    x = np.arange(6, dtype=float)[:, None] ** 2
    # window 3, centred, edges averaged over what exists
    expected = [(0 + 1) / 2, (0 + 1 + 4) / 3, (1 + 4 + 9) / 3, (4 + 9 + 16) / 3, (9 + 16 + 25) / 3, (16 + 25) / 2]
    np.testing.assert_allclose(smooth_series(x, 3)[:, 0], expected)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(17, 3))
    for window in (2, 4, 5, 8):
        pad = window // 2
        direct = [values[max(0, k + pad - window + 1):k + pad + 1].mean(axis=0) for k in range(len(values))]
        np.testing.assert_allclose(smooth_series(values, window), direct, rtol=1e-12)
    assert smooth_series(values, 1) is values  # a one-frame window leaves the series as it is
    np.testing.assert_array_equal(smooth_series(values[:1], 9), values[:1])


def test_zero_is_no_smoothing_in_seconds_and_in_frames():
    assert smoothing_window("0f", 30) == smoothing_window("0", 30) == smoothing_window("0.0", 30) == 1
    assert smoothing_window("0f", None) == smoothing_window("0", float("nan")) == 1
    with pytest.raises(DataError, match="at least one frame"):
        smoothing_window("-1f", 30)
    with pytest.raises(DataError, match="at least one frame"):
        smoothing_window("0.001", 30)
