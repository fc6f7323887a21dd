"""keras-mtanet predict on hostile input: tiny and huge images, odd file names, unwritable outputs, interruptions,
truncated videos. One bad input never stops the others, user errors are one line, outputs are replaced only by
complete files, and memory stays bounded."""

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
from conftest import ASTRONAUT_BOX, error_lines, fifo_at, leftovers, read_csv, refused_without_blocking, write_image
from skimage import data as skdata

from keras_mtanet import Predictor
from keras_mtanet.cli import main
from keras_mtanet.errors import DataError
from keras_mtanet.inference import progress, sources, tracking
from keras_mtanet.inference.sources import Source
from keras_mtanet.model import task


@pytest.mark.safety
def test_a_fifo_or_device_given_to_predict_is_named_as_such(tmp_path, capsys):
    from keras_mtanet.inference import sources

    image = fifo_at(tmp_path / "photo.jpg")
    error = refused_without_blocking(image, lambda: sources.read_image(image))
    assert isinstance(error, DataError) and str(error) == f"{image}: image is not a regular file (a FIFO)"
    video = fifo_at(tmp_path / "clip.mp4")
    error = refused_without_blocking(video, lambda: list(sources._source_for(video).frames()))
    assert isinstance(error, DataError) and str(error) == f"{video}: video is not a regular file (a FIFO)"
    found, problems = sources.expand_inputs([str(image), "/dev/zero", str(tmp_path / "absent.jpg")])
    assert found == []
    assert problems == [f"{image}: is not a regular file (a FIFO); give image or video files",
                        "/dev/zero: is not a regular file (a character device); give image or video files",
                        f"{tmp_path / 'absent.jpg'}: no such file or folder"]
    assert main(["predict", "/dev/zero", "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err == "keras-mtanet: error: /dev/zero: is not a regular file (a character device); give image or " \
                  "video files\n"


@pytest.fixture
def cli(preset, monkeypatch):
    """``main`` with the embedded preset loaded once for the module."""
    monkeypatch.setattr(task, "load_pretrained", lambda *args, **kwargs: preset)
    return main


def run_cli_process(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "keras_mtanet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kwargs)


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


def write_face_video(path, n_frames, size=(120, 160)):
    photo = skdata.astronaut()
    patch, box = scenes.face_patch(photo, ASTRONAUT_BOX, margin=0.2)
    patch = cv2.resize(patch, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frames, _ = scenes.compose(n_frames, [(patch, box * 0.5, (20, 10), (0.05, 0.0))], size=size)
    scenes.write_video(path, frames, 25.0)


def truncated_avi(path, n_frames=60, keep=29):
    frames, _ = scenes.compose(n_frames, [], size=(48, 64))
    scenes.write_video(path, frames, 25.0)
    raw = path.read_bytes()
    starts = [i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xD8]
    assert len(starts) == n_frames  # one Motion-JPEG image per frame
    path.write_bytes(raw[:starts[keep]])


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
@pytest.mark.parametrize("case", range(6))
def test_predict_usage_errors_come_before_the_model(case, no_model, tmp_path, capsys):
    if case == 1 and not os.path.isdir("/sys"):
        pytest.skip("needs Linux /sys (a folder nobody, root included, can create files in)")
    args, message = usage_cases(tmp_path)[case]
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"keras-mtanet: error: {message}")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.safety
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_into_a_read_only_folder_fails_before_the_model(no_model, tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["predict", str(tmp_path / "x.jpg"), "--output", str(locked / "out.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {locked / 'out.csv'}: cannot write in folder "
                                               f"{locked} (Permission denied)")


@pytest.mark.safety
def test_a_full_disk_is_a_one_line_error(cli, photo, tmp_path, capsys):
    image = tmp_path / "a.png"
    write_image(image, photo)
    out = tmp_path / "out.csv"
    out.symlink_to("/dev/full")  # every write fails with ENOSPC
    assert cli(["predict", str(image), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"keras-mtanet: error: {out}: cannot write (No space left on device)"
    assert os.readlink(out) == "/dev/full"


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
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
