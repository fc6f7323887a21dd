import json

import numpy as np
import pytest
from conftest import tiny_model

from keras_mtanet import abaw_scores, evaluate
from keras_mtanet.cli import main
from keras_mtanet.data import affwild2, datasets, synthetic
from keras_mtanet.errors import DataError
from keras_mtanet.labels import AU_NAMES
from keras_mtanet.presets import card
from keras_mtanet.presets import folder as preset_folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("aw")
    synthetic.write_affwild2(root, train_videos=0, val_videos=3, frames=15, size=32, seed=3, missing_crop_rate=0.15)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = tiny_model()
    rng = np.random.default_rng(5)
    model.set_weights([w + rng.normal(0, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    meta = preset_folder.preset_metadata(model, "random weights (test)")

    return preset_folder.save_preset(model, tmp_path_factory.mktemp("m") / "run", meta, card.model_card_text(meta, "t"))


def read_back(root, out_dir):
    """Annotations and the written prediction files, task by task, read independently of evaluate."""
    y_true, y_pred = {}, {}
    for task, folder in (("va", "VA_Set"), ("expr", "EXPR_Set"), ("au", "AU_Set")):
        truths, preds = [], []
        for ann in sorted((root / "annotations" / folder / "Validation_Set").glob("*.txt")):
            pred_file = out_dir / folder / ann.name
            ann_lines, pred_lines = ann.read_text().splitlines(), pred_file.read_text().splitlines()
            assert pred_lines[0] == ann_lines[0] and len(pred_lines) == len(ann_lines), pred_file
            truths.append(affwild2.parse_annotation_file(ann, task))
            preds.append(affwild2.parse_annotation_file(pred_file, task))
        if truths:
            y_true[task], y_pred[task] = np.concatenate(truths), np.concatenate(preds)
    return y_true, y_pred


def test_cli_evaluate_writes_official_files_and_matching_scores(dataset, model_dir, tmp_path, capsys):
    out, metrics = tmp_path / "pred", tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(dataset), "--predictions", str(out),
                 "--metrics", str(metrics)]) == 0
    scores = json.loads(metrics.read_text())
    recomputed = abaw_scores(*read_back(dataset, out))
    for key, value in recomputed.items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key
    index = affwild2.read_index(dataset, "val")
    assert scores["frames"] == index.stats["annotated_frames"] and scores["predicted_frames"] == len(index)
    assert index.stats["missing_crops"] > 0
    assert "scores: ccc_valence" in capsys.readouterr().out


def test_frames_without_crop_take_the_nearest_prediction():
    values = np.array([[2.0], [5.0], [9.0]])
    filled = evaluate.fill_nearest(10, [2, 5, 9], values)
    # frame: 1->2, 2->2, 3->2, 4->5, 5->5, 6->5, 7->5 (tie goes to the earlier frame), 8->9, 9->9, 10->9
    np.testing.assert_array_equal(filled[:, 0], [2, 2, 2, 5, 5, 5, 5, 9, 9, 9])


def test_prediction_files_match_hand_written_lines(tmp_path):
    labels = {"va": np.zeros((3, 2), np.float32), "au": np.zeros((3, 8), np.float32), "expr": np.zeros(3, np.int32)}
    rows = {"va": {"v": (labels["va"], np.array([[0.1234564, -1.0], [0.5, 0.25], [-4e-7, 1.0]], np.float32))},
            "au": {"v": (labels["au"], np.array([[1, 0, 0, 1, 1, 0, 0, 1], [0] * 8, [1] * 8], np.float32))},
            "expr": {"v": (labels["expr"], np.array([6, 0, 3], np.int32))}}
    evaluate.write_prediction_files(rows, tmp_path)
    assert (tmp_path / "VA_Set/v.txt").read_bytes() == \
        b"valence,arousal\n0.123456,-1.000000\n0.500000,0.250000\n-0.000000,1.000000\n"
    assert (tmp_path / "AU_Set/v.txt").read_bytes() == \
        b"AU1,AU2,AU4,AU6,AU12,AU15,AU20,AU25\n1,0,0,1,1,0,0,1\n0,0,0,0,0,0,0,0\n1,1,1,1,1,1,1,1\n"
    assert (tmp_path / "EXPR_Set/v.txt").read_bytes() == \
        b"Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise\n6\n0\n3\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["AU_Set", "EXPR_Set", "VA_Set", "v.txt", "v.txt", "v.txt"]


def test_a_malformed_annotation_line_is_one_line_naming_file_and_line(dataset, model_dir, tmp_path, capsys):
    import shutil

    root = tmp_path / "aw"
    shutil.copytree(dataset, root)
    bad = sorted((root / "annotations/AU_Set/Validation_Set").glob("*.txt"))[0]
    lines = bad.read_text().splitlines()
    lines[4] = "1,0,1"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "--model", str(model_dir), "--data", str(root), "--predictions",
                 str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"{bad}:5: expected 8 comma-separated value(s), got '1,0,1'\n") and err.count("\n") == 1
    assert not (tmp_path / "p").exists()


def test_metrics_behind_a_file_is_one_line_naming_the_folder(tmp_path):
    (tmp_path / "runs").write_text("a file")
    with pytest.raises(DataError, match=f"^{tmp_path / 'runs'}: cannot create folder \\([^\n]+\\)$"):
        evaluate.write_metrics(tmp_path / "runs" / "scores.json", {"va_score": 0.5})


def test_smoothing_reports_both_and_a_corrupt_crop_keeps_alignment(dataset, model_dir, tmp_path):
    from keras_mtanet import load_pretrained

    model = load_pretrained(str(model_dir))
    index = affwild2.read_index(dataset, "val")
    victim = index.paths[4]
    original = open(victim, "rb").read()
    try:
        with open(victim, "r+b") as f:  # passes the marker check, fails to decode
            f.seek(4)
            f.write(b"\0" * 300)
        outputs, done = evaluate.predict_frames(model, affwild2.read_index(dataset, "val"), batch_size=4)
        assert done.sum() == len(index) - 1 and not done[4]
        direct = model.predict(np.stack([datasets.decode_and_resize(p, 32).numpy()
                                         for p in index.paths[5:9]]), verbose=0)
        np.testing.assert_allclose(outputs["va"][5:9], direct["va"], atol=1e-5)
        scores = evaluate.evaluate(model, dataset, "val", tmp_path / "p", smooth="5f", log=lambda *a: None)
    finally:
        open(victim, "wb").write(original)
    assert scores["smooth_frames"] == 5 and set(scores["unsmoothed"]) == set(abaw_scores(
        *read_back(dataset, tmp_path / "p")))
    assert scores["predicted_frames"] == len(index) - 1


@pytest.mark.safety
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


def test_prediction_files_follow_the_presets_rules_and_the_challenge_rule_is_reported_beside(dataset, tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(6)  # small noise: probabilities near 0.5, where the rules make a difference
    model.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype) for w in model.get_weights()])
    prior = {"Neutral": 0.5, "Anger": 0.2, "Disgust": 0.01, "Fear": 0.04, "Happiness": 0.1, "Sadness": 0.1,
             "Surprise": 0.05}
    rules = {"au_thresholds": dict(zip(AU_NAMES, (0.3, 0.4, 0.5, 0.6, 0.7, 0.45, 0.55, 0.65))),
             "expression_training_prior": prior, "expression_prior_power": 1.0, "expression_prior": "balanced"}
    meta = preset_folder.preset_metadata(model, "random weights (test)", extra=rules)
    folder = preset_folder.save_preset(model, tmp_path / "rules", meta, card.model_card_text(meta, "t"))
    ruled, plain = tmp_path / "ruled", tmp_path / "plain"
    assert main(["evaluate", "--model", str(folder), "--data", str(dataset), "--predictions", str(ruled),
                 "--metrics", str(tmp_path / "ruled.json")]) == 0
    assert main(["evaluate", "--model", str(folder), "--data", str(dataset), "--predictions", str(plain),
                 "--metrics", str(tmp_path / "plain.json"), "--au-threshold", "0.5", "--expression-prior",
                 "training"]) == 0
    ruled_scores = json.loads((tmp_path / "ruled.json").read_text())
    plain_scores = json.loads((tmp_path / "plain.json").read_text())
    # The files are scored as written; the challenge rule's scores are those of the run that used it.
    for key, value in abaw_scores(*read_back(dataset, ruled)).items():
        assert ruled_scores[key] == pytest.approx(value, abs=1e-9), key
    for key, value in abaw_scores(*read_back(dataset, plain)).items():
        assert ruled_scores["challenge_rule"][key] == pytest.approx(value, abs=1e-9), key
        assert plain_scores[key] == pytest.approx(value, abs=1e-9), key
    assert ruled_scores["decisions"]["expression_prior"] == "balanced"
    assert plain_scores["decisions"]["au_threshold"] == "0.5"
    # The written AU rows differ where the thresholds do (the model is the same).
    _, ruled_pred = read_back(dataset, ruled)
    _, plain_pred = read_back(dataset, plain)
    assert not np.array_equal(ruled_pred["au"], plain_pred["au"])
    assert not np.array_equal(ruled_pred["expr"], plain_pred["expr"])
