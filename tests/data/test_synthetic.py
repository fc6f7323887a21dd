import numpy as np
import pytest

from keras_mtanet.data import affwild2, cartoon, synthetic
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES


def test_generation_is_deterministic_per_seed():
    a_img, a_lab = synthetic.generate(20, size=32, seed=3, frames_per_video=10)
    b_img, b_lab = synthetic.generate(20, size=32, seed=3, frames_per_video=10)
    c_img, _ = synthetic.generate(20, size=32, seed=4, frames_per_video=10)
    np.testing.assert_array_equal(a_img, b_img)
    for key in a_lab:
        np.testing.assert_array_equal(a_lab[key], b_lab[key])
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (20, 32, 32, 3)
    assert np.all(np.abs(a_lab["va"]) <= 1) and set(np.unique(a_lab["au"])) <= {0.0, 1.0}
    assert a_lab["expr"].min() >= 0 and a_lab["expr"].max() < len(EXPR_NAMES)


def neutral_state(**changes):
    state = cartoon.FrameState(au=np.zeros(len(AU_NAMES), np.float32), expression=0,
                                 expression_intensity=0.0, valence=0.0, arousal=0.0)
    for key, value in changes.items():
        if key in AU_NAMES:
            state.au[AU_NAMES.index(key)] = value
        else:
            setattr(state, key, value)
    return state


def changed_rows(a, b):
    """Rows (0 = top) where two renders differ."""
    return np.flatnonzero(np.abs(a.astype(float) - b.astype(float)).sum(axis=(1, 2)) > 1e-3)


@pytest.mark.parametrize("au,region", [("AU1", "brows"), ("AU2", "brows"), ("AU4", "brows"),
                                       ("AU6", "cheeks"), ("AU12", "mouth"), ("AU15", "mouth"),
                                       ("AU20", "mouth"), ("AU25", "mouth")])
def test_each_action_unit_changes_only_its_facial_region(au, region):
    identity = cartoon.random_identity(np.random.default_rng(0))
    base = cartoon.render_face(neutral_state(), identity, size=112)
    moved = cartoon.render_face(neutral_state(**{au: 1.0}), identity, size=112)
    rows = changed_rows(base, moved)
    assert rows.size > 0, f"{au} changed nothing"
    # Face coordinates y in [-1, 1] map to rows through the 1.3x zoom: row = 56 + 56 * 1.3 * y.
    bounds = {"brows": (-0.55, -0.05), "cheeks": (-0.22, 0.3), "mouth": (0.15, 0.8)}[region]
    lo, hi = (56 + 56 * 1.3 * b for b in bounds)
    assert rows.min() >= lo and rows.max() <= hi, (au, rows.min(), rows.max(), lo, hi)


def test_parted_lips_darken_the_mouth_and_smiles_lift_its_corners():
    identity = cartoon.random_identity(np.random.default_rng(1))
    closed = cartoon.render_face(neutral_state(), identity, 112).mean(axis=2)
    parted = cartoon.render_face(neutral_state(AU25=1.0), identity, 112).mean(axis=2)
    assert (parted < 90).sum() > (closed < 90).sum() + 20
    smile = cartoon.render_face(neutral_state(AU12=1.0), identity, 112)
    frown = cartoon.render_face(neutral_state(AU15=1.0), identity, 112)
    lip = identity.skin * np.array([0.85, 0.5, 0.5])

    def lip_rows(img, cols):
        hit = np.abs(img[:, cols].astype(float) - lip).sum(axis=2) < 30
        return np.flatnonzero(hit.any(axis=1))

    # Mouth corners (outer columns of the mouth) sit higher (smaller row) for a smile than a frown.
    corners = slice(56 - 18, 56 - 12)
    assert lip_rows(smile, corners).mean() < lip_rows(frown, corners).mean() - 3


def test_arousal_opens_the_eyes():
    identity = cartoon.random_identity(np.random.default_rng(2))
    calm = cartoon.render_face(neutral_state(arousal=-1.0), identity, 112)
    excited = cartoon.render_face(neutral_state(arousal=1.0), identity, 112)
    eye_white = lambda img: (img.min(axis=2) > 235)[20:60].sum()  # noqa: E731
    assert eye_white(excited) > 1.5 * eye_white(calm)


def test_write_affwild2_layout(tmp_path):
    truth = synthetic.write_affwild2(tmp_path, train_videos=5, val_videos=2, frames=12, size=32, seed=1,
                                     missing_crop_rate=0.1)
    train = truth["Training_Set"]
    assert "train_004_left" in train and "train_004_right" in train
    assert set(truth["Validation_Set"]) == {"val_000", "val_001_left", "val_001_right"}
    assert train["train_003"]["tasks"] != ("va", "au", "expr")  # partial task coverage
    for video, info in train.items():
        for task in ("va", "au", "expr"):
            path = tmp_path / "annotations" / affwild2.TASK_DIRS[task] / "Training_Set" / f"{video}.txt"
            assert path.exists() == (task in info["tasks"])
            if path.exists():
                lines = path.read_text().splitlines()
                assert lines[0] == ",".join(affwild2.HEADERS[task]) and len(lines) == 13
        crops = sorted(p.name for p in (tmp_path / "cropped_aligned" / video).iterdir())
        assert crops == [f"{i:05d}.jpg" for i in range(1, 13) if i not in info["missing"]]
    assert sum(len(info["missing"]) for info in train.values()) > 0


def old_annotation_text(task, values):
    """The annotation file text as synthetic.py wrote it before ``data.affwild2`` did (copied formatting)."""
    lines = [",".join(affwild2.HEADERS[task])]
    for v in values:
        if task == "va":
            lines.append("%.6g,%.6g" % (v[0], v[1]))
        elif task == "expr":
            lines.append(str(int(v)))
        else:
            lines.append(",".join(str(int(x)) for x in v))
    return "\n".join(lines) + "\n"


def test_written_set_reads_back_and_keeps_its_bytes(tmp_path):
    truth = synthetic.write_affwild2(tmp_path, train_videos=3, val_videos=2, frames=10, size=24, seed=11,
                                     missing_crop_rate=0.15, unannotated_rate=0.3)
    codes = {"va": -5.0, "au": -1.0, "expr": -1}
    for split, videos in truth.items():
        index = affwild2.read_index(tmp_path, split)
        annotations = affwild2.read_annotations(tmp_path, split)
        for video, info in videos.items():
            for task in info["tasks"]:
                values = annotations[task][video]
                path = tmp_path / "annotations" / affwild2.TASK_DIRS[task] / split / f"{video}.txt"
                # Byte for byte what the formatting before the move wrote for the values read back.
                assert path.read_text() == old_annotation_text(task, values)
                # Every line is the true label or, inside the one unannotated run, the unannotated code.
                masked = np.all(values == codes[task], axis=tuple(range(1, values.ndim)))
                np.testing.assert_allclose(values[~masked], info["labels"][task][~masked], atol=5e-6)
                runs = np.flatnonzero(masked)
                assert len(runs) == 0 or len(runs) == runs[-1] - runs[0] + 1 == 3
            rows = [i for i, v in enumerate(index.videos) if v == video]
            assert [index.frames[i] for i in rows] == [f for f in range(1, 11) if f not in info["missing"]]
    assert sum(len(v["missing"]) for s in truth.values() for v in s.values()) > 0
    assert any(np.any(v == -1) for v in affwild2.read_annotations(tmp_path, "train")["expr"].values())


def test_video_in_chunks_is_the_same_video():
    seed = np.random.SeedSequence([3, 7])
    frames, labels = synthetic.render_video(seed, 23, 32)
    chunks = list(synthetic.render_video_chunks(seed, 23, 32, chunk=5))
    assert [len(f) for f, _ in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([f for f, _ in chunks]), frames)
    for key in labels:
        np.testing.assert_array_equal(np.concatenate([lab[key] for _, lab in chunks]), labels[key])
