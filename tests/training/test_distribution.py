"""Data-parallel training on keras.distribution (JAX): the per-process data slices, the job set-up, and two local
processes over 127.0.0.1 that train as one process would."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from test_run import TINY_RECIPE, finish_all, free_port

from keras_mtanet import load_pretrained
from keras_mtanet.errors import UsageError
from keras_mtanet.presets import registry
from keras_mtanet.training import keras_distribution as distribution
from keras_mtanet.training import recipe
from keras_mtanet.training import run as train

# Fixed task weights and no augmentation: the only randomness left is the shared shuffle, so a job's losses can
# be compared with a one-process run's.
RECIPE = {**TINY_RECIPE, "epochs": 1, "batch_size": 8, "task_weighting": "fixed", "augment": False}


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribution")
    (root / "recipe.json").write_text(json.dumps(RECIPE))
    config = recipe.load_config(root / "recipe.json")
    train_index, _, _ = train.read_split_indexes(root / "data", "synthetic", config)
    return root, config, train_index


def test_process_slices_add_up_to_the_one_process_batches(synthetic_data):
    from keras_mtanet.data import datasets

    _, _, index = synthetic_data

    def batches(batch_size, shard, epochs=2):
        ds = datasets.make_dataset(index, 32, batch_size, training=True, augment=False, seed=3, deterministic=True,
                                   drop_remainder=True, shard=shard)
        return [(x.numpy(), y["expr"].numpy()) for _ in range(epochs) for x, y in ds]

    whole = batches(8, (1, 0))
    first, second = batches(4, (2, 0)), batches(4, (2, 1))
    assert len(whole) == len(first) == len(second) == 2 * (len(index) // 8)
    for (x, expr), (x0, expr0), (x1, expr1) in zip(whole, first, second):
        np.testing.assert_array_equal(x, np.concatenate([x0, x1]))  # process 0's slice first, then process 1's
        np.testing.assert_array_equal(expr, np.concatenate([expr0, expr1]))
    # The two epochs are shuffled differently, and the processes never read the same frame in a batch.
    assert not np.array_equal(whole[0][0], whole[len(whole) // 2][0])
    for (x0, _), (x1, _) in zip(first, second):
        assert not any(np.array_equal(a, b) for a in x0 for b in x1)


def test_the_job_comes_from_keras_environment_variables():
    job = distribution.Job(distribution=None, processes=2, process=1)
    assert job.shard(8) == (4, (2, 1)) and not job.chief
    with pytest.raises(UsageError, match="batch_size 9 must be a multiple of the 2 processes"):
        job.shard(9)
    for environ, expected in (
            ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "2"},
             "PROCESS_ID must be from 0 to KERAS_DISTRIBUTION_NUM_PROCESSES - 1, got 2 of 2"),
            ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"}, "must be whole numbers"),
            ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"},
             "needs KERAS_DISTRIBUTION_JOB_ADDRESSES"),
            ({}, "runs on the JAX backend \\(set KERAS_BACKEND=jax; this is tensorflow\\)")):
        with pytest.raises(UsageError, match=expected):
            distribution.join("data-parallel", environ=environ)
    with pytest.raises(UsageError, match="unknown distribution 'model-parallel'"):
        distribution.join("model-parallel", environ={})


def test_distribution_on_tensorflow_is_a_one_line_error(tmp_path, capsys):
    from keras_mtanet.cli import main

    assert main(["train", "--data", str(tmp_path / "d"), "--format", "synthetic", "--output", str(tmp_path / "r"),
                 "--distribution", "data-parallel", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--distribution data-parallel runs on the JAX backend" in err and "\n" not in err


def _jax_train(root, output, process=None, processes=1, port=None, recipe="recipe.json"):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key in distribution.ENVIRONMENT:
        env.pop(key, None)
    if process is not None:
        env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                   KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes), KERAS_DISTRIBUTION_PROCESS_ID=str(process))
    command = [sys.executable, "-m", "keras_mtanet", "train", "--config", str(root / recipe), "--format",
               "synthetic", "--data", str(root / "data"), "--output", str(output), "--no-tensorboard",
               "--distribution", "data-parallel"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _epoch_rows(folder):
    with open(folder / "log.csv") as f:
        return list(csv.DictReader(f))


# The losses of a two-process job and of one process with the same global batch agree to float32 rounding
# (the sums over a batch are split differently); measured: 1.7e-6 after 4 steps.
LOSS_TOLERANCE = 1e-5
# AdamW's normalised steps enlarge that rounding where gradients are near zero; measured: 1.4e-4 after 4 steps.
OUTPUT_TOLERANCE = 1e-3


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (pip install 'jax[cpu]')")
def test_two_processes_train_as_one_with_the_same_global_batch(synthetic_data):
    root, _, index = synthetic_data
    started = time.perf_counter()
    port = free_port()
    # The job's two processes and the one-process run it is compared with, all at once.
    runs = [_jax_train(root, root / "job", process=i, processes=2, port=port) for i in range(2)]
    runs.append(_jax_train(root, root / "single"))
    chief, worker, single = finish_all(runs, timeout=900)
    steps = len(index) // RECIPE["batch_size"]
    for process, out in ((0, chief), (1, worker)):
        assert f"process {process} of 2 joined, 2 device(s) in the job" in out
        assert f"process {process} reads its own slice of every batch: 4 of 8 frames, {steps} batches per epoch" in out
    assert "process 0 of 1 joined, 1 device(s) in the job" in single
    assert "preset written to" in chief and "worker 1 done; the chief wrote the preset" in worker

    # The chief alone wrote the run folder; the worker's scratch folder is gone.
    assert "writing to" in worker and "writing to" not in chief
    scratch = worker.split("writing to ", 1)[1].split()[0]
    assert not os.path.exists(scratch)
    job, one = _epoch_rows(root / "job"), _epoch_rows(root / "single")
    assert [r["epoch"] for r in job] == ["0"]
    difference = max(abs(float(job[0][key]) - float(one[0][key]))
                     for key in ("loss", "va_loss", "au_loss", "expr_loss"))
    print(f"two-process job vs one process: largest loss difference {difference:.2e}; "
          f"{time.perf_counter() - started:.0f} s")
    assert difference <= LOSS_TOLERANCE

    # The job's preset (trained on JAX) loads here (TensorFlow) and predicts as the one-process run's.
    trained, reference = load_pretrained(str(root / "job")), load_pretrained(str(root / "single"))
    assert trained.metadata["training_config"]["distribution"] == "data-parallel"
    faces = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    a, b = trained.predict(faces, verbose=0), reference.predict(faces, verbose=0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=OUTPUT_TOLERANCE)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (pip install 'jax[cpu]')")
def test_two_processes_train_with_the_shipped_recipes_augmentation(synthetic_data):
    """As users run it: augmentation on (the FER+ recipe's, random erasing included; each process draws its own),
    where the comparison above has to turn it off."""
    root, _, _ = synthetic_data
    shipped = json.loads((registry.registry_dirs()[0] / "mtanet_se_resnet18_ferplus_112" / "train.json").read_text())
    assert shipped["augment"] and shipped["random_erasing"]
    recipe = {**shipped, **{k: RECIPE[k] for k in ("backbone", "input_size", "stack_blocks", "width", "epochs",
                                                   "batch_size", "synthetic")}}
    (root / "augmented.json").write_text(json.dumps(recipe))
    port = free_port()
    runs = [_jax_train(root, root / "augmented", process=i, processes=2, port=port, recipe="augmented.json")
            for i in range(2)]
    outputs = finish_all(runs, timeout=900)
    for out in outputs:
        assert "Traceback" not in out and "Your input ran out of data" not in out
    assert "preset written to" in outputs[0]
    model = load_pretrained(str(root / "augmented"))
    assert model.metadata["training_config"]["random_erasing"] is True
    assert all(np.isfinite(float(v)) for v in _epoch_rows(root / "augmented")[0].values() if v not in ("", None))
