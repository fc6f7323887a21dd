"""The run folder of keras-mtanet train (keras_mtanet.training.run_folder and its callbacks) through kills, resumes,
links planted at its files' names and a second trainer."""

import json

import pytest
from conftest import one_line, tiny_model

from keras_mtanet import files, load_pretrained
from keras_mtanet.errors import UsageError
from keras_mtanet.presets import checks
from keras_mtanet.presets import folder as preset_folder
from keras_mtanet.training import callbacks, recipe, run_folder
from keras_mtanet.training import run as train


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


@pytest.mark.safety
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


@pytest.mark.safety
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


@pytest.mark.safety
def test_a_kill_between_the_last_epoch_and_the_preset_loses_nothing(tmp_path, monkeypatch):
    from test_run import TINY_RECIPE

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


@pytest.mark.safety
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


@pytest.mark.safety
def test_a_link_at_a_run_files_own_name_is_refused_and_a_kills_leftovers_go_under_the_lock(tmp_path):
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


@pytest.mark.safety
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


@pytest.mark.safety
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
