"""``keras-mtanet predict`` / ``demo`` / ``evaluate`` on hostile input: tiny and huge images, odd file names,
unwritable outputs, interruptions, truncated videos. One bad input never stops the others, user errors are
one line, outputs are replaced only by complete files, and memory stays bounded."""

import csv
import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import scenes
from conftest import ASTRONAUT_BOX
from skimage import data as skdata

import keras_mtanet
from keras_mtanet import Predictor, evaluate
from keras_mtanet.cli import main
from keras_mtanet.errors import DataError
from keras_mtanet.inference import detection, predictor, progress, records, smoothing, sources, tracking
from keras_mtanet.inference.sources import Source
from keras_mtanet.labels import EXPR_NAMES
from keras_mtanet.presets import hub

# Peak resident memory allowed to `keras-mtanet predict` on a 20000 x 20000 JPEG (400 megapixels). Measured on
# 2 CPU cores: about 0.95 GB for a 512 x 512 photo (TensorFlow and the model), 1.8 GB for the 20000 x 20000
# JPEG (decoded at 1/4 size); before the pixel limit it went past 10 GB.
MAX_RSS_BYTES = 3 * 2 ** 30


@pytest.fixture
def cli(preset, monkeypatch):
    """``main`` with the embedded preset loaded once for the module."""
    monkeypatch.setattr(hub, "load_pretrained", lambda *args, **kwargs: preset)
    return main


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command gets as far as loading a model (its checks must come first)."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(hub, "load_pretrained", boom)
    monkeypatch.setattr(keras_mtanet, "load_pretrained", boom)
    monkeypatch.setattr(predictor, "Predictor", boom)


def write_image(path, rgb):
    ok, data = cv2.imencode(os.path.splitext(os.fsencode(path))[1].decode(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    with open(path, "wb") as f:
        f.write(data.tobytes())


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:  # strict UTF-8
        return list(csv.DictReader(f))


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("keras-mtanet: error:")]


def leftovers(folder):
    """Temporary files the writers left behind."""
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def uniform_jpeg(width, height):
    """A valid baseline grey JPEG of any size, built without its pixels in memory: every 8 x 8 block has a DC
    difference of 0 and no AC coefficient, coded with one-code Huffman tables ('0'), so each block is two 0
    bits and every pixel decodes to 128."""
    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    bits = 2 * -(-width // 8) * -(-height // 8)
    scan = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")  # pad with 1 bits
    return (b"\xff\xd8" + segment(0xDB, b"\x00" + bytes([1] * 64))
            + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
            + segment(0xC4, b"\x00" + one_code) + segment(0xC4, b"\x10" + one_code)
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + scan + b"\xff\xd9")


def run_cli_process(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "keras_mtanet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kwargs)


# ------------------------------------------------------------------------------------ 1. tiny images
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


def test_tiny_images_between_good_ones_get_faceless_rows(cli, photo, tmp_path, capsys):
    names = ["a_good.png", "b_1x1.png", "c_1x400.png", "d_good.jpg"]
    write_image(tmp_path / names[0], photo)
    write_image(tmp_path / names[1], np.zeros((1, 1, 3), np.uint8))
    write_image(tmp_path / names[2], np.full((1, 400, 3), 90, np.uint8))
    write_image(tmp_path / names[3], photo[:, ::-1])
    out, plot = tmp_path / "out.csv", tmp_path / "plot.svg"
    plot.write_text("an earlier plot")
    code = cli(["predict", *(str(tmp_path / n) for n in names), "--output", str(out), "--plot", str(plot),
                "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert error_lines(captured.err) == []
    assert "<svg" in plot.read_text() and leftovers(tmp_path) == []  # replaced whole
    rows = read_csv(out)
    assert [(os.path.basename(r["source"]), r["face_detected"]) for r in rows] == [
        ("a_good.png", "1"), ("b_1x1.png", "0"), ("c_1x400.png", "0"), ("d_good.jpg", "1")]
    assert tracking.iou([float(rows[0][k]) for k in "xywh"], ASTRONAUT_BOX) > 0.5
    # A minimum face larger than the image: no face, a flagged row, not an error.
    assert cli(["predict", str(tmp_path / names[0]), "--min-face", "5000", "--output", str(out), "--quiet"]) == 0
    assert [r["face_detected"] for r in read_csv(out)] == ["0"]


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


# -------------------------------------------------------------------------- 2. non-UTF-8 file names
def test_file_names_that_are_not_utf8_are_written_escaped(cli, photo, tmp_path, capsys):
    weird = os.path.join(str(tmp_path), os.fsdecode(b"\xff\xfe.png"))
    bad = os.path.join(str(tmp_path), os.fsdecode(b"c_\xfe bad.jpg"))
    write_image(tmp_path / "a.png", photo)
    write_image(weird, photo[:, ::-1])
    with open(bad, "w") as f:
        f.write("not an image")
    write_image(tmp_path / "d.png", photo)
    inputs = [str(tmp_path / "a.png"), weird, bad, str(tmp_path / "d.png")]
    shown_weird, shown_bad = f"{tmp_path}/\\xff\\xfe.png", f"{tmp_path}/c_\\xfe bad.jpg"
    for suffix in ("csv", "json"):
        out = tmp_path / f"out.{suffix}"
        code = cli(["predict", *inputs, "--output", str(out), "--quiet"])
        captured = capsys.readouterr()
        assert code == 1
        assert error_lines(captured.err) == [f"keras-mtanet: error: {shown_bad}: not a JPEG or PNG image"]
        rows = read_csv(out) if suffix == "csv" else json.loads(out.read_bytes().decode("utf-8"))
        assert [(r["source"], int(r["face_detected"])) for r in rows] == [
            (str(tmp_path / "a.png"), 1), (shown_weird, 1), (str(tmp_path / "d.png"), 1)]


# ------------------------------------------------------------------------------ 3. the pixel limit
def test_a_20000_pixel_square_jpeg_runs_in_bounded_memory(tmp_path):
    small = tmp_path / "small.jpg"
    small.write_bytes(uniform_jpeg(37, 21))
    decoded = cv2.imread(str(small))
    assert decoded.shape == (21, 37, 3) and np.all(decoded == 128)  # the generator makes real JPEGs
    big = tmp_path / "big.jpg"
    big.write_bytes(uniform_jpeg(20000, 20000))
    assert big.stat().st_size < 2_000_000
    assert sources.image_header(big) == ("JPEG", 20000, 20000)
    out = tmp_path / "big.csv"
    # Linux counts a process's peak RSS from the memory of the process it was spawned from (exec records the old
    # address space's high-water mark), and this pytest process may hold gigabytes by now: a small Python in
    # between starts the command and reports the peak of its child alone.
    wrapper = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")
    process = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "keras_mtanet", "predict",
                              str(big), "--output", str(out), "--quiet"], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    stdout, stderr = process.stdout, process.stderr
    assert process.returncode == 0, stderr[-2000:]
    peak_kb = int(stderr.strip().splitlines()[-1])
    assert peak_kb * 1024 < MAX_RSS_BYTES, f"peak RSS {peak_kb / 2 ** 20:.2f} GB"
    assert "1 frames from 1 of 1 inputs: 0 faces, 1 frames without a face" in stdout
    rows = read_csv(out)
    assert [(r["source"], r["face_detected"]) for r in rows] == [(str(big), "0")]


def test_large_jpeg_is_decoded_reduced_with_boxes_in_original_pixels(preset, photo, tmp_path, monkeypatch):
    path, png = tmp_path / "astronaut.jpg", tmp_path / "astronaut.png"
    write_image(path, photo)
    write_image(png, photo)
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 70_000)  # 512 x 512 is 262,144 pixels; 1/2 size fits
    frame = next(Source(str(path), "image", str(path)).frames())
    assert frame.image.shape == (256, 256, 3) and frame.scale == 2.0
    records = Predictor(preset, min_face_size=20).predict_image(path).to_dict("records")
    assert len(records) == 1
    assert tracking.iou([records[0][k] for k in "xywh"], ASTRONAUT_BOX) > 0.5
    with pytest.raises(DataError) as error:
        sources.read_image(png)
    assert str(error.value) == (f"{png}: 512 x 512 pixels is over the 0.07-megapixel limit (only JPEGs are decoded "
                                "reduced)")
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 4000)  # 1/8 size is 64 x 64 = 4096 pixels
    with pytest.raises(DataError, match=r"astronaut.jpg: 512 x 512 pixels is over the 0.004-megapixel limit "
                                        r"even at 1/8 size$"):
        sources.read_image(path)


# ------------------------------------------------------------------------------------- 4. smoothing
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


def test_smooth_records_with_a_huge_window_averages_each_face():
    def record(frame, valence, au1, expr):
        frame = sources.Frame("clip.mp4", frame, frame / 25, None)
        probs = np.zeros(len(EXPR_NAMES))
        probs[expr] = 1.0
        return records.face_record(frame, 0, (0, 0, 10, 10), 1.0, (valence, 0.0), [au1] + [0.0] * 7, probs)

    # Valence 0.2, -0.4, 0.8 (mean 0.2); AU1 0.9, 0.3, 0.3 (mean 0.5); expressions 1, 2, 2 (2 wins with 2/3).
    records = [record(0, 0.2, 0.9, 1), record(1, -0.4, 0.3, 2), record(2, 0.8, 0.3, 2)]
    smoothed = predictor.smooth_records(records, "1e9", 25.0)
    assert len(smoothed) == 3
    for r in smoothed:
        assert r["valence"] == pytest.approx(0.2) and r["AU1_prob"] == pytest.approx(0.5)
        assert r["AU1"] == 0  # 0.5 is not above the 0.5 threshold
        assert r[f"{EXPR_NAMES[2]}_prob"] == pytest.approx(2 / 3) and r["expression"] == EXPR_NAMES[2]


def test_predict_with_a_huge_smoothing_window_writes_every_row(cli, tmp_path, capsys):
    from keras_mtanet.data import synthetic

    crops, _ = synthetic.render_video(np.random.SeedSequence([5, 7]), 5, 64)
    video = tmp_path / "crops.avi"
    scenes.write_video(video, crops.astype(np.uint8), 25.0)
    raw, smooth = tmp_path / "raw.json", tmp_path / "smooth.json"
    assert cli(["predict", str(video), "--no-detect", "--output", str(raw), "--quiet"]) == 0
    assert cli(["predict", str(video), "--no-detect", "--smooth", "1e9", "--output", str(smooth), "--quiet"]) == 0
    raw_rows, smooth_rows = json.loads(raw.read_text()), json.loads(smooth.read_text())
    assert [r["frame"] for r in smooth_rows] == [0, 1, 2, 3, 4]
    mean = np.mean([r["valence"] for r in raw_rows])
    assert [r["valence"] for r in smooth_rows] == pytest.approx([mean] * 5, abs=1e-6)


# ------------------------------------------------------------------------------------------ 5. demo
@pytest.mark.parametrize("frames", ["0", "-5", "100000000"])
def test_demo_refuses_absurd_frame_counts_before_loading(frames, no_model, capsys):
    assert main(["demo", "--synthetic", "--frames", frames]) == 2
    assert capsys.readouterr().err.strip() == f"keras-mtanet: error: --frames {frames}: give 1 to 100000 frames"


def test_demo_output_into_a_missing_folder_fails_before_loading(no_model, tmp_path, capsys):
    target = tmp_path / "missing" / "demo.csv"
    assert main(["demo", "--synthetic", "--frames", "5", "--output", str(target)]) == 2
    assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {target}: folder {tmp_path / 'missing'} "
                                               "does not exist")
    assert main(["demo", "--output", str(target)]) == 2
    assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {target}: folder {tmp_path / 'missing'} "
                                               "does not exist")


def test_demo_writes_through_the_record_writer_and_replaces_only_when_complete(tmp_path):
    from keras_mtanet.inference import demo

    path = tmp_path / "demo.csv"
    path.write_text("earlier run\n")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    out = {"va": rng.uniform(-1, 1, (3, 2)), "au": rng.uniform(0, 1, (3, 8)), "expr": rng.dirichlet(np.ones(7), 3)}
    broken = {**out, "au": out["au"][:2]}  # fails on the third row
    with pytest.raises(IndexError), records.RecordWriter(path) as writer:
        writer.write(demo.frame_records("synthetic", video, broken))
    assert path.read_text() == "earlier run\n" and leftovers(tmp_path) == []
    with records.RecordWriter(path) as writer:
        writer.write(demo.frame_records("synthetic", video, out))
    rows = read_csv(path)
    assert list(rows[0]) == list(records.COLUMNS) and leftovers(tmp_path) == []  # predict's columns
    assert [int(r["frame"]) for r in rows] == [0, 1, 2] and {r["face_detected"] for r in rows} == {"1"}
    assert [(r["x"], r["y"], r["w"], r["h"]) for r in rows] == [("0", "0", "16", "16")] * 3  # the whole frame
    assert float(rows[2]["AU1_prob"]) == pytest.approx(out["au"][2, 0], abs=1e-5)
    assert rows[1]["expression"] == EXPR_NAMES[int(out["expr"][1].argmax())]


# ------------------------------------------------------------------ 6. outputs checked before the model
def usage_cases(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "folder.csv").mkdir()
    x = str(tmp_path / "x.jpg")
    out = str(tmp_path / "out.csv")
    return [
        ([x, "--output", str(tmp_path / "folder.csv")],
         f"{tmp_path / 'folder.csv'}: is a folder; give the output file's name"),
        ([x, "--output", "/sys/out.csv"], "/sys/out.csv: cannot write in folder /sys (Permission denied)"),
        ([x, "--output", out, "--plot", str(tmp_path / "no" / "plot.png")],
         f"{tmp_path / 'no' / 'plot.png'}: folder {tmp_path / 'no'} does not exist"),
        ([x, "--output", out, "--plot", str(tmp_path / "plot.xyz")],
         f"{tmp_path / 'plot.xyz'}: the plot's suffix must be one of "),
        ([x, "--output", out, "--max-frames", "0"], "--max-frames must be at least 1"),
        (["99999999999999999999", "--output", out],
         "99999999999999999999: no such file or folder, and too large for a webcam index (at most 2147483647)"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_predict_usage_errors_come_before_the_model(case, no_model, tmp_path, capsys):
    if case == 1 and not os.path.isdir("/sys"):
        pytest.skip("needs Linux /sys (a folder nobody, root included, can create files in)")
    args, message = usage_cases(tmp_path)[case]
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"keras-mtanet: error: {message}")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_into_a_read_only_folder_fails_before_the_model(no_model, tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["predict", str(tmp_path / "x.jpg"), "--output", str(locked / "out.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {locked / 'out.csv'}: cannot write in folder "
                                               f"{locked} (Permission denied)")


def test_a_full_disk_is_a_one_line_error(cli, photo, tmp_path, capsys):
    image = tmp_path / "a.png"
    write_image(image, photo)
    out = tmp_path / "out.csv"
    out.symlink_to("/dev/full")  # every write fails with ENOSPC
    assert cli(["predict", str(image), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"keras-mtanet: error: {out}: cannot write (No space left on device)"
    assert os.readlink(out) == "/dev/full"


def test_a_failed_write_leaves_the_earlier_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("[earlier]")

    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    writer = records.RecordWriter(path)
    writer._file.file.close()
    writer._file.file = FullDisk()
    frame = sources.Frame("a.png", 0, None, None)
    with pytest.raises(DataError, match=r"out.json: cannot write \(No space left on device\)$"):
        with writer:
            writer.write([records.empty_record(frame)])
    assert path.read_text() == "[earlier]" and leftovers(tmp_path) == []


def test_json_stays_valid_when_an_interrupt_lands_before_the_count(tmp_path):
    path = tmp_path / "out.json"
    frame = sources.Frame("a.png", 0, None, None)
    writer = records.RecordWriter(path)
    writer.write([records.empty_record(frame)])
    writer.count = 0  # as if Ctrl-C came between the write and the count's update
    writer.write([records.empty_record(frame), records.empty_record(frame)])
    assert writer.close()
    assert [r["face_detected"] for r in json.loads(path.read_text())] == [0, 0, 0]


# --------------------------------------------------------------------- 7. replace only when complete
def test_when_every_input_fails_the_earlier_output_is_kept(cli, tmp_path, capsys):
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    out = tmp_path / "out.csv"
    out.write_text("earlier,run\n1,2\n")
    code = cli(["predict", str(tmp_path / "text.jpg"), str(tmp_path / "empty.png"), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert out.read_text() == "earlier,run\n1,2\n" and leftovers(tmp_path) == []
    assert f"keras-mtanet: no predictions; {out} left as it was" in err
    assert "keras-mtanet: 2 input(s) failed" in err


def write_face_video(path, n_frames, size=(120, 160)):
    photo = skdata.astronaut()
    patch, box = scenes.face_patch(photo, ASTRONAUT_BOX, margin=0.2)
    patch = cv2.resize(patch, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frames, _ = scenes.compose(n_frames, [(patch, box * 0.5, (20, 10), (0.05, 0.0))], size=size)
    scenes.write_video(path, frames, 25.0)


def test_ctrl_c_keeps_a_complete_file_with_the_smoothed_video_so_far(cli, tmp_path, capsys, monkeypatch):
    video = tmp_path / "long.avi"
    write_face_video(video, 100, size=(64, 64))

    def interrupt(self, frames, faces):
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.Progress, "update", interrupt)
    out = tmp_path / "out.json"
    out.write_text("[]\n")
    assert cli(["predict", str(video), "--no-detect", "--smooth", "3f", "--batch-size", "8", "--output",
                str(out)]) == 130
    err = capsys.readouterr().err
    rows = json.loads(out.read_text())
    assert 1 <= len(rows) < 100 and [r["frame"] for r in rows] == list(range(len(rows)))
    assert f"keras-mtanet: stopped; the {len(rows)} rows so far are in {out}" in err
    assert err.strip().endswith("keras-mtanet: interrupted") and leftovers(tmp_path) == []


def test_sigterm_leaves_valid_json(tmp_path):
    video = tmp_path / "long.avi"
    write_face_video(video, 400)
    out = tmp_path / "out.json"
    process = run_cli_process(["predict", str(video), "--batch-size", "4", "--output", str(out), "--quiet"])
    deadline = time.monotonic() + 240
    # Wait for the first rows in the temporary file beside the output, then stop the run.
    while time.monotonic() < deadline and process.poll() is None:
        temps = [tmp_path / name for name in leftovers(tmp_path)]
        if any(path.stat().st_size > 1000 for path in temps if path.exists()):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()[-2000:]
    assert stderr.decode().strip().endswith("keras-mtanet: terminated")
    rows = json.loads(out.read_text())
    assert 0 < len(rows) < 400 and [r["frame"] for r in rows] == list(range(len(rows)))
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- 8. smaller
def truncated_avi(path, n_frames=60, keep=29):
    frames, _ = scenes.compose(n_frames, [], size=(48, 64))
    scenes.write_video(path, frames, 25.0)
    raw = path.read_bytes()
    starts = [i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xD8]
    assert len(starts) == n_frames  # one Motion-JPEG image per frame
    path.write_bytes(raw[:starts[keep]])


def test_a_truncated_video_counts_every_missing_frame(cli, preset, tmp_path, capsys):
    path = tmp_path / "cut.avi"
    truncated_avi(path)
    source = Source(str(path), "video", str(path))
    assert [f.index for f in source.frames()] == list(range(29))
    assert source.frame_count == 60 and source.truncated_at == 29 and source.corrupt_frames == 31
    with pytest.warns(UserWarning, match="cut.avi: truncated video: frames 29 to 59 of the 60"):
        assert len(Predictor(preset, detector=None).predict_video(path)) == 29
    out = tmp_path / "cut.csv"
    assert cli(["predict", str(path), "--no-detect", "--output", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert error_lines(captured.err) == [f"keras-mtanet: error: {path}: truncated video: frames 29 to 59 of the 60 "
                                         "in its header could not be read"]
    assert "29 frames from 1 of 1 inputs: 29 faces, 0 frames without a face, 31 corrupt or missing video frames " \
           "skipped" in captured.out
    assert len(read_csv(out)) == 29


@pytest.mark.parametrize("args, message", [
    (["--fps", "0"], "--fps 0: must be a positive number of frames per second"),
    (["--fps", "-2", "--smooth", "0.5"], "--fps -2: must be a positive number of frames per second"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--smooth", "1e400"], "--smooth '1e400': give seconds (0.5) or frames (15f)"),
    (["--predictions", "FILE"], "FILE: is a file; the --predictions must be a folder"),
    (["--predictions", "/sys/predictions"], "/sys/predictions: cannot write in folder /sys (Permission denied)"),
    (["--metrics", "DIR"], "DIR: is a folder; give the --metrics file's name"),
    (["--metrics", "/sys/scores.json"], "/sys/scores.json: cannot write in folder /sys (Permission denied)"),
])
def test_evaluate_usage_errors_come_before_any_work(args, message, no_model, tmp_path, capsys):
    if any(a.startswith("/sys") for a in args) and not os.path.isdir("/sys"):
        pytest.skip("needs Linux /sys")
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    places = {"FILE": str(tmp_path / "file"), "DIR": str(tmp_path / "dir")}
    args = [places.get(a, a) for a in args]
    message = message.replace("FILE", places["FILE"]).replace("DIR", places["DIR"])
    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"keras-mtanet: error: {message}"


def test_crops_that_fail_to_decode_are_counted_and_named(tmp_path):
    from conftest import tiny_model

    from keras_mtanet.data import affwild2, synthetic

    synthetic.write_affwild2(tmp_path, train_videos=0, val_videos=1, frames=8, size=32, seed=3,
                             missing_crop_rate=0.0, two_person_video=False)
    index = affwild2.read_index(tmp_path, "val")
    victim = index.paths[2]
    with open(victim, "r+b") as f:  # keeps the JPEG markers the cheap check looks at; fails to decode
        f.seek(4)
        f.write(b"\0" * 300)
    assert affwild2.read_index(tmp_path, "val").paths == index.paths
    logs = []
    _, done = evaluate.predict_frames(tiny_model(), index, batch_size=4, log=logs.append)
    assert np.flatnonzero(~done).tolist() == [2]
    assert logs == [f"1 crop(s) passed the file check but could not be decoded (left out, filled from the nearest "
                    f"predicted frame): {victim}"]


# ------------------------------------------------------------------- issue 23: one bad input, not all
def test_a_smoothing_window_under_one_frame_fails_only_that_video(cli, tmp_path, capsys):
    from keras_mtanet.data import synthetic

    crops, _ = synthetic.render_video(np.random.SeedSequence([5, 7]), 4, 32)
    good, slow = tmp_path / "a.avi", tmp_path / "b.avi"
    scenes.write_video(good, crops.astype(np.uint8), 25.0)
    scenes.write_video(slow, crops.astype(np.uint8), 1.0)  # 0.5 s is half a frame
    out = tmp_path / "out.csv"
    assert cli(["predict", str(good), str(slow), "--no-detect", "--smooth", "0.5", "--output", str(out),
                "--quiet"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"keras-mtanet: error: {slow}: --smooth '0.5': the window must be at least one "
                                "frame at its 1 fps"]
    assert [(r["source"], r["frame"]) for r in read_csv(out)] == [(str(good), str(i)) for i in range(4)]
    assert leftovers(tmp_path) == []


def test_demo_shows_the_good_photo_beside_an_empty_one(preset, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(keras_mtanet, "load_pretrained", lambda *args, **kwargs: preset)
    empty, good = tmp_path / "empty.jpg", tmp_path / "good.jpg"
    empty.write_bytes(b"")
    write_image(good, photo)
    out, plot = tmp_path / "out.csv", tmp_path / "faces.png"
    assert main(["demo", "--image", str(empty), str(good), "--output", str(out), "--plot", str(plot)]) == 1
    captured = capsys.readouterr()
    assert error_lines(captured.err) == [f"keras-mtanet: error: {empty}: empty file"]
    assert "keras-mtanet: 1 of 2 photos could not be read" in captured.err
    rows = read_csv(out)
    assert rows and {r["source"] for r in rows} == {str(good)} and rows[0]["face_detected"] == "1"
    assert cv2.imread(str(plot)) is not None


# ----------------------------------------------------------------- issue 23: messages that tell the truth
def test_a_video_with_no_decodable_frame_gets_one_error_line(cli, tmp_path, capsys):
    frames, _ = scenes.compose(30, [], size=(48, 64))
    path = tmp_path / "dead.avi"
    scenes.write_video(path, frames, 25.0)
    raw = bytearray(path.read_bytes())
    for start in [i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xD8]:
        raw[start:start + 200] = bytes(200)  # every Motion-JPEG frame's header wiped; the AVI header intact
    path.write_bytes(bytes(raw))
    good = tmp_path / "good.avi"
    scenes.write_video(good, frames[:3], 25.0)
    out = tmp_path / "out.csv"
    assert cli(["predict", str(path), str(good), "--no-detect", "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"keras-mtanet: error: {path}: no frame could be decoded (of the 30 in its header)"]
    assert "keras-mtanet: 1 input(s) failed" in err and len(read_csv(out)) == 3


def test_jpegs_that_decode_to_garbage_are_named_and_counted(cli, photo, tmp_path, capfd):
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    data = data.tobytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 2] + b"\xff\xd9")  # ends in EOI, so the end-marker check passes
    huge = tmp_path / "huge.jpg"
    sof = data.index(b"\xff\xc0")
    huge.write_bytes(data[:sof + 5] + struct.pack(">HH", 30000, 30000) + data[sof + 9:])
    good = tmp_path / "good.jpg"
    good.write_bytes(data)
    out = tmp_path / "out.csv"
    assert cli(["predict", str(cut), str(huge), str(good), "--no-detect", "--output", str(out), "--quiet"]) == 1
    captured = capfd.readouterr()  # libjpeg writes to file descriptor 2
    assert error_lines(captured.err) == [
        f"keras-mtanet: error: {cut}: corrupt JPEG (libjpeg: Corrupt JPEG data: premature end of data segment)",
        f"keras-mtanet: error: {huge}: corrupt JPEG: its header claims 30000 x 30000 pixels, more than its "
        f"{len(data):,} bytes can hold"]
    assert captured.err.count("Corrupt JPEG data") == 1  # libjpeg's own anonymous line is not printed
    assert "1 frames from 1 of 3 inputs" in captured.out and [r["source"] for r in read_csv(out)] == [str(good)]
    assert "keras-mtanet: 2 input(s) failed" in captured.err
    assert sources.read_image(good).shape == photo.shape  # a whole JPEG decodes as before


# ------------------------------------------------------------------- issue 23: memory bounded per input
def test_an_image_file_over_the_size_limit_is_refused_unread(cli, photo, tmp_path, capsys):
    ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    png = png.tobytes()
    iend = png.rindex(b"IEND") - 4
    padded = tmp_path / "padded.png"
    with open(padded, "wb") as f:  # a private chunk of 300 MB before IEND, stored sparse: no disk, no memory
        f.write(png[:iend] + struct.pack(">I", 300 * 2 ** 20) + b"prVt")
        f.seek(300 * 2 ** 20, 1)
        f.write(b"\0\0\0\0" + png[iend:])
    good = tmp_path / "good.png"
    good.write_bytes(png)
    out = tmp_path / "out.csv"
    read = np.fromfile

    def no_whole_read(path, *args, **kwargs):
        assert os.path.getsize(path) <= 256 * 2 ** 20, "read a padded file whole"
        return read(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "fromfile", no_whole_read)
        assert cli(["predict", str(padded), str(good), "--no-detect", "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"keras-mtanet: error: {padded}: 300 MiB, over the 256 MiB limit for an image "
                                "file; refused unread"]
    assert [r["source"] for r in read_csv(out)] == [str(good)]


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
