"""Data-parallel training on Keras 3's own engine: ``keras.distribution.DataParallel`` on the JAX backend, over
the devices of one process or of several processes (machines) joined by ``keras.distribution.initialize``.

``keras-mtanet train --distribution data-parallel`` starts one process per machine (or per GPU); each learns
its place in the job from Keras's own environment variables, which a launcher (or a shell line) sets:

- ``KERAS_DISTRIBUTION_JOB_ADDRESSES``: the coordinator's ``host:port``, served by process 0 (a comma-separated
  list of every process's address also works; the first one is the coordinator);
- ``KERAS_DISTRIBUTION_NUM_PROCESSES``: how many processes take part;
- ``KERAS_DISTRIBUTION_PROCESS_ID``: this process's number, from 0 (the chief) to the count - 1.

Without them the run is one process, data-parallel over its local devices. ``batch_size`` stays the global
batch: each process reads its own slice of every global batch (``data.pipeline.make_dataset(shard=...)``), so
the losses equal a one-process run's with the same batch; only the chief writes the run folder.
"""

import contextlib
import dataclasses
import os

import keras

from keras_mtanet.errors import UsageError
from keras_mtanet.training.recipe import DISTRIBUTIONS

ENVIRONMENT = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
               "KERAS_DISTRIBUTION_PROCESS_ID")


@dataclasses.dataclass
class Job:
    """This process's place in a data-parallel job."""
    distribution: keras.distribution.DataParallel
    processes: int = 1
    process: int = 0

    @property
    def chief(self):
        return self.process == 0

    def shard(self, batch_size):
        """``(frames per batch in this process, make_dataset's shard)`` for a global ``batch_size``."""
        if batch_size % self.processes:
            raise UsageError(f"batch_size {batch_size} must be a multiple of the {self.processes} processes of the "
                             "data-parallel job (each takes an equal slice of every batch)")
        return batch_size // self.processes, (self.processes, self.process)

    def describe(self):
        devices = self.distribution.device_mesh.devices.size
        return (f"data-parallel (keras.distribution.DataParallel, JAX): process {self.process} of {self.processes} "
                f"joined, {devices} device(s) in the job")


def join(name, environ=os.environ):
    """Join the data-parallel job described by ``environ`` (see the module docstring); returns its ``Job``.

    Call before any JAX computation: ``jax.distributed.initialize`` must come first.
    """
    if name not in DISTRIBUTIONS:
        raise UsageError(f"unknown distribution {name!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    address, count, process = (environ.get(key) for key in ENVIRONMENT)
    try:
        count = int(count) if count else 1
        process = int(process) if process else 0
    except ValueError:
        raise UsageError(f"{ENVIRONMENT[1]} and {ENVIRONMENT[2]} must be whole numbers, got {count!r} and "
                         f"{process!r}") from None
    if count < 1 or not 0 <= process < count:
        raise UsageError(f"{ENVIRONMENT[2]} must be from 0 to {ENVIRONMENT[1]} - 1, got {process} of {count}")
    if count > 1 and not address:
        raise UsageError(f"a data-parallel job of {count} processes needs {ENVIRONMENT[0]} (the coordinator's "
                         "host:port, served by process 0)")
    if keras.backend.backend() != "jax":
        raise UsageError(f"--distribution {name} runs on the JAX backend (set KERAS_BACKEND=jax; this is "
                         f"{keras.backend.backend()}); TensorFlow's strategies are --strategy mirrored|multiworker")
    if count > 1:
        import jax

        # JAX has no cross-process collectives between CPU devices unless told to use gloo; without it a job on
        # CPU-only machines (and the tests) fails at its first step. GPU devices are not affected.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(address, count, process)
    # Each process feeds its own slice of the batch (make_dataset's shard), so Keras must not shard again.
    return Job(keras.distribution.DataParallel(auto_shard_dataset=False), count, process)


@contextlib.contextmanager
def local():
    """No distribution inside: what is built or run there stays on this process's devices."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


class LocalReplica:
    """A copy of a distributed model on this process's devices alone, for validation and the preset.

    ``predict`` on the distributed model would feed every process's frames as slices of one global batch and
    return arrays spread over the processes; the copy predicts this process's whole data set by itself. The
    weights are replicated, so each process holds them all and copies them over.
    """

    def __init__(self, build):
        self.build, self.model = build, None

    def copy(self, source):
        """The copy, holding ``source``'s current weights."""
        with local():
            if self.model is None:
                self.model = self.build()
            self.model.set_weights(source.get_weights())
        return self.model

    def predict(self, source, dataset):
        """``source``'s predictions for ``dataset``, made by the copy."""
        model = self.copy(source)
        with local():
            return model.predict(dataset, verbose=0)
