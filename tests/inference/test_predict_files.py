"""``Predictor.predict_files`` and ``keras-mtanet predict --stride / --max-frames`` on a generated video whose
frames are known: which frame indices get rows, how many, and that each row holds its own frame's prediction."""

import csv
import json

import cv2
import numpy as np
import pytest
import scenes

from keras_mtanet import Predictor
from keras_mtanet.cli import main
from keras_mtanet.data import synthetic
from keras_mtanet.inference import records
from keras_mtanet.inference.predictor import FilesReport
from keras_mtanet.model import task

N_FRAMES = 10


@pytest.fixture(scope="module")
def video(preset, tmp_path_factory):
    """A 10-frame Motion-JPEG video of synthetic faces at the preset's input size, and its frames as decoded."""
    size = int(preset.input_shape[1])
    frames, _ = synthetic.render_video(np.random.SeedSequence([3, 7]), N_FRAMES, size)
    path = tmp_path_factory.mktemp("video") / "faces.avi"
    scenes.write_video(path, frames.astype(np.uint8), 25.0)
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(decoded) == N_FRAMES
    return path, np.stack(decoded)


@pytest.fixture(scope="module")
def runner(preset):
    return Predictor(preset, detector=None, batch_size=3)


class Sink:
    """An output that records each ``write`` call."""

    def __init__(self):
        self.calls = []

    def write(self, records):
        self.calls.append(list(records))

    @property
    def records(self):
        return [r for call in self.calls for r in call]


@pytest.mark.parametrize("stride, max_frames, expected", [
    (1, None, list(range(10))),
    (3, None, [0, 3, 6, 9]),
    (4, None, [0, 4, 8]),
    (3, 2, [0, 3]),
    (1, 4, [0, 1, 2, 3]),
    (2, 100, [0, 2, 4, 6, 8]),
    (11, None, [0]),
])
def test_stride_and_max_frames_pick_these_frames(runner, video, stride, max_frames, expected):
    path, _ = video
    sink = Sink()
    report = runner.predict_files([str(path)], output=sink, stride=stride, max_frames=max_frames)
    assert [r["frame"] for r in sink.records] == expected
    assert isinstance(report, FilesReport)
    assert (report.inputs, report.frames, report.faces, report.rows, report.failed) == (
        1, len(expected), len(expected), len(expected), 0)
    assert report.frames_without_face == 0 and report.corrupt_frames == 0


def test_each_row_holds_its_own_frames_prediction(preset, runner, video):
    path, decoded = video
    table = runner.predict_files([str(path)], stride=3)  # no output: a table, as before
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    expected = preset.predict(decoded[[0, 3, 6, 9]].astype("float32"), verbose=0)
    np.testing.assert_allclose([[r["valence"], r["arousal"]] for r in rows], expected["va"], atol=1e-4)
    np.testing.assert_allclose([[r[c] for c in records.AU_PROB_COLUMNS] for r in rows], expected["au"], atol=1e-4)
    # Timestamps follow the frame index at the file's 25 frames per second.
    assert [r["timestamp"] for r in rows] == pytest.approx([0.0, 0.12, 0.24, 0.36])


def test_records_stream_out_per_batch_and_a_smoothed_video_at_its_end(runner, video):
    path, _ = video
    plain, smoothed = Sink(), Sink()
    runner.predict_files([str(path)], output=plain)
    runner.predict_files([str(path)], output=smoothed, smooth="3f")
    # batch_size 3: the 10 frames leave in several writes, none larger than a batch's frames.
    assert len(plain.calls) >= 4 and max(len(c) for c in plain.calls) <= 3
    assert [len(c) for c in smoothed.calls] == [N_FRAMES]  # held until the video ended, then smoothed
    raw = np.array([r["valence"] for r in plain.records])
    centred = [(raw[0] + raw[1]) / 2] + [raw[i - 1:i + 2].mean() for i in range(1, 9)] + [(raw[8] + raw[9]) / 2]
    np.testing.assert_allclose([r["valence"] for r in smoothed.records], centred, atol=1e-6)


def test_an_output_path_is_written_whole_and_failures_go_to_on_error(runner, video, photo, tmp_path):
    path, _ = video
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    messages = []
    out = tmp_path / "out.json"
    report = runner.predict_files([str(path), str(tmp_path / "missing.png"), str(broken), str(image)], output=out,
                                  stride=5, on_error=messages.append)
    rows = json.loads(out.read_text())
    # The video at frames 0 and 5, then the photo (stride does not apply to images); the bad inputs named.
    assert [(r["source"], r["frame"]) for r in rows] == [(str(path), 0), (str(path), 5), (str(image), 0)]
    assert (report.inputs, report.missing, report.unreadable, report.failed, report.frames, report.rows) == (
        3, 1, 1, 1, 3, 3)
    assert len(messages) == 2 and messages[0].startswith(f"{tmp_path / 'missing.png'}: no such file")
    assert messages[1].startswith(str(broken)) and report.messages == messages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg", "out.json", "photo.png"]  # no temporary
    with pytest.raises(ValueError, match="missing.png: no such file"):  # without on_error: DataError
        runner.predict_files([str(tmp_path / "missing.png")], output=tmp_path / "never.csv")
    assert not (tmp_path / "never.csv").exists()


def test_predict_cli_stride_and_max_frames(preset, video, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(task, "load_pretrained", lambda *args, **kwargs: preset)
    path, _ = video
    out = tmp_path / "rows.csv"
    assert main(["predict", str(path), "--no-detect", "--stride", "3", "--max-frames", "3", "--output", str(out),
                 "--quiet"]) == 0
    with open(out, newline="") as f:
        assert [r["frame"] for r in csv.DictReader(f)] == ["0", "3", "6"]
    assert "3 frames from 1 of 1 inputs: 3 faces, 0 frames without a face" in capsys.readouterr().out
    for flag in ("--stride", "--max-frames"):
        assert main(["predict", str(path), "--no-detect", flag, "0", "--output", str(out)]) == 2
        assert capsys.readouterr().err.strip() == f"keras-mtanet: error: {flag} must be at least 1"


def test_the_runtime_replaces_only_the_forward_pass(preset, video, tmp_path, capsys, monkeypatch):
    """``--runtime tflite`` runs the exported model in the same pipeline: the same rows as Keras to 1e-4."""
    monkeypatch.setattr(task, "load_pretrained", lambda *args, **kwargs: preset)
    path, _ = video
    rows = {}
    for runtime in ("keras", "tflite"):
        out = tmp_path / f"{runtime}.json"
        assert main(["predict", str(path), "--no-detect", "--stride", "2", "--runtime", runtime, "--output",
                     str(out), "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
        rows[runtime] = json.loads(out.read_text())
    assert [r["frame"] for r in rows["tflite"]] == [0, 2, 4, 6, 8]
    columns = ["valence", "arousal", *records.AU_PROB_COLUMNS, *records.EXPR_PROB_COLUMNS]
    np.testing.assert_allclose([[r[c] for c in columns] for r in rows["tflite"]],
                               [[r[c] for c in columns] for r in rows["keras"]], atol=1e-4)
    assert Predictor(preset, detector=None, runtime="tflite", cache_dir=tmp_path / "cache").runtime.name == "tflite"


def test_csv_timestamps_keep_microseconds_an_hour_in(tmp_path):
    import csv
    from types import SimpleNamespace

    from keras_mtanet.inference.records import RecordWriter, empty_record

    fps, first = 240.0, 3600 * 240  # consecutive frames an hour into a 240 fps video
    times = [(first + i) / fps for i in range(3)]
    with RecordWriter(tmp_path / "out.csv") as writer:
        writer.write([empty_record(SimpleNamespace(source="v.mp4", index=first + i, timestamp=t))
                      for i, t in enumerate(times)] +
                     [empty_record(SimpleNamespace(source="v.mp4", index=0, timestamp=0.0))])
    with open(tmp_path / "out.csv", newline="") as f:
        written = [row["timestamp"] for row in csv.DictReader(f)]
    assert written == ["3600", "3600.004167", "3600.008333", "0"]  # to the microsecond, as round(t, 6)
    assert [float(v) for v in written[:3]] == [round(t, 6) for t in times]


@pytest.mark.parametrize("option", ["batch_size", "detect_every"])
@pytest.mark.parametrize("value", [0, -3, 1.5])
def test_predictor_refuses_what_the_cli_refuses(preset, option, value):
    from keras_mtanet.errors import UsageError

    with pytest.raises(UsageError, match=f"^{option} must be a whole number at least 1, got {value}$"):
        Predictor(preset, detector=None, **{option: value})


def test_predict_video_refuses_max_frames_zero_and_stride_zero(runner, video):
    from keras_mtanet.errors import UsageError

    with pytest.raises(UsageError, match="^max_frames must be a whole number at least 1, got 0$"):
        runner.predict_video(video[0], max_frames=0)  # once "no frame could be decoded"
    with pytest.raises(UsageError, match="^stride must be a whole number at least 1, got 0$"):
        runner.predict_files([str(video[0])], stride=0)


def test_bytes_paths_are_read_like_text_paths(runner, video, photo, tmp_path):
    import os

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert len(runner.predict_image(os.fsencode(image))) == 1
    assert len(runner.predict_video(os.fsencode(video[0]), max_frames=2)) == 2
    assert len(runner.predict_files([os.fsencode(image)])) == 1


def test_nan_pixels_are_refused_not_made_zero(runner, photo):
    from keras_mtanet.errors import DataError

    pixels = photo.astype(np.float32)
    pixels[:2, :3] = np.nan
    with pytest.raises(DataError, match="^face: 18 pixel value\\(s\\) are NaN or infinite; expected 0-255$"):
        runner.predict_image(pixels, name="face")
    assert len(runner.predict_image(photo.astype(np.float32), name="face")) == 1


def test_an_output_linked_to_a_device_is_reported_written(tmp_path):
    import os
    from types import SimpleNamespace

    from keras_mtanet.inference.records import RecordWriter, empty_record

    os.symlink(os.devnull, tmp_path / "out.csv")
    writer = RecordWriter(tmp_path / "out.csv")
    writer.write([empty_record(SimpleNamespace(source="a.jpg", index=0, timestamp=None))])
    assert writer.close() is True  # the rows went to the device: no "no predictions"
    assert os.readlink(tmp_path / "out.csv") == os.devnull and sorted(os.listdir(tmp_path)) == ["out.csv"]
