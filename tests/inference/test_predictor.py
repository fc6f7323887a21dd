"""Detection, alignment, tracking, Predictor and ``keras-mtanet predict`` on real and generated images."""

import csv
import json
import math
import sys
import time

import cv2
import numpy as np
import pytest
import scenes
from conftest import ASTRONAUT_BOX

from keras_mtanet import Predictor
from keras_mtanet.cli import main
from keras_mtanet.errors import DataError
from keras_mtanet.inference import alignment, detection, records, tracking
from keras_mtanet.inference.predictor import smooth_records
from keras_mtanet.inference.sources import Source
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

# Hand-read from scikit-image's astronaut() (512 x 512): her face spans about x 180-265, y 60-170, eyes at
# y ~100, mouth at y ~140.
ASTRONAUT_FACE_CENTRE = (223.0, 117.0)
FPS = 25.0



@pytest.fixture(autouse=True)
def synthetic_default(monkeypatch):
    """These tests feed synthetic faces: the CLI's default preset is the synthetic one here."""
    from keras_mtanet.presets import registry

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)


@pytest.fixture(scope="module")
def predictor(preset):
    return Predictor(preset, batch_size=8)


@pytest.fixture(scope="module")
def two_face_video(photo, tmp_path_factory):
    """10 frames of 320 x 240: two faces moving in opposite directions, none in frames 3 and 4."""
    patch, box = scenes.face_patch(photo, ASTRONAUT_BOX, margin=0.35)
    patch = cv2.resize(patch, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    box = box * 0.6
    flipped, flipped_box = scenes.mirrored(patch, box)
    frames, boxes = scenes.compose(10, [(patch, box, (10, 40), (4, 1)), (flipped, flipped_box, (210, 90), (-3, -2))],
                                   size=(240, 320), faceless=(3, 4))
    path = tmp_path_factory.mktemp("video") / "two.avi"
    scenes.write_video(path, frames, FPS)
    return path, frames, boxes


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_record_ranges(record):
    assert -1.0 <= record["valence"] <= 1.0 and -1.0 <= record["arousal"] <= 1.0
    au = np.array([record[f"{a}_prob"] for a in AU_NAMES])
    expr = np.array([record[f"{e}_prob"] for e in EXPR_NAMES])
    assert np.all((au >= 0) & (au <= 1))
    assert [record[a] for a in AU_NAMES] == [int(p > 0.5) for p in au]
    assert abs(expr.sum() - 1.0) < 1e-4
    assert record["expression"] == EXPR_NAMES[int(expr.argmax())]


# ------------------------------------------------------------------------------------- geometry pieces
def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.array([[10.0, 20.0], [50.0, 22.0], [30.0, 40.0], [15.0, 60.0], [45.0, 61.0]])
    dst = src @ (scale * rotation).T + shift
    matrix = alignment.similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_align_face_moves_the_landmarks_onto_the_template():
    # Landmarks: the template (in a 112 px crop) rotated by 0.4 rad, scaled by 1.6 and shifted.
    angle, scale = 0.4, 1.6
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = alignment.TEMPLATE * 112 @ (scale * rotation).T + np.array([140.0, 60.0])
    image = np.zeros((300, 400, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    crop = alignment.align_face(image, landmarks, 112)
    bright = crop.mean(axis=2) > 127
    for x, y in alignment.TEMPLATE * 112:
        ys, xs = np.nonzero(bright[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7])
        assert len(xs) > 5
        # The dot's centre in the crop is the template point (dots were drawn at rounded positions).
        assert abs(xs.mean() + int(x) - 6 - x) < 1.0 and abs(ys.mean() + int(y) - 6 - y) < 1.0


def test_iou_by_hand():
    assert tracking.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert tracking.iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert tracking.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


def test_tracker_keeps_ids_as_faces_move_and_retires_lost_ones():
    def face(x, y):
        return detection.Face(np.array([x, y, 40.0, 40.0]), 1.0, None)

    tracker = tracking.IoUTracker(min_iou=0.3, max_missed=2)
    assert tracker.update([face(0, 0), face(100, 0)]) == [0, 1]
    assert tracker.update([face(104, 2), face(5, 1)]) == [1, 0]  # listed in the other order
    assert tracker.update([face(10, 2), face(108, 4), face(200, 200)]) == [0, 1, 2]
    for _ in range(3):
        tracker.update([face(10, 2)])
    assert tracker.update([face(10, 2), face(108, 4)]) == [0, 3]  # face 1 was gone for 3 frames > 2


# ---------------------------------------------------------------------------------- a real photograph
def test_mtcnn_finds_the_astronaut_and_predicts_values_in_range(predictor, preset, photo):
    table = predictor.predict_image(photo, name="astronaut")
    assert len(table) == 1
    record = table.iloc[0].to_dict()
    cx, cy = record["x"] + record["w"] / 2, record["y"] + record["h"] / 2
    assert abs(cx - ASTRONAUT_FACE_CENTRE[0]) < 15 and abs(cy - ASTRONAUT_FACE_CENTRE[1]) < 15
    assert 60 < record["w"] < 110 and 0.9 < record["score"] <= 1.0
    assert record["face_detected"] == 1 and record["face_id"] == 0 and record["source"] == "astronaut"
    check_record_ranges(record)
    # The pipeline's numbers are the model's on the aligned crop.
    face = predictor.detector.detect([photo])[0][0]  # the default detector (detection.DEFAULT_DETECTOR)
    crop = alignment.align_face(photo, face.landmarks, predictor.size)
    direct = preset.predict_on_batch(crop[None].astype("float32"))  # not batch-norm-folded
    assert record["valence"] == pytest.approx(float(direct["va"][0, 0]), abs=1e-4)
    np.testing.assert_allclose([record[f"{a}_prob"] for a in AU_NAMES], direct["au"][0], atol=1e-4)


def test_haar_fallback_finds_the_same_face(preset, photo):
    haar = Predictor(preset, detector="haar")
    records = haar.predict_image(photo).to_dict("records")
    assert len(records) == 1
    box = (records[0]["x"], records[0]["y"], records[0]["w"], records[0]["h"])
    assert tracking.iou(box, ASTRONAUT_BOX) > 0.5
    assert math.isnan(records[0]["score"])
    check_record_ranges(records[0])


def test_records_are_plain_dicts_without_pandas(predictor, photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    rows = predictor.predict_image(photo)
    assert isinstance(rows, list) and list(rows[0]) == list(records.COLUMNS)


def test_unreadable_image_raises_a_data_error_naming_it(predictor, tmp_path):

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match="broken.jpg: truncated JPEG"):
        predictor.predict_image(bad)


# -------------------------------------------------------------------------------------- generated video
def test_predict_cli_on_a_video_with_two_faces_and_faceless_frames(two_face_video, tmp_path, capsys):
    path, frames, boxes = two_face_video
    out = tmp_path / "out.csv"
    code = main(["predict", str(path), "--output", str(out), "--plot", str(tmp_path / "plot.png"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = read_csv(out)
    assert list(rows[0]) == list(records.COLUMNS)
    assert len(rows) == 8 * 2 + 2
    by_frame = {}
    for row in rows:
        by_frame.setdefault(int(row["frame"]), []).append(row)
    assert sorted(by_frame) == list(range(10))
    ids_at_left = set()
    for i, found in by_frame.items():
        assert float(found[0]["timestamp"]) == pytest.approx(i / FPS)
        if i in (3, 4):
            assert len(found) == 1 and found[0]["face_detected"] == "0"
            assert found[0]["valence"] == "" and found[0]["face_id"] == "" and found[0]["expression"] == ""
            continue
        assert len(found) == 2
        for row in found:
            box = [float(row[k]) for k in "xywh"]
            assert max(tracking.iou(box, truth) for truth in boxes[i]) > 0.5
        left = min(found, key=lambda r: float(r["x"]))
        ids_at_left.add(left["face_id"])
    # The face that starts on the left keeps its id, across the faceless gap too.
    assert len(ids_at_left) == 1
    image = cv2.imread(str(tmp_path / "plot.png"))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 800
    assert "10 frames from 1 of 1 inputs: 16 faces, 2 frames without a face" in capsys.readouterr().out
    assert main(["predict", str(path), "--output", str(tmp_path / "out.json"), "--quiet"]) == 0
    as_json = json.loads((tmp_path / "out.json").read_text())
    assert len(as_json) == len(rows)
    for row, obj in zip(rows, as_json):
        assert list(obj) == list(records.COLUMNS)
        if row["valence"]:
            assert obj["valence"] == pytest.approx(float(row["valence"]), rel=1e-5)
        else:
            assert obj["valence"] is None and obj["face_detected"] == 0


def test_detection_every_n_frames_tracks_in_between(preset, two_face_video):
    path, frames, boxes = two_face_video
    tracked = Predictor(preset, detect_every=3)
    records = tracked.predict_video(path).to_dict("records")
    assert tracked.counts["detector_calls"] == 4  # frames 0, 3, 6, 9
    for record in records:
        if record["face_detected"]:
            box = (record["x"], record["y"], record["w"], record["h"])
            assert max(tracking.iou(box, truth) for truth in boxes[record["frame"]]) > 0.5
    # Frame 3 is a detection frame with no face, so the tracked frames 4 and 5 have none either: a face that
    # appears between detections is found at the next one (frame 6), where the ids carry on.
    assert [r["face_detected"] for r in records if r["frame"] in (3, 4, 5)] == [0, 0, 0]
    assert {r["face_id"] for r in records if r["face_detected"] and r["frame"] >= 6} == {0, 1}
    assert sum(r["face_detected"] for r in records) == 2 * 7


def test_smoothing_is_a_centred_moving_average_per_face(predictor, two_face_video):
    path, _, _ = two_face_video
    raw = predictor.predict_video(path).to_dict("records")
    smoothed = smooth_records(raw, "3f")
    for face_id in (0, 1):
        mine = [r for r in raw if r["face_detected"] and r["face_id"] == face_id]
        theirs = [r for r in smoothed if r["face_detected"] and r["face_id"] == face_id]
        values = np.array([r["valence"] for r in mine])
        for k, record in enumerate(theirs):
            window = values[max(0, k - 1):k + 2]
            assert record["valence"] == pytest.approx(window.mean(), abs=1e-9)
            assert record["AU1"] == int(record["AU1_prob"] > 0.5)
    # A window in seconds uses the video's frame rate: 0.12 s at 25 fps is 3 frames.
    again = predictor.predict_video(path, smooth="0.12").to_dict("records")
    np.testing.assert_allclose([r["valence"] for r in again if r["face_detected"]],
                               [r["valence"] for r in smoothed if r["face_detected"]], atol=1e-6)


def test_corrupt_video_frame_is_skipped_and_counted(tmp_path):
    from keras_mtanet.inference.sources import Source

    frames, _ = scenes.compose(10, [], size=(60, 80))
    path = tmp_path / "clip.avi"
    scenes.write_video(path, frames, FPS)
    raw = bytearray(path.read_bytes())
    starts = [i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xD8]
    assert len(starts) == 10  # one Motion-JPEG image per frame
    raw[starts[4]:starts[4] + 200] = bytes(200)
    path.write_bytes(bytes(raw))
    source = Source(str(path), "video", str(path))
    assert [f.index for f in source.frames()] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert source.corrupt_frames == 1


# ------------------------------------------------------------------------------ folders and bad inputs
def test_mixed_folder_processes_good_files_and_names_bad_ones(photo, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_good.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "b_good.png"), cv2.cvtColor(photo[:, ::-1], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "c_no_face.png"), scenes.background(200, 300))
    good = (folder / "a_good.jpg").read_bytes()
    (folder / "d_truncated.jpg").write_bytes(good[:len(good) // 2])
    (folder / "e_empty.png").write_bytes(b"")
    (folder / "f_text.jpg").write_text("not an image")
    (folder / "g_fake.mp4").write_text("not a video")
    (folder / "notes.txt").write_text("ignored: not an image or video suffix")
    out = tmp_path / "out.csv"
    code = main(["predict", str(folder), str(tmp_path / "missing.jpg"), "--output", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("keras-mtanet: error:")]
    assert errors == [f"keras-mtanet: error: {tmp_path / 'missing.jpg'}: no such file or folder",
                      f"keras-mtanet: error: {folder / 'd_truncated.jpg'}: truncated JPEG (no end marker)",
                      f"keras-mtanet: error: {folder / 'e_empty.png'}: empty file",
                      f"keras-mtanet: error: {folder / 'f_text.jpg'}: not a JPEG or PNG image",
                      f"keras-mtanet: error: {folder / 'g_fake.mp4'}: cannot open as a video (unsupported, "
                      "corrupt or missing)"]
    assert "keras-mtanet: 5 input(s) failed" in captured.err
    assert "Traceback" not in captured.err
    rows = read_csv(out)
    assert [(r["source"].rsplit("/", 1)[-1], r["face_detected"]) for r in rows] == [
        ("a_good.jpg", "1"), ("b_good.png", "1"), ("c_no_face.png", "0")]
    assert "3 frames from 3 of 8 inputs: 2 faces, 1 frames without a face" in captured.out


def test_no_detect_on_aligned_crops_equals_the_model_on_the_images(preset, tmp_path, capsys):
    from keras_mtanet.data import synthetic

    crops, _ = synthetic.render_video(np.random.SeedSequence([5, 7]), 6, 64)
    crops = crops.astype(np.uint8)
    folder = tmp_path / "cropped_aligned" / "video1"
    folder.mkdir(parents=True)
    for i, crop in enumerate(crops):
        cv2.imwrite(str(folder / f"{i + 1:05d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    out = tmp_path / "crops.json"
    assert main(["predict", str(folder / "*.png"), "--no-detect", "--output", str(out), "--quiet"]) == 0
    records = json.loads(out.read_text())
    expected = preset.predict_on_batch(crops.astype("float32"))
    assert [r["source"].rsplit("/", 1)[-1] for r in records] == [f"{i + 1:05d}.png" for i in range(6)]
    np.testing.assert_allclose([[r["valence"], r["arousal"]] for r in records], expected["va"], atol=1e-4)
    np.testing.assert_allclose([[r[f"{e}_prob"] for e in EXPR_NAMES] for r in records], expected["expr"],
                               atol=1e-4)
    assert all(r["w"] == 64 and r["h"] == 64 and r["face_detected"] == 1 for r in records)
    # bfloat16 computes the same predictions to bfloat16's precision.
    out16 = tmp_path / "crops16.json"
    assert main(["predict", str(folder / "*.png"), "--no-detect", "--precision", "bfloat16", "--output",
                 str(out16), "--quiet"]) == 0
    half = json.loads(out16.read_text())
    np.testing.assert_allclose([[r["valence"], r["arousal"]] for r in half], expected["va"], atol=0.05)
    np.testing.assert_allclose([[r[f"{e}_prob"] for e in EXPR_NAMES] for r in half], expected["expr"], atol=0.05)


@pytest.mark.parametrize("args, message", [
    (["x.jpg", "--output", "out.txt"], "out.txt: the output must be a .csv or .json file"),
    (["x.jpg", "--output", "out.csv", "--smooth", "soon"], "--smooth 'soon': give seconds (0.5) or frames (15f)"),
    (["x.jpg", "--output", "out.csv", "--every", "0"], "--every must be at least 1"),
    (["nothing-here/*.jpg", "--output", "out.csv"], "nothing-here/*.jpg: no file matches"),
])
def test_predict_usage_errors_exit_2_with_one_line(args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"")
    assert main(["predict", *args]) == 2
    assert capsys.readouterr().err.strip() == f"keras-mtanet: error: {message}"


def test_missing_webcam_is_a_failed_input(tmp_path, capsys):
    code = main(["predict", "97", "--output", str(tmp_path / "cam.csv"), "--quiet"])
    assert code == 1
    assert "keras-mtanet: error: webcam:97: cannot open as a webcam" in capsys.readouterr().err


@pytest.mark.safety
def test_detectors_find_nothing_in_images_smaller_than_a_face(photo):
    tiny, thin = np.zeros((1, 1, 3), np.uint8), np.full((1, 400, 3), 200, np.uint8)
    for detector in (detection.MTCNNDetector(), detection.HaarDetector()):
        found = detector.detect([tiny, photo, thin])
        assert found[0] == [] and found[2] == [] and len(found[1]) == 1, detector.name
        assert tracking.iou(found[1][0].box, ASTRONAUT_BOX) > 0.5
    assert detection.MTCNNDetector(min_face_size=5000).detect([photo, tiny]) == [[], []]
    assert detection.HaarDetector(min_face_size=5000).detect([photo]) == [[]]
    # The shrink never goes below one pixel a side.
    assert detection._shrink(thin, 0.05).shape == (1, 20, 3)
    assert detection._shrink(tiny, 0.05).shape == (1, 1, 3)


@pytest.mark.safety
def test_a_detector_or_reader_crash_fails_only_that_input(preset):
    box = np.array([10.0, 10.0, 40.0, 40.0])

    class Flaky:
        def detect(self, images):
            if any(image.shape[0] == 77 for image in images):
                raise RuntimeError("OpenCV(4.x) resize.cpp:4152: error: (-215:Assertion failed)\n !dsize.empty()")
            return [[detection.Face(box, 1.0, detection.landmarks_from_box(box))] for _ in images]

    class Exploding:
        def __array__(self, *args, **kwargs):
            raise MemoryError("cannot allocate")

    good = np.full((60, 60, 3), 120, np.uint8)
    inputs = [Source("first", "array", good), Source("crash", "array", np.zeros((77, 60, 3), np.uint8)),
              Source("oom", "array", Exploding()), Source("last", "array", good)]
    events = [(kind, src.name, payload) for kind, src, payload in
              Predictor(preset, detector=Flaky()).stream(inputs)]
    assert [(kind, name) for kind, name, _ in events] == [
        ("records", "first"), ("done", "first"), ("error", "crash"), ("done", "crash"), ("error", "oom"),
        ("done", "oom"), ("records", "last"), ("done", "last")]
    assert events[2][2] == ("crash: face detection or alignment failed (RuntimeError: OpenCV(4.x) resize.cpp:4152: "
                            "error: (-215:Assertion failed) !dsize.empty())")
    assert events[4][2] == "oom: could not be read (MemoryError: cannot allocate)"
    for kind, _, payload in events:
        if kind == "records":
            assert len(payload) == 1 and [payload[0][k] for k in "xywh"] == list(box)


@pytest.mark.safety
def test_decoded_frames_waiting_for_the_detector_are_bounded_in_bytes(preset, monkeypatch):
    from keras_mtanet.inference import stages

    frame_bytes = 200 * 200 * 3
    monkeypatch.setattr(stages, "MAX_QUEUED_BYTES", int(2.5 * frame_bytes), raising=False)
    state = {"decoded": 0, "detected": 0, "lead": 0}
    frames = Source.frames

    def counted(self, *args, **kwargs):
        for frame in frames(self, *args, **kwargs):
            state["decoded"] += 1
            state["lead"] = max(state["lead"], state["decoded"] - state["detected"])
            yield frame

    class SlowDetector:
        def detect(self, images):
            time.sleep(0.01)
            state["detected"] += len(images)
            return [[] for _ in images]

    monkeypatch.setattr(Source, "frames", counted)
    runner = Predictor(preset, detector=SlowDetector())
    images = [Source(f"image{i}", "array", np.full((200, 200, 3), i, np.uint8)) for i in range(40)]
    rows = runner.predict_files(images, output=None)
    assert len(rows) == 40 and state["detected"] == 40
    # Before: up to 4 x batch_size (128) frames queued, whatever their size; now 2 queued, 1 waiting to be, 1 taken.
    assert state["lead"] <= 5, state


def test_the_predictor_holds_its_stages_and_its_detector_can_be_swapped(preset):
    from keras_mtanet.inference.stages import Stages

    runner = Predictor(preset, detector=None, batch_size=4)
    assert isinstance(runner.stages, Stages) and not isinstance(runner, Stages)
    assert runner.detector is None and runner.size == preset.input_shape[1] and runner.stages.batch_size == 4
    swapped = detection.make_detector("haar")
    runner.detector = swapped  # another detector on the same model and runtime (benchmarks/video_fps.py)
    assert runner.stages.detector is swapped and runner.detector is swapped
