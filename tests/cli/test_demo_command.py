"""keras-mtanet demo: absurd options and unwritable outputs fail before the model loads; the predictions go through
the record writer."""


import cv2
import numpy as np
import pytest
from conftest import error_lines, leftovers, read_csv, write_image

import keras_mtanet
from keras_mtanet.cli import main
from keras_mtanet.inference import records
from keras_mtanet.labels import EXPR_NAMES


@pytest.mark.safety
@pytest.mark.parametrize("frames", ["0", "-5", "100000000"])
def test_demo_refuses_absurd_frame_counts_before_loading(frames, no_model, capsys):
    assert main(["demo", "--synthetic", "--frames", frames]) == 2
    assert capsys.readouterr().err.strip() == f"keras-mtanet: error: --frames {frames}: give 1 to 100000 frames"


@pytest.mark.safety
def test_demo_output_into_a_missing_folder_fails_before_loading(no_model, tmp_path, capsys):
    target = tmp_path / "missing" / "demo.csv"
    assert main(["demo", "--synthetic", "--frames", "5", "--output", str(target)]) == 2
    assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {target}: folder {tmp_path / 'missing'} "
                                               "does not exist")
    assert main(["demo", "--output", str(target)]) == 2
    assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {target}: folder {tmp_path / 'missing'} "
                                               "does not exist")


@pytest.mark.safety
def test_demo_writes_through_the_record_writer_and_replaces_only_when_complete(tmp_path):
    from keras_mtanet.cli import demo

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


@pytest.mark.safety
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
