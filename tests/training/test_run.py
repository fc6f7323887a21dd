import csv
import json
import re

import numpy as np
import pytest

from keras_mtanet import load_pretrained
from keras_mtanet.errors import UsageError
from keras_mtanet.presets import registry
from keras_mtanet.training import recipe
from keras_mtanet.training import run as train

TINY_RECIPE = {"backbone": "se_resnet18", "input_size": 32, "stack_blocks": [1, 1, 1, 1], "width": 0.25,
               "epochs": 2, "batch_size": 16, "optimizer": "adamw", "learning_rate": 0.003,
               "schedule": "cosine", "task_weighting": "uncertainty",
               "synthetic": {"train_videos": 2, "val_videos": 1, "frames": 12, "size": 32}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    (root / "recipe.json").write_text(json.dumps(TINY_RECIPE))
    config = recipe.load_config(root / "recipe.json")
    scores = train.train(config, root / "data", "synthetic", root / "run", verbose=0, tensorboard=False,
                         log=lambda *a: None)
    return root, config, scores


def test_training_writes_a_loadable_preset_with_its_metrics(run):
    root, config, scores = run
    out = root / "run"
    model = load_pretrained(str(out))
    meta = model.metadata
    assert meta["metrics"] == {k: round(float(v), 4) for k, v in scores.items()}
    assert set(scores) == {"ccc_valence", "ccc_arousal", "va_score", "expr_f1", "expr_acc", "expr_score",
                           "au_f1", "au_acc", "au_score"}
    assert "synthetic" in meta["training_data"] and meta["training_config"]["epochs"] == 2
    assert model.get_config()["stack_blocks"] == [1, 1, 1, 1] and model.image_shape == (32, 32, 3)
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert "val_abaw_total" in rows[0] and "expr_loss" in rows[0]
    best = max(rows, key=lambda r: float(r["val_abaw_total"]))
    kept = [p.name for p in (out / "checkpoints").iterdir()]
    assert kept == [f"best-e{int(best['epoch']):04d}.weights.h5"] and not (out / "backup").exists()
    # The preset holds the best epoch's weights by the validation ABAW total.
    total = scores["va_score"] + scores["expr_score"] + scores["au_score"]
    assert total == pytest.approx(float(best["val_abaw_total"]), abs=1e-4)


def test_a_finished_run_is_not_trained_again_or_overwritten(run):
    root, config, scores = run
    before = {p: p.stat().st_mtime_ns for p in (root / "run").rglob("*")}
    said = []
    again = train.train(config, root / "data", "synthetic", root / "run", log=said.append)
    assert again == {k: round(float(v), 4) for k, v in scores.items()}
    assert len(said) == 1 and "already finished" in said[0]
    assert {p: p.stat().st_mtime_ns for p in (root / "run").rglob("*")} == before
    with pytest.raises(UsageError, match=r"used other settings \(epochs 2 -> 3\)"):
        train.train({**config, "epochs": 3}, root / "data", "synthetic", root / "run", log=lambda *a: None)
    with pytest.raises(UsageError, match="nothing to resume"):
        train.train(config, root / "data", "synthetic", root / "fresh", resume=True, log=lambda *a: None)


def test_config_errors(tmp_path):
    (tmp_path / "bad.json").write_text('{"epochs": 1, "learning_rat": 0.1}')
    with pytest.raises(UsageError, match="bad.json: unknown config key.*learning_rat"):
        recipe.load_config(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UsageError, match="broken.json: not valid JSON"):
        recipe.load_config(tmp_path / "broken.json")
    assert recipe.load_config(None, epochs=3)["epochs"] == 3
    assert recipe.load_config(None)["optimizer"] == "sgd"  # the authors' recipe by default
    (tmp_path / "both.json").write_text('{"strategy": "mirrored", "distribution": "data-parallel"}')
    with pytest.raises(UsageError, match="both.json: distribution data-parallel .* and strategy mirrored .* exclude"):
        recipe.load_config(tmp_path / "both.json")
    with pytest.raises(UsageError, match="training config: distribution must be one of null, data-parallel"):
        recipe.load_config(None, distribution="pipeline")
    assert recipe.STRATEGIES == ("default", "mirrored", "multiworker") and recipe.DISTRIBUTIONS == ("data-parallel",)


def test_the_default_recipe_sgd_with_polynomial_decay_trains_and_writes_a_preset(tmp_path):
    import types

    import keras

    from keras_mtanet.training import recipe

    # The authors' recipe as load_config() gives it (SGD, Nesterov momentum 0.9, lr 1e-3, weight decay 1e-4,
    # polynomial decay to 1e-5, uncertainty task weights, augmentation); only the network and the data are tiny.
    config = recipe.load_config(None, backbone="se_resnet18", input_size=32, stack_blocks=[1, 1, 1, 1], width=0.25,
                               epochs=2, batch_size=16, synthetic=TINY_RECIPE["synthetic"])
    assert (config["optimizer"], config["schedule"], config["task_weighting"]) == ("sgd", "polynomial", "uncertainty")
    model = recipe.build_model(config)
    recipe.compile_model(model, config, types.SimpleNamespace(au=np.eye(8, dtype="float32")), steps_per_epoch=5)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    assert optimizer.momentum == 0.9 and optimizer.weight_decay == 1e-4
    schedule = keras.saving.deserialize_keras_object(optimizer.get_config()["learning_rate"])
    # Linear (power 1) decay from 1e-3 to 1e-3 * 0.01 over 2 epochs of 5 steps, then constant.
    for step, expected in ((0, 1e-3), (5, 0.5 * (1e-3 + 1e-5)), (10, 1e-5), (25, 1e-5)):
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)

    scores = train.train(config, tmp_path / "data", "synthetic", tmp_path / "run", verbose=0, tensorboard=False,
                         log=lambda *a: None)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and all(np.isfinite(float(r["loss"])) for r in rows)
    preset = load_pretrained(str(tmp_path / "run"))
    assert preset.metadata["training_config"] == config
    assert preset.metadata["metrics"] == {k: round(float(v), 4) for k, v in scores.items()}
    out = preset.predict(np.full((2, 32, 32, 3), 128, "float32"), verbose=0)
    assert all(np.isfinite(v).all() for v in out.values())


def test_the_multiworker_workaround_applies_under_that_strategy_only():
    from keras_mtanet import MTANet
    from keras_mtanet.training import recipe
    from keras_mtanet.training.tf_distribute import MultiWorkerFit

    config = recipe.load_config(None, backbone="se_resnet18", input_size=32, stack_blocks=[1, 1, 1, 1], width=0.25)
    assert type(recipe.build_model(config)) is MTANet
    from keras_mtanet.training.tf_distribute import MultiWorkerMTANet

    model = recipe.build_model({**config, "strategy": "multiworker"}, MultiWorkerMTANet)  # as train() builds it
    assert isinstance(model, MultiWorkerFit) and isinstance(model, MTANet)
    assert model.get_config() == recipe.build_model(config).get_config()  # presets save the same config


def test_au_pos_weight_by_hand():
    au = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [-1, -1]], "float32")
    np.testing.assert_allclose(recipe.au_pos_weight(au), [np.sqrt(3 / 1), np.sqrt(3 / 1)])
    assert registry.DEFAULT_PRESET in registry.list_presets()


def test_killed_run_resumes_with_the_same_command_and_ends_after_the_same_epochs(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    recipe = {**TINY_RECIPE, "epochs": 6, "task_weighting": "fixed"}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    command = [sys.executable, "-m", "keras_mtanet", "train", "--config", str(tmp_path / "recipe.json"), "--format",
               "synthetic", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--no-tensorboard"]
    log = tmp_path / "run" / "log.csv"
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None:
            # Two finished epochs: the first one's backup is complete (the log row of an epoch is written just
            # before its backup, so a kill right after one row can legitimately redo that epoch).
            if log.exists() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before it could be killed"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert (tmp_path / "run" / "backup").exists() and not (tmp_path / "run" / "metadata.json").exists()
    killed_after = len(log.read_text().splitlines()) - 1

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming the interrupted run" in second.stdout
    with open(log) as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == list(range(6))  # every epoch once, none repeated
    assert epochs[killed_after] >= 1  # the second run did not start over
    assert not (tmp_path / "run" / "backup").exists()
    assert load_pretrained(str(tmp_path / "run")).metadata["training_config"]["epochs"] == 6


@pytest.mark.parametrize("overrides", [{"mixed_precision": True}, {"strategy": "mirrored"}])
def test_mixed_precision_and_mirrored_strategy_train(tmp_path, overrides):
    import keras

    (tmp_path / "recipe.json").write_text(json.dumps({**TINY_RECIPE, "epochs": 1}))
    config = recipe.load_config(tmp_path / "recipe.json", **overrides)
    scores = train.train(config, tmp_path / "data", "synthetic", tmp_path / "run", verbose=0, tensorboard=False,
                         log=lambda *a: None)
    assert np.isfinite(scores["au_acc"])
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored
    model = load_pretrained(str(tmp_path / "run"))
    assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)["va"].dtype == np.float32


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish_all(processes, timeout):
    """The combined output of each of ``processes`` (started together) once all have ended, each asserted to
    have exited 0; any still running when one fails or times out is killed."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, out in zip(processes, outputs):
        assert process.returncode == 0, out[-3000:]
    return outputs


def test_two_workers_train_together_and_only_the_chief_writes(tmp_path):
    import os
    import subprocess
    import sys

    config = {**TINY_RECIPE, "epochs": 1, "task_weighting": "fixed"}
    (tmp_path / "recipe.json").write_text(json.dumps(config))
    synthetic_root = tmp_path / "data"
    train.read_split_indexes(synthetic_root, "synthetic", recipe.load_config(tmp_path / "recipe.json"))
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    command = [sys.executable, "-m", "keras_mtanet", "train", "--config", str(tmp_path / "recipe.json"), "--format",
               "synthetic", "--data", str(synthetic_root), "--output", str(tmp_path / "run"), "--strategy",
               "multiworker", "--no-tensorboard"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                            "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    outputs = finish_all(workers, timeout=300)
    for out in outputs:
        assert "2 replica(s) in sync, 2 worker(s) joined" in out
    assert "preset written to" in outputs[0] and "worker 1 done; the chief wrote the preset" in outputs[1]
    model = load_pretrained(str(tmp_path / "run"))
    assert model.metadata["training_config"]["strategy"] == "multiworker"
    with open(tmp_path / "run" / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0"]  # one log, written by the chief alone


def test_multiworker_without_tf_config_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from keras_mtanet.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--data", str(tmp_path), "--format", "synthetic", "--output", str(tmp_path / "r"),
                 "--strategy", "multiworker"]) == 2
    assert capsys.readouterr().err.strip() == ("keras-mtanet: error: --strategy multiworker needs TF_CONFIG (the "
                                              "cluster and this worker's task)")


def test_init_copies_every_matching_layer_and_adopts_the_architecture(run, tmp_path):
    from conftest import tiny_model

    source = tiny_model(color_mode="grayscale")  # head_filters 32
    target = tiny_model(head_filters=16, input_shape=(48, 48, 3))
    copied, skipped = recipe.init_weights(target, source)
    # 16 head filters cannot take the 32-filter head convolutions, nor the task layers over their features;
    # everything else can (no weight depends on the input size or the colour mode).
    assert sorted(skipped) == ["au", "expr", "head_gap_conv", "head_gmp_conv", "va"]
    assert copied == sum(1 for layer in target.layers if layer.weights) - 5
    for layer in target.layers:
        if layer.weights and layer.name not in skipped:
            for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)

    root, config, _ = run
    said = []
    train.train({**config, "epochs": 1, "width": 1.0, "learning_rate": 1e-9}, root / "data", "synthetic",
                tmp_path / "ft", verbose=0, tensorboard=False, log=said.append, init=str(root / "run"))
    assert "architecture from the --init preset: width 0.25" in said
    assert any(line.startswith(f"initialised from {root / 'run'}: ") and "layers copied" in line for line in said)
    tuned, original = load_pretrained(str(tmp_path / "ft")), load_pretrained(str(root / "run"))
    assert tuned.get_config()["width"] == 0.25
    # lr 1e-9: one epoch barely moves the trained weights (batch-norm statistics do move), so the copied weights
    # are what the new preset holds; an untrained start would differ everywhere.
    for name in ("stem_conv", "stack4_block1_2_conv", "va", "expr"):
        for a, b in zip(tuned.get_layer(name).get_weights(), original.get_layer(name).get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_grayscale_models_see_colour_input_as_grey():
    from conftest import tiny_model

    model = tiny_model(color_mode="grayscale")
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (3, 32, 32, 3)).astype("float32")
    grey = (colour @ np.array([0.299, 0.587, 0.114], "float32"))[..., None].repeat(3, axis=-1)
    a, b = model.predict(colour, verbose=0), model.predict(grey, verbose=0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert type(model).from_config(model.get_config()).color_mode == "grayscale"


def test_resume_refuses_annotations_edited_in_place(tmp_path, monkeypatch):
    import hashlib

    from keras_mtanet.data import synthetic

    data, out = tmp_path / "data", tmp_path / "run"
    synthetic.write_affwild2(data, 2, 1, 6, 32, seed=0, two_person_video=False)
    (tmp_path / "recipe.json").write_text(json.dumps(TINY_RECIPE))
    config = recipe.load_config(tmp_path / "recipe.json")
    class Stop(Exception):
        pass

    def stop_once_data_is_read(line):
        said.append(line)
        if line.startswith("data:"):
            raise Stop

    # An interrupted run (killed, so nothing cleans up): the records its command writes once the data is read,
    # and a backup that verifies.
    monkeypatch.setattr(train, "remove_unstarted_run", lambda output: False)
    said = []
    with pytest.raises(Stop):
        train.train(config, data, "affwild2", out, log=stop_once_data_is_read)
    (out / "backup").mkdir()
    weights = out / "backup" / "latest.weights.h5"
    weights.write_bytes(b"weights of epoch 1")
    (out / "backup" / "latest.json").write_text(json.dumps(
        {"epoch": 1, "batch": 0, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}))
    record = (out / "run.json").read_bytes()

    # Same paths and frame counts, one label changed.
    labels = sorted((data / "annotations" / "EXPR_Set" / "Training_Set").glob("*.txt"))[0]
    original = labels.read_text()
    lines = original.splitlines()
    lines[1] = "5" if lines[1].strip() != "5" else "2"
    labels.write_text("\n".join(lines) + "\n")
    said = []
    with pytest.raises(UsageError, match=r"the interrupted run there used other settings \(annotation file "
                                         r"contents changed \(annotations/EXPR_Set/Training_Set/"
                                         rf"{labels.name}\)\)"):
        train.train(config, data, "affwild2", out, log=stop_once_data_is_read)
    assert (out / "run.json").read_bytes() == record and weights.read_bytes() == b"weights of epoch 1"
    # The very same annotations resume.
    labels.write_text(original)
    said = []
    with pytest.raises(Stop):
        train.train(config, data, "affwild2", out, log=stop_once_data_is_read)
    assert said[0] == f"resuming the interrupted run in {out}"


def test_synthetic_data_are_never_generated_into_a_users_folder(tmp_path, capsys):
    from keras_mtanet.cli import main
    from keras_mtanet.data import synthetic

    (tmp_path / "recipe.json").write_text(json.dumps({**TINY_RECIPE, "epochs": 1}))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["train", "--config", str(tmp_path / "recipe.json"), "--format", "synthetic", "--data", str(mine),
                 "--output", str(tmp_path / "run"), "--no-tensorboard"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"keras-mtanet: error: {mine}: is not empty and holds no synthetic data set (no .keras_mtanet_synthetic); "
        "--format synthetic generates its data into a new or empty folder (choose another --data)")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    # A new or empty folder gets the data and the marker; the same folder is used again without complaint.
    config = recipe.load_config(tmp_path / "recipe.json")
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "new", tmp_path / "empty", tmp_path / "new"):
        train_index, _, _ = train.read_split_indexes(root, "synthetic", config)
        assert len(train_index) > 0 and (root / synthetic.MARKER).is_file()


def test_a_read_only_output_is_one_line(tmp_path, capsys, read_only_folder):
    from keras_mtanet.cli import main

    (tmp_path / "recipe.json").write_text(json.dumps({**TINY_RECIPE, "epochs": 1}))
    for output in (read_only_folder / "run", read_only_folder):
        assert main(["train", "--config", str(tmp_path / "recipe.json"), "--format", "synthetic", "--data",
                     str(tmp_path / "data"), "--output", str(output), "--no-tensorboard"]) == 2
        err = capsys.readouterr().err
        assert re.fullmatch(rf"keras-mtanet: error: {re.escape(str(output))}: cannot write "
                            r"\((Read-only file system|Permission denied)\)\n", err), err
    assert list(read_only_folder.iterdir()) == []


def test_a_full_disk_while_training_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import keras

    from keras_mtanet.cli import main

    def full(self, filepath, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    monkeypatch.setattr(keras.Model, "save_weights", full)
    (tmp_path / "recipe.json").write_text(json.dumps({**TINY_RECIPE, "epochs": 1}))
    assert main(["train", "--config", str(tmp_path / "recipe.json"), "--format", "synthetic", "--data",
                 str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--no-tensorboard"]) == 2
    assert capsys.readouterr().err == (f"keras-mtanet: error: {tmp_path / 'run'}: cannot write (No space left on "
                                       "device); the same command resumes the run once there is room\n")


@pytest.mark.parametrize("data_format", ["genki4k", "facial_expressions"])
def test_train_reads_the_real_face_sets_by_their_train_and_valid_splits(data_format, tmp_path):
    import cv2

    from keras_mtanet.data import facial_expressions, genki4k

    rng = np.random.default_rng(0)
    images = [cv2.imencode(".jpg", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))[1].tobytes() for _ in range(30)]
    root = tmp_path / data_format
    if data_format == "genki4k":
        genki4k.write_layout(root, rng.integers(0, 2, 30), images, test=(1, 2, 3))
    else:
        (root / "images").mkdir(parents=True)
        names = [f"P{i}_0001.jpg" for i in range(30)]  # 30 identities: valid gets those with CRC-32 0 mod 10
        for name, data in zip(names, images):
            (root / "images" / name).write_bytes(data)
        emotions = ["neutral", "happiness", "sadness", "anger", "surprise"]
        (root / "legend.csv").write_text("image,emotion,contributor\n" + "".join(
            f"{n},{emotions[i % 5]},1\n" for i, n in enumerate(names)))
        (root / "test.csv").write_text("image\nP1_0001.jpg\nP2_0001.jpg\n")
    reader = genki4k if data_format == "genki4k" else facial_expressions
    train_index, valid_index, described = train.read_split_indexes(root, data_format, recipe.load_config(None))
    assert len(train_index) == len(reader.read_index(root, "train")) and len(valid_index) > 0
    assert "validated on its valid split" in described
    config = recipe.load_config(None, **{**{k: v for k, v in TINY_RECIPE.items() if k != "synthetic"}, "epochs": 1})
    scores = train.train(config, root, data_format, tmp_path / "run", verbose=0, tensorboard=False, log=lambda *a: None)
    import math

    labelled = "au_score" if data_format == "genki4k" else "expr_score"
    assert [k for k in ("va_score", "expr_score", "au_score") if math.isfinite(scores[k])] == [labelled]
    assert (tmp_path / "run" / "model.weights.h5").is_file()  # the best epoch is found on the labelled task alone
