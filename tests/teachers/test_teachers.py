import csv
import hashlib
import importlib.util
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_mtanet import cli, files
from keras_mtanet.data import ferplus
from keras_mtanet.errors import DataError
from keras_mtanet.labels import AU_NAMES
from keras_mtanet.teachers import au, cache, landmarker, va
from keras_mtanet.teachers import teach as teach_module

SHARED = Path(__file__).resolve().parents[3] / "shared"
FERPLUS = SHARED / "data" / "ferplus"
BUNDLE = SHARED / "models" / "face_landmarker.task"
HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
needs_teacher = pytest.mark.skipif(
    not (HAVE_MEDIAPIPE and BUNDLE.is_file() and FERPLUS.is_dir()),
    reason="needs mediapipe (pip install 'keras-mtanet[teacher]') and ../shared (FER+ and face_landmarker.task)")


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_valence_arousal_from_votes_by_hand():
    # 6 neutral (0, 0) and 4 happiness (0.81, 0.51) votes: 40 % of the way to happy.
    np.testing.assert_allclose(va.derive_va([6, 4, 0, 0, 0, 0, 0, 0, 0, 0]), [0.324, 0.204], atol=1e-6)
    # Contempt counts at (-0.23, 0.31); unknown and NF votes are dropped: (2 anger, 1 disgust, 7 contempt) / 10.
    expected = [(2 * -0.51 - 0.60 + 7 * -0.23) / 10, (2 * 0.59 + 0.35 + 7 * 0.31) / 10]
    np.testing.assert_allclose(va.derive_va([0, 0, 0, 0, 2, 1, 0, 7, 0, 0]), expected, atol=1e-6)
    np.testing.assert_allclose(va.derive_va([0, 0, 0, 3, 0, 0, 0, 0, 4, 3]), [-0.63, -0.27], atol=1e-6)
    batch = va.derive_va([[0, 0, 0, 0, 0, 0, 0, 0, 5, 5], [0, 0, 10, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(batch, [[-5, -5], [0.40, 0.67]], atol=1e-6)


def test_au_mapping_by_hand():
    face = dict.fromkeys(landmarker.BLENDSHAPE_NAMES + landmarker.GEOMETRY_NAMES, 0.0)
    face.update(mouthSmileLeft=0.4, mouthSmileRight=0.6, mouthStretchLeft=0.5, mouthStretchRight=0.5, jawOpen=0.3,
                lip_gap=0.1, cheekSquintLeft=1e-6, cheekSquintRight=3e-6, lower_lid=-0.2)
    p = dict(zip(AU_NAMES, au.au_probabilities(face)))
    p12 = sigmoid(12.3597 * 0.5 - 2.1203)  # left and right are averaged
    assert p["AU12"] == pytest.approx(p12, rel=1e-5)
    # AU20's stretch is gated by 1 - p(AU12): a stretch that comes with a smile is the smile's.
    assert p["AU20"] == pytest.approx(sigmoid(7.5836 * 0.5 - 0.3334) * (1 - p12), rel=1e-5)
    assert p["AU25"] == pytest.approx(sigmoid(7.1428 * 0.3 + 10.9024 * 0.1 - 1.8392), rel=1e-5)
    assert p["AU6"] == pytest.approx(sigmoid(2.8211 * math.log10(2e-6 + 1e-9) + 89.7534 * -0.2 + 20.0348), rel=1e-5)
    assert p["AU1"] == pytest.approx(sigmoid(-0.6021), rel=1e-5)


def test_geometry_ignores_face_size_position_and_roll():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.3, 0.7, (478, 2))
    points[33], points[263] = (0.4, 0.5), (0.6, 0.5)  # outer eye corners 0.2 apart
    points[13], points[14] = (0.5, 0.70), (0.5, 0.73)  # inner lips
    points[61], points[291] = (0.45, 0.74), (0.55, 0.74)  # lip corners
    points[55], points[285] = (0.47, 0.42), (0.53, 0.42)  # inner brow ends
    points[133], points[362] = (0.46, 0.5), (0.54, 0.5)  # inner eye corners
    g = dict(zip(landmarker.GEOMETRY_NAMES, landmarker.geometry(points)))
    assert g["lip_gap"] == pytest.approx(0.03 / 0.2, rel=1e-5)
    assert g["brow_gap"] == pytest.approx(0.06 / 0.2, rel=1e-5)
    assert g["brow_inner"] == pytest.approx(0.08 / 0.2, rel=1e-5)  # brows above the eye corners: positive
    assert g["corner_drop"] == pytest.approx((0.74 - 0.715) / 0.2, rel=1e-5)
    angle = math.radians(25)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (points - 0.5) @ rotation.T * 0.6 + [0.45, 0.55]
    np.testing.assert_allclose(landmarker.geometry(moved), landmarker.geometry(points), rtol=1e-5, atol=1e-6)


def test_prepare_upscales_and_pads_with_grey():
    gray = np.full((48, 48), 200, np.uint8)
    image = landmarker.prepare(gray)
    assert image.shape == (384, 384, 3) and image.dtype == np.uint8
    assert np.all(image[:96] == 128) and np.all(image[:, -96:] == 128)  # a quarter of the side on each side
    assert np.all(image[96:288, 96:288] == 200)


def test_the_bundle_is_checked_by_hash(tmp_path):
    fake = tmp_path / "face_landmarker.task"
    fake.write_bytes(b"not a bundle")
    digest = hashlib.sha256(b"not a bundle").hexdigest()
    with pytest.raises(DataError, match=f"^{fake}: sha256 {digest} is not the Face Landmarker bundle"):
        landmarker.check_bundle(fake)
    with pytest.raises(DataError, match="Face Landmarker bundle not found; download face_landmarker.task from"):
        landmarker.check_bundle(tmp_path / "missing.task")


def test_without_mediapipe_the_teacher_says_what_to_install(monkeypatch):
    from keras_mtanet.errors import DependencyError

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe raises ImportError
    monkeypatch.setattr(landmarker, "check_bundle", lambda path: b"")
    with pytest.raises(DependencyError, match="needs MediaPipe: pip install 'keras-mtanet\\[teacher\\]'"):
        landmarker.FaceLandmarker("face_landmarker.task")


def test_cache_rows_round_trip(tmp_path):
    path = tmp_path / "labels.csv"
    blend = np.linspace(0, 1, 52)
    blend[7] = 1.234567e-6
    rows = [cache.format_row("FER2013Test/a.png", True, [0.12344, 0.5, 1, 0, 0.25, 0.75, 0.1, 0.9], [-0.5, 0.25],
                             blend, np.arange(7) / 10),
            cache.format_row("FER2013Test/b.png", False, [], [-5, -5], [math.nan] * 52, [math.nan] * 7)]
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    planted = tmp_path / "labels.csv.tmp"  # the temporary name earlier versions used: never written through
    planted.symlink_to(mine)
    cache.write_rows(path, rows)
    assert mine.read_text() == "mine" and planted.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "labels.csv.tmp", "mine.txt"]
    labels = cache.read_labels(path)
    a, b = labels["FER2013Test/a.png"], labels["FER2013Test/b.png"]
    assert a.found and not b.found
    np.testing.assert_allclose(a.au, [0.1234, 0.5, 1, 0, 0.25, 0.75, 0.1, 0.9], atol=1e-6)
    np.testing.assert_array_equal(b.au, [-1] * 8)
    np.testing.assert_array_equal(b.va, [-5, -5])
    features = cache.features(cache.read_rows(path)["FER2013Test/a.png"])
    assert features["cheekSquintLeft"] == pytest.approx(1.234567e-6, rel=1e-5)  # tiny scores survive
    assert math.isnan(cache.features(cache.read_rows(path)["FER2013Test/b.png"])["jawOpen"])
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:2] + [text[2].replace(",-5.0000,", ",-3.0000,", 1)]) + "\n")
    with pytest.raises(DataError, match=f"^{path}:3: valence/arousal must lie in"):
        cache.read_labels(path)


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "FER2013Train").mkdir()
    (tmp_path / "FER2013Train" / "label.csv").write_text("")
    (tmp_path / "bad.task").write_bytes(b"x")
    code = cli.main(["teach", "--data", str(tmp_path), "--teacher-model", str(tmp_path / "bad.task"),
                     "--output", str(tmp_path / "labels.csv"), "--splits", "train"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not the Face Landmarker bundle" in err
    code = cli.main(["train", "--data", str(tmp_path), "--format", "synthetic", "--labels", "x.csv", "--output",
                     str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "keras-mtanet: error: --labels (a teacher label cache) applies to --format " \
                                        "ferplus only"


def real_faces(expression, count, min_votes=9):
    """The first ``count`` FER+ test images (file order) with at least ``min_votes`` of 10 for ``expression``."""
    column = ferplus.VOTE_NAMES.index(expression)
    chosen = []
    with open(FERPLUS / "FER2013Test" / "label.csv", newline="") as f:
        for row in csv.reader(f):
            if int(row[2 + column]) >= min_votes:
                chosen.append(FERPLUS / "FER2013Test" / row[0])
                if len(chosen) == count:
                    break
    return chosen


@needs_teacher
def test_teacher_on_real_happy_and_surprised_faces():
    with landmarker.FaceLandmarker(BUNDLE) as lm:
        results = {}
        for expression in ("happiness", "surprise"):
            seen = [lm.observe(landmarker.read_gray(p)) for p in real_faces(expression, 6)]
            results[expression] = [dict(zip(AU_NAMES, au.au_probabilities(s.features()))) for s in seen if s.found]
        again = lm.observe(landmarker.read_gray(real_faces("happiness", 1)[0]))
    assert len(results["happiness"]) >= 5 and len(results["surprise"]) >= 5
    assert all(p["AU12"] > 0.5 for p in results["happiness"]), results["happiness"]
    assert all(p["AU25"] > 0.5 or p["AU1"] > 0.5 or p["AU2"] > 0.5 for p in results["surprise"]), results["surprise"]
    with landmarker.FaceLandmarker(BUNDLE) as other:  # a fresh landmarker sees the same numbers
        fresh = other.observe(landmarker.read_gray(real_faces("happiness", 1)[0]))
    np.testing.assert_array_equal(fresh.blendshapes, again.blendshapes)



def real_test_split(root, count):
    """``root`` holding the first ``count`` images of the real FER+ test split and their label lines."""
    split = root / "FER2013Test"
    split.mkdir(parents=True)
    lines = (FERPLUS / "FER2013Test" / "label.csv").read_text().splitlines()[:count]
    (split / "label.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        shutil.copy(FERPLUS / "FER2013Test" / line.split(",")[0], split)
    return root

@needs_teacher
def test_teach_resumes_after_a_kill_to_the_same_file(tmp_path, monkeypatch):
    root = real_test_split(tmp_path / "fer", 12)
    quiet = lambda *a: None  # noqa: E731
    whole = ferplus.read_index(root, "test")
    reference = tmp_path / "reference.csv"
    report = teach_module.teach(root, BUNDLE, reference, splits=("test",), chunk=5, log=quiet)
    assert report["FER2013Test"]["images"] == len(whole)

    calls = {"n": 0}
    observe = landmarker.FaceLandmarker.observe

    def dying(self, gray):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return observe(self, gray)

    out = tmp_path / "labels.csv"
    monkeypatch.setattr(landmarker.FaceLandmarker, "observe", dying)
    with pytest.raises(KeyboardInterrupt):
        teach_module.teach(root, BUNDLE, out, splits=("test",), chunk=5, log=quiet)
    assert not out.exists() and len(list((tmp_path / "labels.csv.parts").glob("part-*.csv"))) == 1
    monkeypatch.setattr(landmarker.FaceLandmarker, "observe", observe)
    messages = []
    teach_module.teach(root, BUNDLE, out, splits=("test",), chunk=5, log=messages.append)
    assert f"FER2013Test: 5 of {len(whole)} images already done, {len(whole) - 5} to go" in messages
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "labels.csv.parts").exists()
    again = []
    teach_module.teach(root, BUNDLE, out, splits=("test",), log=again.append)
    assert f"FER2013Test: all {len(whole)} images already in the cache" in again
    assert out.read_bytes() == reference.read_bytes()

    index = ferplus.read_index(root, "test", labels=cache.read_labels(out))
    assert index.stats["teacher_found"] + index.stats["teacher_missed"] == len(index)
    assert landmarker.BUNDLE_SHA256 in (tmp_path / "labels.csv.json").read_text()


class StubLandmarker:
    """Stands in for MediaPipe: a face is 'found' in an image whose mean grey is above 100, with blendshapes
    that are a function of the pixels, so each row of the cache depends on its image alone."""

    def __init__(self, model_path, **kwargs):
        self.calls = 0

    def settings(self):
        return {"stub": 1}

    def observe(self, gray):
        self.calls += 1
        mean = float(np.mean(gray)) / 255.0
        if mean <= 100 / 255:
            return landmarker.Observation(False, np.full(52, np.nan, np.float32), np.full(7, np.nan, np.float32))
        return landmarker.Observation(True, np.linspace(0, mean, 52).astype(np.float32),
                                      np.full(7, mean / 10, np.float32), 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def write_fake_ferplus(root, splits=(("FER2013Test", 23), ("FER2013Train", 17)), seed=0):
    """A FER+ layout of random grey 48x48 PNGs; names not in sorted order in label.csv."""
    import cv2

    rng = np.random.default_rng(seed)
    votes = {}
    for folder, n in splits:
        (root / folder).mkdir(parents=True)
        lines = []
        for i in rng.permutation(n):
            name = f"fer{i:07d}.png"
            level = int(rng.integers(40, 200))  # dark images: no face found by the stub
            cv2.imwrite(str(root / folder / name), rng.integers(level - 30, level + 30, (48, 48)).astype(np.uint8))
            v = rng.integers(0, 5, 10)
            v[8:] = 0
            v[rng.integers(0, 8)] += 1  # at least one vote on an emotion
            votes[f"{folder}/{name}"] = v
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(str(int(c)) for c in v))
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
    return votes


def test_teach_parses_label_csv_once_and_writes_sorted_rows(tmp_path, monkeypatch):
    votes = write_fake_ferplus(tmp_path / "fer")
    monkeypatch.setattr(landmarker, "FaceLandmarker", StubLandmarker)
    monkeypatch.setattr(landmarker, "check_bundle", lambda path: b"")

    def no_second_parse(*args, **kwargs):
        raise AssertionError("teach parsed label.csv a second time")

    monkeypatch.setattr(ferplus, "read_votes", no_second_parse)
    out = tmp_path / "labels.csv"
    report = teach_module.teach(tmp_path / "fer", "stub.task", out, splits=("train", "test"), chunk=4,
                                log=lambda *a: None)
    rows = list(cache.iter_rows(out))
    keys = [r[0] for r in rows]
    # train before test (the cache's split order), names sorted within each split; every image once.
    assert keys == sorted(k for k in votes if k.startswith("FER2013Train")) + sorted(
        k for k in votes if k.startswith("FER2013Test"))
    for row in rows:  # valence/arousal from the image's own votes, as derive_va gives them
        np.testing.assert_allclose(cache.entry(row).va, va.derive_va(votes[row[0]]), atol=1e-4)
    found = {f: sum(r[1] == "1" for r in rows if r[0].startswith(f)) for f in ("FER2013Train", "FER2013Test")}
    assert {f: (r["images"], r["found"]) for f, r in report.items()} == {
        "FER2013Train": (17, found["FER2013Train"]), "FER2013Test": (23, found["FER2013Test"])}
    assert 0 < found["FER2013Test"] < 23  # both kinds of row are present


def test_teach_resumed_run_gives_the_same_bytes_without_mediapipe(tmp_path, monkeypatch):
    write_fake_ferplus(tmp_path / "fer")
    monkeypatch.setattr(landmarker, "FaceLandmarker", StubLandmarker)
    monkeypatch.setattr(landmarker, "check_bundle", lambda path: b"")
    quiet = lambda *a: None  # noqa: E731
    reference = tmp_path / "reference.csv"
    teach_module.teach(tmp_path / "fer", "stub.task", reference, splits=("test",), chunk=5, log=quiet)
    calls = {"n": 0}
    observe = StubLandmarker.observe

    def dying(self, gray):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return observe(self, gray)

    out = tmp_path / "labels.csv"
    monkeypatch.setattr(StubLandmarker, "observe", dying)
    with pytest.raises(KeyboardInterrupt):
        teach_module.teach(tmp_path / "fer", "stub.task", out, splits=("test",), chunk=5, log=quiet)
    assert len(list((tmp_path / "labels.csv.parts").glob("part-*.csv"))) == 2
    monkeypatch.setattr(StubLandmarker, "observe", observe)
    teach_module.teach(tmp_path / "fer", "stub.task", out, splits=("test",), chunk=5, log=quiet)
    assert out.read_bytes() == reference.read_bytes()
    # Adding a split to a finished cache merges the new rows in order, keeping the old ones byte for byte.
    teach_module.teach(tmp_path / "fer", "stub.task", out, splits=("test", "train"), chunk=5, log=quiet)
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(cache.COLUMNS) and len(lines) == 1 + 23 + 17
    assert lines[1 + 17:] == reference.read_text().splitlines()[1:]


def cache_row(image, found=True):
    return cache.format_row(image, found, [0.5] * 8 if found else [], [0.1, -0.2], [0.0] * 52 if found else
                            [math.nan] * 52, [0.0] * 7 if found else [math.nan] * 7)


def test_merge_streams_sorted_runs_and_keeps_the_last_duplicate(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    cache.write_rows(a, [cache_row("FER2013Test/1.png"), cache_row("FER2013Test/3.png")])
    cache.write_rows(b, [cache_row("FER2013Test/2.png"), cache_row("FER2013Test/3.png", found=False)])
    merged = list(cache.merge_sorted([a, b], key=lambda r: r[0]))
    assert [(r[0], r[1]) for r in merged] == [("FER2013Test/1.png", "1"), ("FER2013Test/2.png", "1"),
                                              ("FER2013Test/3.png", "0")]  # b listed last wins, as dict.update
    assert merged == sorted({**cache.read_rows(a), **cache.read_rows(b)}.values())
    cache.write_rows(a, [cache_row("FER2013Test/3.png"), cache_row("FER2013Test/1.png")])
    with pytest.raises(DataError, match=f"^{a}: rows out of order at image FER2013Test/1.png"):
        list(cache.merge_sorted([a, b], key=lambda r: r[0]))


def test_write_rows_takes_a_generator_and_a_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "labels.csv"
    cache.write_rows(path, (cache_row(f"FER2013Test/{i}.png") for i in range(3)))
    before = path.read_bytes()
    assert len(cache.read_rows(path)) == 3

    def failing():
        yield cache_row("FER2013Test/9.png")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache.write_rows(path, failing())
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["labels.csv"]

    # A write that fails is one line naming the file, and leaves it as it was.
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "fsync", full_disk)
        with pytest.raises(DataError, match=r"labels\.csv: cannot write \(No space left on device\)$"):
            cache.write_rows(path, [cache_row("FER2013Test/1.png")])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["labels.csv"]

    link = tmp_path / "planted.csv"
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    link.symlink_to(victim)  # a link planted at the destination is replaced, not written through
    cache.write_rows(link, [cache_row("FER2013Test/1.png")])
    assert victim.read_text() == "mine" and not link.is_symlink() and len(cache.read_rows(link)) == 1

    # The output a user names (teach --output) is written as predict writes its outputs: through a link the user
    # made, keeping the file's permissions.
    import os

    target, theirs = tmp_path / "kept.csv", tmp_path / "theirs.csv"
    target.write_text("old")
    os.chmod(target, 0o600)
    theirs.symlink_to(target)
    cache.write_rows(theirs, [cache_row("FER2013Test/2.png")], user_file=True)
    assert theirs.is_symlink() and len(cache.read_rows(target)) == 1 and target.stat().st_mode & 0o777 == 0o600
    cache.write_rows(target, [cache_row("FER2013Test/3.png")])  # the package's own files keep their mode too
    assert target.stat().st_mode & 0o777 == 0o600


def test_unknown_data_format_is_a_usage_error(tmp_path):
    from keras_mtanet.errors import UsageError

    with pytest.raises(UsageError, match="^teach: unknown data format 'affwild2'; choose one of ferplus$"):
        teach_module.teach(tmp_path, "x.task", tmp_path / "labels.csv", data_format="affwild2")


def test_teach_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch, read_only_folder):
    write_fake_ferplus(tmp_path / "fer")
    monkeypatch.setattr(landmarker, "FaceLandmarker", StubLandmarker)
    monkeypatch.setattr(landmarker, "check_bundle", lambda path: b"")
    out = read_only_folder / "labels.csv"
    assert cli.main(["teach", "--data", str(tmp_path / "fer"), "--teacher-model", "stub.task", "--output", str(out),
                     "--splits", "test"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"keras-mtanet: error: {re.escape(str(out))}: cannot write in folder "
                        rf"{re.escape(str(read_only_folder))} \((Read-only file system|Permission denied)\)\n",
                        err), err
    assert list(read_only_folder.iterdir()) == []


def test_teach_output_messages_say_what_is_expected(tmp_path, capsys, monkeypatch):
    write_fake_ferplus(tmp_path / "fer")
    monkeypatch.setattr(landmarker, "FaceLandmarker", StubLandmarker)
    monkeypatch.setattr(landmarker, "check_bundle", lambda path: b"")
    folder = tmp_path / "o"
    folder.mkdir()
    command = ["teach", "--data", str(tmp_path / "fer"), "--teacher-model", "stub.task", "--splits", "test"]
    assert cli.main(command + ["--output", str(folder)]) == 2
    assert capsys.readouterr().err == (f"keras-mtanet: error: {folder}: is a folder; give the teacher label "
                                       "file's name\n")
    stray = tmp_path / "labels.csv"
    stray.write_text("mine\n")
    assert cli.main(command + ["--output", str(stray)]) == 2
    assert capsys.readouterr().err == (
        f"keras-mtanet: error: {stray}: exists, but labels.csv.json (the settings file teach writes beside its label "
        "cache) does not, so it is no label cache teach can add to; choose another --output\n")
    assert stray.read_text() == "mine\n" and not any(folder.iterdir())


@needs_teacher
def test_teach_prints_no_native_mediapipe_lines_without_verbose(tmp_path, capfd):
    from keras_mtanet.cli import main
    from keras_mtanet.inference import native_logs

    root = real_test_split(tmp_path / "fer", 3)
    out = tmp_path / "labels.csv"
    assert main(["teach", "--data", str(root), "--teacher-model", str(BUNDLE), "--output", str(out),
                 "--splits", "test"]) == 0
    err = capfd.readouterr().err  # MediaPipe writes to file descriptor 2
    native = [line for line in err.splitlines() if native_logs.NATIVE_LOG_LINE.match(line) and "cuInit" not in line]
    assert native == [] and out.is_file()
