import time

import numpy as np
import pytest

from keras_mtanet.errors import DataError
from keras_mtanet.inference import predictor, records, smoothing, sources
from keras_mtanet.inference.smoothing import smooth_series, smoothing_window
from keras_mtanet.labels import EXPR_NAMES


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


@pytest.mark.safety
def test_a_huge_smoothing_window_is_the_track_mean():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0]])
    np.testing.assert_allclose(smoothing.smooth_series(values, 10 ** 12), [[3.0, 30.0]] * 3)
    # 2 * length - 1 frames is the shortest window that reaches every frame from every frame.
    np.testing.assert_allclose(smoothing.smooth_series(values, 5), [[3.0, 30.0]] * 3)
    np.testing.assert_allclose(smoothing.smooth_series(values, 4)[0], [3.0, 30.0])
    np.testing.assert_allclose(smoothing.smooth_series(values, 4)[2], [4.0, 40.0])  # frames 1 and 2
    assert smoothing.smoothing_window("1e9", 30) == 30_000_000_000
    long = np.arange(200_000, dtype=np.float64)[:, None]
    start = time.perf_counter()
    np.testing.assert_allclose(smoothing.smooth_series(long, 30_000_000_000)[[0, -1], 0], [99_999.5] * 2)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(DataError, match=r"^--smooth '1e400': give seconds \(0.5\) or frames \(15f\)$"):
        smoothing.smoothing_window("1e400", 30)


@pytest.mark.safety
def test_smooth_records_with_a_huge_window_averages_each_face():
    def record(frame, valence, au1, expr):
        frame = sources.Frame("clip.mp4", frame, frame / 25, None)
        probs = np.zeros(len(EXPR_NAMES))
        probs[expr] = 1.0
        return records.face_record(frame, 0, (0, 0, 10, 10), 1.0, (valence, 0.0), [au1] + [0.0] * 7, probs)

    # Valence 0.2, -0.4, 0.8 (mean 0.2); AU1 0.9, 0.3, 0.3 (mean 0.5); expressions 1, 2, 2 (2 wins with 2/3).
    rows = [record(0, 0.2, 0.9, 1), record(1, -0.4, 0.3, 2), record(2, 0.8, 0.3, 2)]
    smoothed = predictor.smooth_records(rows, "1e9", 25.0)
    assert len(smoothed) == 3
    for r in smoothed:
        assert r["valence"] == pytest.approx(0.2) and r["AU1_prob"] == pytest.approx(0.5)
        assert r["AU1"] == 0  # 0.5 is not above the 0.5 threshold
        assert r[f"{EXPR_NAMES[2]}_prob"] == pytest.approx(2 / 3) and r["expression"] == EXPR_NAMES[2]
