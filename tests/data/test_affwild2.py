
import numpy as np
import pytest
import tensorflow as tf
from conftest import fifo_at, refused_without_blocking

from keras_mtanet.cli import main
from keras_mtanet.data import affwild2
from keras_mtanet.errors import DataError

VA_H, AU_H = "valence,arousal", "AU1,AU2,AU4,AU6,AU12,AU15,AU20,AU25"
EX_H = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def crop(root, video, frame, value=100):
    path = root / "cropped_aligned" / video / f"{frame:05d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_jpeg(np.full((16, 16, 3), value, np.uint8)).numpy())
    return path


@pytest.fixture
def handmade(tmp_path):
    """Three videos covering every layout quirk, written by hand."""
    ann = tmp_path / "annotations"
    # vid_a: all three tasks; frame 3 has no crop; frame 2 unannotated for VA; AU file one line shorter.
    write(ann / "VA_Set/Training_Set/vid_a.txt", f"{VA_H}\n0.5,-0.25\n-5,-5\n0.1,0.2\n-1,1\n")
    write(ann / "EXPR_Set/Training_Set/vid_a.txt", f"{EX_H}\n4\n4\n-1\n6\n")
    write(ann / "AU_Set/Training_Set/vid_a.txt", f"{AU_H}\n1,0,0,1,1,0,0,1\n-1,-1,-1,-1,-1,-1,-1,-1\n"
                                                 "0,0,0,0,0,0,0,0\n")
    for f in (1, 2, 4):
        crop(tmp_path, "vid_a", f)
    # vid_b_left / vid_b_right: two people in one video, EXPR only, each its own crops.
    write(ann / "EXPR_Set/Training_Set/vid_b_left.txt", f"{EX_H}\n1\n2\n")
    write(ann / "EXPR_Set/Training_Set/vid_b_right.txt", f"{EX_H}\n5\n")
    crop(tmp_path, "vid_b_left", 1)
    crop(tmp_path, "vid_b_left", 2)
    crop(tmp_path, "vid_b_right", 1)
    # vid_c: VA only, with a truncated crop on frame 2 and trailing blank lines.
    write(ann / "VA_Set/Training_Set/vid_c.txt", f"{VA_H}\n0.3,0.3\n0.4,0.4\n\n\n")
    crop(tmp_path, "vid_c", 1)
    bad = crop(tmp_path, "vid_c", 2)
    bad.write_bytes(bad.read_bytes()[:40])
    # A validation split that exists for VA only.
    write(ann / "VA_Set/Validation_Set/vid_v.txt", f"{VA_H}\n0.0,0.0\n")
    crop(tmp_path, "vid_v", 1)
    return tmp_path


def test_frames_are_merged_across_tasks_and_quirks_handled(handmade):
    index = affwild2.read_index(handmade, "Training_Set")
    rows = {(v, f): i for i, (v, f) in enumerate(zip(index.videos, index.frames))}
    assert sorted(rows) == [("vid_a", 1), ("vid_a", 2), ("vid_a", 4), ("vid_b_left", 1), ("vid_b_left", 2),
                            ("vid_b_right", 1), ("vid_c", 1)]
    a1, a2, a4 = rows["vid_a", 1], rows["vid_a", 2], rows["vid_a", 4]
    np.testing.assert_allclose(index.va[a1], [0.5, -0.25])
    np.testing.assert_array_equal(index.au[a1], [1, 0, 0, 1, 1, 0, 0, 1])
    assert index.expr[a1] == 4
    np.testing.assert_array_equal(index.va[a2], [-5, -5])
    np.testing.assert_array_equal(index.au[a2], [-1] * 8)
    # Frame 4 is beyond the AU file: unannotated for AU, annotated for the others.
    np.testing.assert_allclose(index.va[a4], [-1, 1])
    np.testing.assert_array_equal(index.au[a4], [-1] * 8)
    assert index.expr[a4] == 6
    # EXPR-only videos have VA and AU unannotated.
    b = rows["vid_b_left", 2]
    assert index.expr[b] == 2 and np.all(index.va[b] == -5) and np.all(index.au[b] == -1)
    assert index.expr[rows["vid_b_right", 1]] == 5
    assert index.paths[rows["vid_b_right", 1]].endswith("cropped_aligned/vid_b_right/00001.jpg")
    c = rows["vid_c", 1]
    assert index.expr[c] == -1 and np.all(index.au[c] == -1)
    assert index.stats == {"videos": 4, "annotated_frames": 9, "frames": 7, "missing_crops": 1,
                           "corrupt_crops": 1}
    reasons = dict(index.skipped)
    assert reasons[str(handmade / "cropped_aligned/vid_a/00003.jpg")] == "no crop"
    assert "truncated" in reasons[str(handmade / "cropped_aligned/vid_c/00002.jpg")]


def test_split_aliases_task_selection_and_video_filter(handmade):
    assert len(affwild2.read_index(handmade, "val")) == 1
    expr_only = affwild2.read_index(handmade, "train", tasks=("expr",))
    assert sorted(set(expr_only.videos)) == ["vid_a", "vid_b_left", "vid_b_right"]
    assert np.all(expr_only.va == -5)
    assert set(affwild2.read_index(handmade, "train", videos=["vid_c"]).videos) == {"vid_c"}


@pytest.mark.parametrize("task,folder,header,line,message", [
    ("va", "VA_Set", VA_H, "0.5;0.2", "expected 2 comma-separated"),
    ("va", "VA_Set", VA_H, "0.5,abc", "not a number"),
    ("va", "VA_Set", VA_H, "1.5,0.2", "valence/arousal must lie in \\[-1, 1\\] or be -5"),
    ("au", "AU_Set", AU_H, "0,1,0,1,0,1,0", "expected 8"),
    ("au", "AU_Set", AU_H, "0,1,0,2,0,1,0,1", "AU values must be 0, 1 or -1"),
    ("expr", "EXPR_Set", EX_H, "7", "expression must be an id"),
    ("expr", "EXPR_Set", EX_H, "2.5", "expression must be an id"),
    ("expr", "EXPR_Set", EX_H, "nan", "expression must be an id"),  # once a ValueError traceback
    ("expr", "EXPR_Set", EX_H, "inf", "expression must be an id"),  # once an OverflowError traceback
    ("expr", "EXPR_Set", EX_H, "-inf", "expression must be an id"),
])
def test_malformed_line_names_file_and_line(tmp_path, task, folder, header, line, message):
    path = write(tmp_path / "annotations" / folder / "Training_Set" / "v.txt",
                 f"{header}\n{'0,0' if task == 'va' else ('0,0,0,0,0,0,0,0' if task == 'au' else '0')}\n{line}\n")
    (tmp_path / "cropped_aligned").mkdir()
    with pytest.raises(DataError, match=f"^{path}:3: {message}"):
        affwild2.read_index(tmp_path, "train")


def test_bad_header_and_blank_line_inside(tmp_path):
    (tmp_path / "cropped_aligned").mkdir()
    path = write(tmp_path / "annotations/VA_Set/Training_Set/v.txt", "arousal,valence\n0,0\n")
    with pytest.raises(DataError, match=f"^{path}:1: header 'arousal,valence'"):
        affwild2.read_index(tmp_path, "train")
    write(path, f"{VA_H}\n0,0\n\n0,0\n")
    with pytest.raises(DataError, match=f"^{path}:3: empty line"):
        affwild2.read_index(tmp_path, "train")


def test_missing_root_folders_and_split(tmp_path, handmade):
    with pytest.raises(DataError, match="Aff-Wild2 root not found"):
        affwild2.read_index(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="no annotations folder"):
        affwild2.read_index(handmade / "cropped_aligned", "train")
    with pytest.raises(DataError, match="split 'Test_Set' not found .*splits present: Training_Set, "
                                        "Validation_Set"):
        affwild2.read_index(handmade, "Test_Set")


# ------------------------------------------------------------------------ writing the layout
VA3 = np.array([[0.1234567, -0.05], [-5.0, -5.0], [1.0, np.float32(0.1)]], np.float32)
AU3 = np.array([[1, 0, 0, 1, 1, 0, 0, 1], [-1] * 8, [0] * 8], np.float32)
EXPR3 = np.array([4, -1, 6], np.int32)


def test_annotation_writer_matches_hand_written_lines(tmp_path):
    written = {}
    for task, values in (("va", VA3), ("au", AU3), ("expr", EXPR3)):
        path = affwild2.annotation_path(tmp_path, task, "train", "vid")
        affwild2.write_annotation_file(path, task, values)
        written[task] = path.read_bytes()
    # Annotation files: 6 significant digits for valence/arousal, as the synthetic sets have always been.
    assert written["va"] == b"valence,arousal\n0.123457,-0.05\n-5,-5\n1,0.1\n"
    assert written["au"] == (AU_H + "\n1,0,0,1,1,0,0,1\n-1,-1,-1,-1,-1,-1,-1,-1\n0,0,0,0,0,0,0,0\n").encode()
    assert written["expr"] == (EX_H + "\n4\n-1\n6\n").encode()
    assert affwild2.annotation_path(tmp_path, "va", "train", "vid") == \
        tmp_path / "annotations/VA_Set/Training_Set/vid.txt"
    # Read back by the reader: the same values, to the precision written.
    np.testing.assert_allclose(affwild2.parse_annotation_file(tmp_path / "annotations/VA_Set/Training_Set/vid.txt",
                                                              "va"), VA3, atol=5e-7)
    read = affwild2.read_annotations(tmp_path, "Training_Set")
    np.testing.assert_array_equal(read["au"]["vid"], AU3)
    np.testing.assert_array_equal(read["expr"]["vid"], EXPR3)


def test_prediction_files_print_six_decimals(tmp_path):
    path = affwild2.prediction_path(tmp_path, "va", "vid")
    affwild2.write_annotation_file(path, "va", VA3[[0, 2]], va_format=affwild2.PREDICTION_VA_FORMAT)
    assert path == tmp_path / "VA_Set" / "vid.txt"
    assert path.read_text() == "valence,arousal\n0.123457,-0.050000\n1.000000,0.100000\n"


def test_crops_are_written_where_the_reader_finds_them(tmp_path):
    data = tf.io.encode_jpeg(np.full((8, 8, 3), 50, np.uint8)).numpy()
    affwild2.write_annotation_file(affwild2.annotation_path(tmp_path, "expr", "val", "v"), "expr", [1, 2, 3])
    for frame in (1, 3):
        affwild2.write_crop(tmp_path, "v", frame, data)
    assert sorted(p.name for p in (tmp_path / "cropped_aligned" / "v").iterdir()) == ["00001.jpg", "00003.jpg"]
    index = affwild2.read_index(tmp_path, "val")
    assert list(index.frames) == [1, 3] and list(index.expr) == [1, 3] and index.stats["missing_crops"] == 1
    assert open(index.paths[1], "rb").read() == data


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = affwild2.annotation_path(tmp_path, "au", "train", "v")
    affwild2.write_annotation_file(path, "au", AU3)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        affwild2.write_annotation_file(path, "au", [[0] * 8, ["x"] * 8])
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["v.txt"]


def test_a_file_in_the_way_of_a_folder_is_one_line_naming_it(tmp_path):
    (tmp_path / "annotations").write_text("not a folder")
    with pytest.raises(DataError, match=f"^{tmp_path / 'annotations' / 'VA_Set' / 'Training_Set'}: cannot create "
                                        r"folder \([^\n]+\)$"):
        affwild2.write_annotation_file(affwild2.annotation_path(tmp_path, "va", "train", "v"), "va", VA3)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_train_and_evaluate_name_a_nan_expression_line(tmp_path, capsys, value):

    for split in ("Training_Set", "Validation_Set"):
        write(tmp_path / "annotations/VA_Set" / split / "v.txt", f"{VA_H}\n0.1,0.2\n")
        bad = write(tmp_path / "annotations/EXPR_Set" / split / "v.txt", f"{EX_H}\n1\n{value}\n")
    crop(tmp_path, "v", 1)
    crop(tmp_path, "v", 2)
    expected = f"keras-mtanet: error: {bad}:3: expression must be an id 0-6 or -1, got {value!r}"
    assert main(["evaluate", "--data", str(tmp_path), "--split", "Validation_Set"]) == 2
    assert capsys.readouterr().err.strip() == expected
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--format", "affwild2", "--output", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == expected.replace("Validation_Set", "Training_Set")


def test_annotation_files_parse_in_blocks_with_exact_line_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(affwild2, "PARSE_BLOCK_LINES", 4, raising=False)
    rows = [f"{i / 20:.2f},{-i / 20:.2f}" for i in range(11)]
    path = write(tmp_path / "v.txt", VA_H + "\n" + "\n".join(rows) + "\n\n")
    values = affwild2.parse_annotation_file(path, "va")
    assert values.dtype == np.float32 and values.shape == (11, 2)
    np.testing.assert_allclose(values[:, 0], np.arange(11) / 20, atol=1e-6)
    write(path, VA_H + "\n" + "\n".join(rows[:9] + ["0.5,7"] + rows[10:]) + "\n")
    with pytest.raises(DataError, match=f"^{path}:11: valence/arousal must lie in"):
        affwild2.parse_annotation_file(path, "va")
    write(path, VA_H + "\n" + "\n".join(rows[:6] + ["0.5,x"] + rows[7:]) + "\n")
    with pytest.raises(DataError, match=f"^{path}:8: not a number in '0.5,x'"):
        affwild2.parse_annotation_file(path, "va")
    write(path, VA_H + "\n" + "\n".join(rows[:4] + ["", ""] + rows[4:]) + "\n")
    with pytest.raises(DataError, match=f"^{path}:6: empty line inside"):
        affwild2.parse_annotation_file(path, "va")
    write(path, EX_H + "\r\n" + "\r\n".join(["1", "-1", "6", "0", "3"]) + "\r\n")  # Windows line ends
    np.testing.assert_array_equal(affwild2.parse_annotation_file(path, "expr"), [1, -1, 6, 0, 3])
    write(path, EX_H + "\n")
    assert affwild2.parse_annotation_file(path, "expr").shape == (0,)


def test_a_long_annotation_file_costs_its_arrays_not_python_lists(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(affwild2, "PARSE_BLOCK_LINES", 1024, raising=False)
    frames = 100_000
    rng = np.random.default_rng(0)
    lines = "\n".join(f"{a:.6g},{b:.6g}" for a, b in rng.uniform(-1, 1, (frames, 2)))
    write(tmp_path / "annotations/VA_Set/Training_Set/long.txt", f"{VA_H}\n{lines}\n")
    (tmp_path / "cropped_aligned").mkdir()
    crop(tmp_path, "long", 2)
    tracemalloc.start()
    try:
        index = affwild2.read_index(tmp_path, "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The VA column is 0.8 MB as float32; Python lists of every line, value and skipped frame took over 25 MB.
    assert peak < 6e6, f"{peak / 1e6:.1f} MB"
    assert len(index) == 1 and index.frames.tolist() == [2] and index.stats["missing_crops"] == frames - 1
    assert len(index.skipped) == frames - 1
    assert index.skipped[0] == (str(tmp_path / "cropped_aligned/long/00001.jpg"), "no crop")
    assert index.skipped[-1] == (str(tmp_path / f"cropped_aligned/long/{frames:06d}.jpg"), "no crop")


@pytest.mark.safety
def test_a_fifo_crop_is_skipped_and_counted_unopened(tmp_path):
    from keras_mtanet.data import affwild2

    root = tmp_path / "affwild2"
    (root / "annotations" / "VA_Set" / "Training_Set").mkdir(parents=True)
    (root / "annotations" / "VA_Set" / "Training_Set" / "vid.txt").write_text("valence,arousal\n0.1,0.2\n")
    crop = fifo_at(root / "cropped_aligned" / "vid" / "00001.jpg")
    for check_images in (True, False):
        index = refused_without_blocking(crop, lambda: affwild2.read_index(root, "train", check_images=check_images))
        assert index is None
        index = affwild2.read_index(root, "train", check_images=check_images)
        assert len(index.paths) == 0 and index.skipped == [(str(crop), "not a regular file (a FIFO)")]
