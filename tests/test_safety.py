"""Presets, configs, run folders and export paths are untrusted input: nothing outside what the user handed over is
read, deleted or replaced, and every problem is one line."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model
from hub_server import HubServer

from keras_mtanet import PresetError, export, files, load_pretrained
from keras_mtanet.cli import main
from keras_mtanet.errors import DataError, UsageError
from keras_mtanet.presets import card, checks, registry
from keras_mtanet.presets import folder as preset_folder
from keras_mtanet.training import callbacks, recipe, run_folder
from keras_mtanet.training import run as train


def one_line(info):
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def make_preset(folder, **model_overrides):
    model = tiny_model(**model_overrides)
    meta = preset_folder.preset_metadata(model, "nothing (test)")
    return preset_folder.save_preset(model, folder, meta, card.model_card_text(meta, "t"))


def rewrite(folder, name, content, rehash=True):
    """Replace a preset file (text or JSON-able) and, with ``rehash``, list its new sha256 in metadata.json, as
    a hostile publisher would."""
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    if rehash and name != checks.METADATA_FILE:
        meta = json.loads((folder / checks.METADATA_FILE).read_text())
        meta["files"][name] = files.sha256_file(path)
        (folder / checks.METADATA_FILE).write_text(json.dumps(meta))


# --------------------------------------------------------------------------------------------- hostile presets

@pytest.fixture(scope="module")
def server():
    srv = HubServer().start()
    yield srv
    srv.stop()


HOSTILE_NAMES = ["../../../../victim.txt", "/abs/victim.txt", "/dev/zero", ".", "..", "sub/config.json", ""]


@pytest.mark.parametrize("key", HOSTILE_NAMES)
def test_a_hub_preset_cannot_name_files_outside_its_folder(server, tmp_path, key):
    from huggingface_hub import HfApi

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data")
    folder = make_preset(tmp_path / "upload")
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    target = str(victim) if key == "/abs/victim.txt" else key
    meta["files"][target] = "0" * 64  # a mismatch: the old loader deleted the file it named as "corrupt"
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    repo = f"evil/preset{abs(hash(key)) % 10**6}"
    api = HfApi(endpoint=server.endpoint, token="hf_x")
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo)
    cache = tmp_path / "c"  # four "../" from a snapshot folder climb to tmp_path
    with pytest.raises(PresetError) as info:
        load_pretrained(f"hf://{repo}", cache_dir=cache, endpoint=server.endpoint)
    assert "not a plain file name" in one_line(info)
    assert victim.read_text() == "the user's data"
    snapshot = next(cache.glob("models--*/snapshots/*"))
    # none deleted:
    assert sorted(p.name for p in snapshot.iterdir()) == sorted([*checks.PRESET_FILES, registry.PREPROCESSOR_FILE])


def test_links_out_of_a_preset_and_non_regular_files_are_refused(tmp_path):
    folder = make_preset(tmp_path / "p")
    outside = tmp_path / "outside.json"
    shutil.copy(folder / checks.CONFIG_FILE, outside)
    (folder / checks.CONFIG_FILE).unlink()
    (folder / checks.CONFIG_FILE).symlink_to(outside)
    with pytest.raises(PresetError) as info:
        load_pretrained(str(folder))
    assert "links outside the preset folder" in one_line(info)
    assert outside.exists()
    (folder / checks.CONFIG_FILE).unlink()
    (folder / checks.CONFIG_FILE).mkdir()
    with pytest.raises(PresetError) as info:
        load_pretrained(str(folder))
    assert "not a regular file" in one_line(info)


def test_a_corrupt_local_file_is_reported_never_deleted(tmp_path):
    folder = make_preset(tmp_path / "p")
    data = bytearray((folder / checks.WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / checks.WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(PresetError, match=r"model\.weights\.h5: sha256 .* modified"):
        load_pretrained(str(folder))
    assert (folder / checks.WEIGHTS_FILE).read_bytes() == bytes(data)


@pytest.mark.parametrize("change, expected", [
    ({"width": 3.0}, "describes a model of .* weights but model.weights.h5 holds"),
    ({"width": 8.0}, "width must be a number from 0.01 to 4.0"),
    ({"width": 4.0, "backbone": "se_resnet101", "stack_blocks": None},
     "more than the 300,000,000"),
    # 290 M weights, inside that limit, but 6.8 GB resident for one photo: bounded by its activations too.
    ({"width": 3.3, "backbone": "se_resnet50", "stack_blocks": None, "input_shape": [1024, 1024, 3]},
     r"1024 x 1024 px input, width 3.3, needs about 4.2 GiB of activations per image, more than the 1 GiB a "
     "preset may need; refused"),
    ({"head_filters": 33}, "do not belong together"),
    ({"width": "wide"}, "width must be a number"),
    ({"input_shape": [-32, 32, 3]}, "input_shape must be"),
    ({"stack_blocks": [1, 1, 1]}, "stack_blocks must be"),
    ({"backbone": "resnet9000"}, "backbone must be one of"),
    ({"extra_key": 1}, "unknown model config key"),
    ({"num_aus": 5}, "num_aus must be a number from 8 to 8"),
    ({"backbone": {"class_name": "SEResNetBackbone", "config": {}}}, "backbone must be one of"),
    ({"alignment_template": [[0.5, 0.5]] * 3}, "alignment_template must be five"),
])
def test_config_is_checked_against_the_weights_before_a_model_is_built(tmp_path, monkeypatch, change, expected):
    from keras_mtanet.model.task import MTANet

    folder = make_preset(tmp_path / "p")
    config = json.loads((folder / checks.CONFIG_FILE).read_text())
    rewrite(folder, checks.CONFIG_FILE, {**config, **change})

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked config")

    monkeypatch.setattr(MTANet, "from_config", classmethod(no_build))
    with pytest.raises(PresetError, match=expected) as info:
        load_pretrained(str(folder))
    assert one_line(info).startswith(str(folder / checks.CONFIG_FILE))


@pytest.mark.parametrize("trick, expected", [
    ("external", "keeps its values outside the file"),
    ("softlink", "is a link to elsewhere"),
    ("integers", "not float32 weights"),
])
def test_a_weights_file_cannot_read_other_files(tmp_path, trick, expected):
    import h5py

    folder = make_preset(tmp_path / "p")
    secret = tmp_path / "secret.bin"
    with h5py.File(folder / checks.WEIGHTS_FILE, "r+") as f:
        names = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        name = names[0]
        shape, dtype = f[name].shape, f[name].dtype
        secret.write_bytes(np.arange(int(np.prod(shape)), dtype=dtype).tobytes())
        del f[name]
        if trick == "external":  # HDF5 external storage: the values are read from another file
            f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, secret.stat().st_size)])
        elif trick == "softlink":
            f[name] = h5py.SoftLink("/" + names[1])
        else:
            f.create_dataset(name, data=np.zeros(shape, np.int32))
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    meta["files"][checks.WEIGHTS_FILE] = files.sha256_file(folder / checks.WEIGHTS_FILE)
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(PresetError, match=expected) as info:
        load_pretrained(str(folder))
    assert one_line(info).startswith(str(folder / checks.WEIGHTS_FILE))


def test_weights_that_do_not_fit_the_config_give_one_short_line(tmp_path):
    import h5py

    folder = make_preset(tmp_path / "p")
    # The same number of weights, in other shapes: only loading can tell.
    with h5py.File(folder / checks.WEIGHTS_FILE, "r+") as f:
        kernels = []
        f.visititems(lambda name, item: kernels.append(name) if isinstance(item, h5py.Dataset)
                     and item.ndim == 4 and item.shape[2] != item.shape[3] else None)
        values = f[kernels[0]][()]
        del f[kernels[0]]
        f.create_dataset(kernels[0], data=values.reshape(values.shape[:2] + values.shape[:1:-1]))
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    meta["files"][checks.WEIGHTS_FILE] = files.sha256_file(folder / checks.WEIGHTS_FILE)
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as said, pytest.raises(PresetError) as info:
        warnings.simplefilter("always")
        load_pretrained(str(folder))
    shape = values.shape
    assert one_line(info) == (f"{folder / checks.WEIGHTS_FILE}: does not fit the model in config.json (layer "
                              f"stem_conv (Conv2D): weights of shape "
                              f"{shape[:2] + shape[:1:-1]}, the model's are {shape})")
    assert [str(w.message) for w in said] == []  # Keras's multi-line notes on the layers it skipped are dropped


@pytest.mark.parametrize("metadata, expected", [
    ([1, 2], "expected a JSON object, got list"),
    ('"text"', "expected a JSON object, got str"),
    ("drop files", "no \"files\" map"),
    ({"alignment_template": "abc"}, "alignment_template must be five"),
    ({"alignment_template": [[0.3, 0.4]] * 4}, "alignment_template must be five"),
    ({"input_size": [32, 48]}, "differs from config.json"),
    ({"files": {"config.json": "0" * 64}}, "lacks the sha256 of model.weights.h5"),
])
def test_malformed_metadata_is_one_line(tmp_path, metadata, expected):
    folder = make_preset(tmp_path / "p")
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    if metadata == "drop files":
        del meta["files"]
        metadata = meta
    elif isinstance(metadata, dict):
        metadata = {**meta, **metadata}
    rewrite(folder, checks.METADATA_FILE, metadata)
    with pytest.raises(PresetError, match=expected) as info:
        load_pretrained(str(folder))
    one_line(info)


def test_an_oversized_metadata_file_is_not_read_whole(tmp_path):
    folder = make_preset(tmp_path / "p")
    with open(folder / checks.METADATA_FILE, "w") as f:
        f.write("[" + "0," * (checks.MAX_JSON_BYTES // 2) + "0]")
    with pytest.raises(PresetError, match="larger than 1024 KiB"):
        load_pretrained(str(folder))


def test_config_parameters_match_built_models():
    for overrides in ({}, {"backbone": "se_resnet50"}, {"se_ratio": 0}, {"fold_batchnorm": True},
                      {"width": 0.5, "head_filters": 7},
                      {"backbone": "se_resnet34", "stack_blocks": (1, 2, 1, 1)}):
        model = tiny_model(**overrides)
        assert registry.config_parameters(model.get_config()) == model.count_params(), overrides


def test_a_broken_registry_entry_fails_alone(tmp_path, monkeypatch):
    zoo_dir = tmp_path / "zoo"
    for name, content in (("as_list", "[1, 2]"), ("no_repo", '{"description": "x", "revision": "' + "a" * 40 + '"}'),
                          ("unreadable", "{"), ("branch_pin", json.dumps({"repo_id": "o/r", "revision": "main"}))):
        (zoo_dir / name).mkdir(parents=True)
        (zoo_dir / name / registry.REGISTRY_FILE).write_text(content)
    monkeypatch.setenv(registry.ZOO_PATH_VARIABLE, str(zoo_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_pretrained().metadata["name"] == registry.DEFAULT_PRESET  # the embedded default is unaffected
    expected = {"as_list": "expected a JSON object, got list", "no_repo": "needs \"repo_id\"",
                "unreadable": "unreadable registry entry", "branch_pin": "full commit sha"}
    for name, message in expected.items():
        with pytest.raises(PresetError, match=message) as info:
            load_pretrained(name)
        assert one_line(info).startswith(str(zoo_dir / name / registry.REGISTRY_FILE))


def test_publish_to_an_unreachable_hub_is_one_line(tmp_path, capsys):
    folder = make_preset(tmp_path / "p")
    assert main(["publish", str(folder), "--repo-id", "org/x", "--endpoint", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-mtanet: error: publish to org/x failed") and "\n" not in err


# ------------------------------------------------------------------------------------------------------ export

def test_export_never_replaces_existing_user_files(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(folder)
    for output in (str(folder), "."):
        assert main(["export", "--format", "savedmodel", "--output", output]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("already exists; choose another --output or pass --overwrite to replace it")
    (tmp_path / "old.tflite").write_bytes(b"previous export")
    assert main(["export", "--format", "tflite", "--output", str(tmp_path / "old.tflite")]) == 2
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "old.tflite").read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "old.tflite"]  # no leftovers


def test_export_overwrite_swaps_in_a_complete_export(tmp_path):
    model = tiny_model()
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous export")
    export.export(model, target, "tflite", overwrite=True)
    assert export.TFLiteRunner(target)(np.zeros((1, 32, 32, 3), np.float32))["va"].shape == (1, 2)
    saved = tmp_path / "sm"
    saved.mkdir()
    (saved / "old.txt").write_text("old export")
    with pytest.raises(DataError, match="already exists"):
        export.export(model, saved, "savedmodel")
    export.export(model, saved, "savedmodel", overwrite=True)
    assert (saved / "saved_model.pb").exists() and not (saved / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "sm"]  # no temporary folder left


def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous export")

    def fail(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "export_tflite", fail)
    with pytest.raises(RuntimeError):
        export.export(tiny_model(), target, "tflite", overwrite=True)
    assert target.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


# ------------------------------------------------------------------------------------------- training configs

@pytest.mark.parametrize("text, expected", [
    ("5", "expected a JSON object of config keys, got int"),
    ('"config"', "expected a JSON object of config keys, got str"),
    ("[1, 2]", "expected a JSON object of config keys, got list"),
    ('{"epochs": 0}', "epochs must be a whole number from 1"),
    ('{"epochs": -3}', "epochs must be a whole number from 1"),
    ('{"batch_size": 0}', "batch_size must be a whole number from 1"),
    ('{"epochs": "10"}', "epochs must be a whole number"),
    ('{"learning_rate": "fast"}', "learning_rate must be a number above 0"),
    ('{"stack_blocks": [1, 1]}', "stack_blocks must be null or a list of four"),
    ('{"input_size": -64}', "input_size must be a whole number from 16"),
    ('{"task_weighting": "magic"}', "task_weighting must be one of fixed, uncertainty"),
    ('{"augment": "yes"}', "augment must be true or false"),
    ('{"synthetic": {"frames": "many"}}', "synthetic.frames must be a whole number"),
    ('{"synthetic": {"videos": 3}}', "unknown key\\(s\\) in \"synthetic\": videos"),
    ('{"synthetic": 3}', "synthetic must be an object"),
])
def test_training_config_errors_are_one_line_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "recipe.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=expected) as info:
        recipe.load_config(path)
    assert one_line(info).startswith(str(path))


def test_a_partial_synthetic_block_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text('{"synthetic": {"frames": 12}}')
    assert recipe.load_config(path)["synthetic"] == {**recipe.DEFAULTS["synthetic"], "frames": 12}


def test_train_flags_are_checked_too(tmp_path, capsys):
    for flag in (["--epochs", "0"], ["--epochs", "-2"], ["--batch-size", "0"]):
        assert main(["train", "--data", str(tmp_path / "d"), "--format", "synthetic", "--output",
                     str(tmp_path / "r"), *flag]) == 2
        err = capsys.readouterr().err.strip()
        assert "must be a whole number from 1" in err and "\n" not in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_train_output_must_be_a_run_folder(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("mine")
    for output, expected in ((tmp_path / "file.txt", "is a file"), (tmp_path / "docs", "holds no training run")):
        assert main(["train", "--data", str(tmp_path / "d"), "--format", "synthetic", "--output", str(output),
                     "--epochs", "1"]) == 2
        assert expected in capsys.readouterr().err
    assert (tmp_path / "file.txt").read_text() == "mine" and (tmp_path / "docs" / "notes.md").read_text() == "mine"


# --------------------------------------------------------------------------------------- restartable training

class FakeModel:
    """Stands in for a Keras model in RunRecorder: weights are one number written to the file."""

    def __init__(self, value):
        self.value = value

    def save_weights(self, path, overwrite=True):
        with open(path, "w") as f:
            f.write(str(self.value))


def recorder_epoch(recorder, epoch, score, begin=True):
    recorder.set_model(FakeModel(epoch))
    if begin:
        recorder.on_epoch_begin(epoch)
    recorder.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), recipe.SCORE_KEY: score})


def test_the_best_epoch_survives_a_resume(tmp_path):
    first = callbacks.RunRecorder(tmp_path)
    for epoch, score in enumerate([0.5, 0.898, 0.7]):
        recorder_epoch(first, epoch, score)
    # Killed; the backup holds epoch 2. A new process resumes at epoch 3, whose score is far worse.
    second = callbacks.RunRecorder(tmp_path)
    recorder_epoch(second, 3, 0.451)
    recorder_epoch(second, 4, 0.6)
    second.prune()
    assert second.best_file().name == "best-e0001.weights.h5" and second.best_file().read_text() == "1"
    rows, _ = second.rows()
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]


def test_epochs_logged_ahead_of_the_backup_are_dropped_on_resume(tmp_path):
    first = callbacks.RunRecorder(tmp_path)
    for epoch, score in enumerate([0.5, 0.6, 0.9]):
        recorder_epoch(first, epoch, score)
    # A kill after epoch 2's row and best weights, before its backup: the resumed run redoes epoch 2.
    with open(tmp_path / "log.csv", "a") as f:
        f.write("3,0.2")  # and a row cut short by the kill
    second = callbacks.RunRecorder(tmp_path)
    recorder_epoch(second, 2, 0.55)
    rows, _ = second.rows()
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[2][recipe.SCORE_KEY]) == 0.55
    second.prune()
    assert second.best_file().name == "best-e0001.weights.h5"  # epoch 2 (0.9) was dropped with its row


def test_a_kill_between_the_last_epoch_and_the_preset_loses_nothing(tmp_path, monkeypatch):
    from test_train import TINY_RECIPE

    config = recipe.check_config({**recipe.DEFAULTS, **TINY_RECIPE})
    quiet = dict(verbose=0, tensorboard=False, log=lambda *a: None)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for a SIGKILL after fit returned

    monkeypatch.setattr(preset_folder, "save_preset", killed)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, tmp_path / "data", "synthetic", tmp_path / "run", **quiet)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert (run / "backup").exists() and not (run / checks.METADATA_FILE).exists()
    log_before = (run / "log.csv").read_text()
    said = []
    scores = train.train(config, tmp_path / "data", "synthetic", run, **{**quiet, "log": said.append})
    assert any("resuming" in line for line in said)
    assert (run / "log.csv").read_text() == log_before  # no epoch trained again, none logged twice
    assert load_pretrained(str(run)).metadata["metrics"] == {k: round(float(v), 4) for k, v in scores.items()}
    assert not (run / "backup").exists()

    # Resume refuses other settings, and says what differs, before anything is written.
    (run / checks.METADATA_FILE).unlink()
    (run / "backup").mkdir()
    recorded = (run / "train_config.json").read_text()
    for change, differs in (({"width": 0.5}, "width 0.25 -> 0.5"), ({"epochs": 3}, "epochs 2 -> 3")):
        with pytest.raises(UsageError, match="interrupted run there used other settings") as info:
            train.train({**config, **change}, tmp_path / "data", "synthetic", run, **quiet)
        assert differs in one_line(info)
    with pytest.raises(UsageError, match="data .* -> "):
        train.train(config, tmp_path / "other", "synthetic", run, **quiet)
    assert (run / "train_config.json").read_text() == recorded


def test_run_files_are_never_written_through_a_link_planted_at_a_temporary_name(tmp_path):
    # Earlier versions wrote the backup, the best weights and the log through fixed temporary names; a link
    # planted there (e.g. in a shared run folder) made them overwrite the file it points to.
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "backup").mkdir()
    planted = [run / "backup" / ".tmp.weights.h5", run / "backup" / ".previous.weights.h5.tmp",
               run / "backup" / ".previous.json.tmp", run / "checkpoints" / ".tmp-e0000.weights.h5",
               run / "checkpoints" / ".tmp-e0001.weights.h5", run / ".log.csv.tmp"]
    for link in planted:
        link.symlink_to(mine)
    backup = callbacks.VerifiedBackup(str(run / "backup"))
    backup.set_model(tiny_model())
    for epoch in (1, 2):  # the second save copies the first pair to "previous"
        backup._current_epoch = epoch
        backup._save_model()
    first = callbacks.RunRecorder(run)
    for epoch, score in enumerate([0.5, 0.9, 0.7]):
        recorder_epoch(first, epoch, score)
    recorder_epoch(callbacks.RunRecorder(run), 1, 0.6)  # a resume rewrites the log without the rows ahead
    assert mine.read_text() == "mine"
    assert all(link.is_symlink() for link in planted)
    assert callbacks.VerifiedBackup.latest(run / "backup")[1]["epoch"] == 2
    assert (run / "backup" / "previous.json").exists() and (run / "checkpoints" / "best-e0001.weights.h5").exists()
    assert [int(r["epoch"]) for r in callbacks.RunRecorder(run).rows()[0]] == [0, 1]
    # Nothing else is left behind: the temporary files went with their renames.
    leftovers = [p for p in run.rglob(".*") if p not in planted]
    assert leftovers == [], leftovers


def test_a_link_at_a_run_files_own_name_is_refused_and_a_kills_leftovers_go_under_the_lock(tmp_path):
    from keras_mtanet import files
    from keras_mtanet.training import run_folder as runs

    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    recorder = callbacks.RunRecorder(run)
    recorder_epoch(recorder, 0, 0.5)
    (run / "log.csv").unlink()
    (run / "log.csv").symlink_to(mine)  # appending the next epoch's row must not write through it
    with pytest.raises(UsageError, match=r"log\.csv: is a link; a run folder's own files must be plain files$"):
        recorder_epoch(recorder, 1, 0.6, begin=False)
    with pytest.raises(UsageError, match=r"log\.csv: is a link"):  # nor is it read, or replaced, on a resume
        recorder_epoch(callbacks.RunRecorder(run), 1, 0.6)
    assert mine.read_text() == "mine" and (run / "log.csv").is_symlink()
    (run / "log.csv").unlink()
    (run / runs.LOCK_FILE).symlink_to(tmp_path / "elsewhere")  # nor create a file where a dangling link points
    with pytest.raises(UsageError, match=r"\.lock: is a link"):
        runs.lock_run_folder(run)
    assert not (tmp_path / "elsewhere").exists()
    (run / runs.LOCK_FILE).unlink()

    # What a kill leaves (temporary names of files.temporary_name, a minute old) is removed once the run holds the
    # lock; other hidden names, a temporary file just made, and anything in other folders stay.
    import os

    (run / "backup").mkdir()
    (run / "tensorboard").mkdir()
    killed = [files.temporary_name(run / "backup" / "latest.weights.h5"), files.temporary_name(run / "log.csv"),
              files.temporary_name(run / "checkpoints" / "best-e0003.weights.h5")]
    killed[0].mkdir()
    (killed[0] / "latest.weights.h5").write_bytes(b"half")
    killed[1].write_text("epoch\n")
    killed[2].symlink_to(mine)
    for path in killed:
        os.utime(path, (1e9, 1e9), follow_symlinks=False)
    kept = [run / ".hidden.tmp", run / "backup" / ".notes", run / "checkpoints" / "best-e0001.weights.h5",
            files.temporary_name(run / "tensorboard" / "events"), files.temporary_name(run / "run.json")]
    for path in kept:
        path.write_text("x")
    for path in kept[:-1]:
        os.utime(path, (1e9, 1e9))
    handle = runs.lock_run_folder(run)
    try:
        assert not any(p.exists() or p.is_symlink() for p in killed) and all(p.exists() for p in kept)
        assert mine.read_text() == "mine"
    finally:
        handle.close()


def test_a_backup_cut_short_at_any_point_resumes_from_a_consistent_pair(tmp_path):
    model = tiny_model()
    backup = callbacks.VerifiedBackup(str(tmp_path / "backup"))
    backup.set_model(model)
    latest = tmp_path / "backup" / "latest.json"
    for epoch in (1, 2):
        backup._current_epoch = epoch
        backup._save_model()
    weights, state = callbacks.VerifiedBackup.latest(tmp_path / "backup")
    assert weights.name == "latest.weights.h5" and state["epoch"] == 2
    latest.write_text("")  # a kill while the newest state was written
    assert callbacks.VerifiedBackup.latest(tmp_path / "backup")[1]["epoch"] == 1
    latest.write_text(json.dumps({**state}))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # newest weights that are not the ones their state names
    weights.write_bytes(bytes(data))
    found, previous = callbacks.VerifiedBackup.latest(tmp_path / "backup")
    assert found.name == "previous.weights.h5" and previous["epoch"] == 1
    (tmp_path / "backup" / "previous.json").unlink()
    assert callbacks.VerifiedBackup.latest(tmp_path / "backup") is None

    # A run folder whose backup never completed starts over only if no epoch after the first was logged.
    config, run = recipe.check_config(dict(recipe.DEFAULTS)), {"data": "/d", "format": "synthetic"}
    (tmp_path / "train_config.json").write_text(json.dumps(config))
    (tmp_path / "run.json").write_text(json.dumps(run))
    recorder_epoch(callbacks.RunRecorder(tmp_path), 0, 0.5)
    recorder_epoch(callbacks.RunRecorder(tmp_path), 1, 0.6, begin=False)
    with pytest.raises(UsageError, match="no complete backup to resume from"):
        run_folder.prepare_run_folder(tmp_path, config, run, resume=False)
    assert (tmp_path / "backup").exists() and (tmp_path / "log.csv").exists()
    rows = (tmp_path / "log.csv").read_text().splitlines()
    (tmp_path / "log.csv").write_text("\n".join(rows[:2]) + "\n")  # only epoch 0 was logged
    (tmp_path / "checkpoints" / "best-e0001.weights.h5").unlink()
    assert run_folder.prepare_run_folder(tmp_path, config, run, resume=False) == "new"
    assert not (tmp_path / "backup").exists() and not (tmp_path / "log.csv").exists()


def test_resume_notices_other_labels_and_a_second_trainer(tmp_path):
    config = recipe.check_config(dict(recipe.DEFAULTS))
    run = {"data": "/d", "format": "ferplus", "labels": "/a.csv"}
    (tmp_path / "train_config.json").write_text(json.dumps(config))
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(UsageError, match='labels "/a.csv" -> "/b.csv"'):
        run_folder.check_same_run(tmp_path, config, {**run, "labels": "/b.csv"})
    with pytest.raises(UsageError, match='labels "/a.csv" -> null'):
        run_folder.check_same_run(tmp_path, config, {"data": "/d", "format": "ferplus"})
    first = run_folder.lock_run_folder(tmp_path)
    try:
        with pytest.raises(UsageError, match="another process is training into this folder"):
            run_folder.lock_run_folder(tmp_path)
    finally:
        first.close()
    run_folder.lock_run_folder(tmp_path).close()  # free again once the first one is done


def test_export_overwrite_replaces_a_file_with_a_savedmodel_folder(tmp_path):
    target = tmp_path / "model"
    target.write_text("an old file")
    export.export(tiny_model(), target, "savedmodel", overwrite=True)
    assert (target / "saved_model.pb").exists() and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_update_preset_rewrites_the_card_and_keeps_the_preset_verifiable(tmp_path):
    folder = make_preset(tmp_path / "p")
    meta = preset_folder.update_preset(folder, "---\nlibrary_name: keras\n---\n# New card\n", training_data="FER+ (test)")
    assert (folder / checks.CARD_FILE).read_text().endswith("# New card\n")
    assert meta["files"][checks.CARD_FILE] == files.sha256_file(folder / checks.CARD_FILE)
    assert load_pretrained(str(folder)).metadata["training_data"] == "FER+ (test)"


def test_a_failed_write_is_one_line_naming_the_file(tmp_path):
    import errno
    import os

    from keras_mtanet import files

    name = os.fsdecode(b"scores\xff.csv")  # a file name with a byte that is not UTF-8
    made = files.write_error(tmp_path / name, OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(made, DataError)
    assert str(made) == f"{tmp_path}/scores\\xff.csv: cannot write (No space left on device)"
    made = files.write_error("run/log.csv", PermissionError(errno.EACCES, "Permission denied"), UsageError)
    assert isinstance(made, UsageError) and str(made) == "run/log.csv: cannot write (Permission denied)"
    assert str(files.write_error("a.json", OSError("disk gone"))) == "a.json: cannot write (disk gone)"


# ------------------------------------------------------------------------------- FIFOs, devices and silent Hubs

def refused_without_blocking(fifo, call, seconds=20):
    """Run ``call`` in a thread; return the exception it raised. Fails the test if ``call`` opened the FIFO and
    waited on it (which a writer opening the other end then ends)."""
    import os
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: B902  (whatever it raised is the result)
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader waiting on it gets end of file
        except OSError:
            pass
        thread.join(5)
        pytest.fail(f"{fifo}: opened and waited on instead of refused")
    return outcome.get("error")


def fifo_at(path):
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_config_annotation_or_label_file_is_refused_before_it_is_opened(tmp_path, capsys):
    from keras_mtanet.data import affectnet, affwild2, ferplus
    from keras_mtanet.teachers import cache

    config = fifo_at(tmp_path / "recipe.json")
    error = refused_without_blocking(config, lambda: recipe.load_config(config))
    assert isinstance(error, UsageError)
    assert str(error) == f"{config}: training config is not a regular file (a FIFO)"
    error = refused_without_blocking(config, lambda: main(["train", "--data", str(tmp_path / "d"), "--format",
                                                            "synthetic", "--output", str(tmp_path / "r"),
                                                            "--config", str(config)]))
    assert error is None and capsys.readouterr().err == \
        f"keras-mtanet: error: {config}: training config is not a regular file (a FIFO)\n"

    root = tmp_path / "affwild2"
    annotation = fifo_at(root / "annotations" / "VA_Set" / "Training_Set" / "vid.txt")
    (root / "cropped_aligned").mkdir()
    error = refused_without_blocking(annotation, lambda: affwild2.read_index(root, "train"))
    assert isinstance(error, DataError)
    assert str(error) == f"{annotation}: annotation file is not a regular file (a FIFO)"

    split = fifo_at(tmp_path / "affectnet" / "training.csv")
    error = refused_without_blocking(split, lambda: affectnet.read_index(split.parent, "train"))
    assert isinstance(error, DataError) and "is not a regular file (a FIFO)" in str(error)

    votes = fifo_at(tmp_path / "ferplus" / "FER2013Train" / "label.csv")
    error = refused_without_blocking(votes, lambda: ferplus.read_index(tmp_path / "ferplus", "train"))
    assert isinstance(error, DataError) and str(error) == f"{votes}: FER+ label file is not a regular file (a FIFO)"

    labels = fifo_at(tmp_path / "labels.csv")
    error = refused_without_blocking(labels, lambda: cache.read_rows(labels))
    assert isinstance(error, DataError) and str(error) == f"{labels}: teacher label file is not a regular file (a FIFO)"


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


def test_a_hub_that_accepts_and_never_answers_times_out(tmp_path, monkeypatch):
    import socket
    import threading
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    silent = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(silent.accept()[0])  # kept open, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    started = time.monotonic()
    try:
        error = refused_without_blocking(
            tmp_path / "none", lambda: load_pretrained("hf://org/silent@main", cache_dir=tmp_path / "cache",
                                                       endpoint=endpoint))
    finally:
        silent.close()
        for connection in held:
            connection.close()
    assert isinstance(error, PresetError) and "the Hub cannot be reached" in str(error)
    assert time.monotonic() - started < 15


def test_export_output_is_resolved_before_staging(tmp_path):
    target = tmp_path / "a"
    (target / "sub").mkdir(parents=True)
    # "a/sub/.." is a/: the export replaces a/ (asked with --overwrite), nothing is left inside a/sub/.
    export.export(tiny_model(), target / "sub" / "..", "savedmodel", overwrite=True)
    assert (target / "saved_model.pb").is_file() and not (target / "sub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging folder left


def test_export_never_replaces_the_current_folder(tmp_path, capsys, monkeypatch):
    # The current folder, or one above it, cannot be replaced: one line, exit 2, nothing touched.
    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)
    target = tmp_path / "a"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    monkeypatch.chdir(target / "sub")
    for output, what in ((".", "the current folder"), ("..", "a folder above the current one")):
        assert main(["export", "--format", "savedmodel", "--output", output, "--overwrite"]) == 2
        shown = target / "sub" if output == "." else target
        assert capsys.readouterr().err.strip() == (f"keras-mtanet: error: {shown}: is {what}; an export cannot "
                                                   "replace the folder it runs in (choose another --output)")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt", "sub"] and not any((target / "sub").iterdir())


@pytest.mark.parametrize("kind", ["os", "tensorflow"])
def test_an_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, kind):
    import errno

    import tensorflow as tf

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)

    def full(model, path):
        (Path(path) / "variables").mkdir(parents=True)
        (Path(path) / "variables" / "variables.data").write_bytes(b"half")
        if kind == "os":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables/variables.data; No space left on "
                                               "device")

    monkeypatch.setattr(export, "export_savedmodel", full)
    assert main(["export", "--format", "savedmodel", "--output", str(tmp_path / "sm")]) == 2
    assert capsys.readouterr().err == (f"keras-mtanet: error: {tmp_path / 'sm'}: cannot write (No space left on "
                                       "device)\n")
    assert list(tmp_path.iterdir()) == []


def test_exports_stage_beside_the_output_and_remove_stale_staging_folders(tmp_path, monkeypatch):
    import os
    import re
    import subprocess
    import sys
    import tempfile

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that no longer runs
    old = 1_000_000_000.0

    def staging(name, pid, marker=True):
        folder = tmp_path / f".m.tflite.export-{pid}-abcd_123.tmp"
        if name:
            folder = tmp_path / name
        (folder / "saved").mkdir(parents=True)
        (folder / "saved" / "saved_model.pb").write_bytes(b"x" * 1000)
        if marker:
            (folder / ".keras_mtanet_export").write_text("")  # the marker export leaves
            os.utime(folder / ".keras_mtanet_export", (old, old))
        return folder

    stale = staging(None, gone)
    alive = staging(f".m.tflite.export-{os.getpid()}-abcd_123.tmp", os.getpid())
    unmarked = staging(f".m.tflite.export-{gone}-zzzz_999.tmp", gone, marker=False)
    lookalike = staging(f".mine.export-{gone}-x.tmp", gone)
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    seen = []
    real = export.export_savedmodel
    monkeypatch.setattr(export, "export_savedmodel", lambda model, path: seen.append(Path(path)) or real(model, path))
    export.export(tiny_model(), tmp_path / "m.tflite", "tflite")
    assert not stale.exists() and alive.exists() and unmarked.exists() and lookalike.exists()
    # The SavedModel the TFLite converter reads was staged beside the output, never in the system temp folder.
    assert len(seen) == 1 and seen[0].parent.parent.parent == tmp_path
    assert not [p for p in system_temp.iterdir() if not p.name.startswith("__autograph_generated_file")]
    assert re.fullmatch(r"\.m\.tflite\.export-[0-9]+-[a-z0-9_]{8}\.tmp", seen[0].parent.parent.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.tflite", "system-temp", alive.name, unmarked.name, lookalike.name])


def test_an_export_stopped_by_sigterm_leaves_no_staging_folder(tmp_path, capsys, monkeypatch):
    from keras_mtanet import cli

    monkeypatch.setattr(registry, "DEFAULT_PRESET", registry.SYNTHETIC_PRESET)

    def stopped(model, path):
        (Path(path) / "variables").mkdir(parents=True)
        (Path(path) / "variables" / "variables.data").write_bytes(b"half")
        raise cli.Terminated()  # what the CLI's SIGTERM handler raises

    monkeypatch.setattr(export, "export_savedmodel", stopped)
    assert main(["export", "--format", "savedmodel", "--output", str(tmp_path / "sm")]) == 143
    assert capsys.readouterr().err == "keras-mtanet: terminated\n" and list(tmp_path.iterdir()) == []
