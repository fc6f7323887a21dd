"""tf.distribute training for TensorFlow users: ``MirroredStrategy`` over the local devices and
``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``. TensorFlow backend only; this module is
imported only when ``train`` runs one of them. Keras 3's maintained path, on JAX, is
``keras_mtanet.training.keras_distribution``.
"""

import os

import keras
import tensorflow as tf
from keras import ops

from keras_mtanet.errors import UsageError
from keras_mtanet.model.task import MTANet


def make_strategy(name):
    """``None`` (Keras's default), ``tf.distribute.MirroredStrategy`` over the local devices, or
    ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``."""
    if name == "default":
        return None
    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"--strategy {name} is a tf.distribute strategy and needs KERAS_BACKEND=tensorflow "
                         f"(this is {keras.backend.backend()}); on JAX use --distribution data-parallel")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UsageError(f"unknown strategy {name!r}; choose default, mirrored or multiworker")


def cluster_role(strategy):
    """``(is_chief, number of workers, task id)``; a single process is its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return True, 1, 0
    workers = sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in spec)
    return chief, workers, resolver.task_id


class MultiWorkerFit:
    """Mixin for a ``keras.Model`` built and fitted under ``MultiWorkerMirroredStrategy``.

    Keras 3 (checked: 3.15 with TensorFlow 2.21) cannot fit under that strategy as it is: (1) it builds the
    compiled state from the first batch passed through ``strategy.reduce``, which takes single values only, not
    a nested ``(x, {"va", "au", "expr"})`` batch; (2) it reduces every log with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails for scalars. So the model builds from this worker's local batch and returns its logs
    as 1-element vectors (the mean over workers of synchronised values is the value itself). These are private
    Keras methods: keep this to that strategy, and recheck it when Keras changes.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        strategy = self._distribute_strategy
        for _, _, distributed in iterator:
            batch = next(distributed)
            break
        local = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, batch)
        with strategy.scope():
            self._symbolic_build(data_batch=local)

    def train_step(self, data):
        return _vector_logs(super().train_step(data))

    def test_step(self, data):
        return _vector_logs(super().test_step(data))


def _vector_logs(logs):
    return {k: ops.reshape(v, (1,)) if len(ops.shape(v)) == 0 else v for k, v in logs.items()}


class MultiWorkerMTANet(MultiWorkerFit, MTANet):
    """``MTANet`` as ``train`` builds it under ``MultiWorkerMirroredStrategy``: the same config and weight layout
    (presets save its config and weights, which load as a plain ``MTANet``). Not registered for ``.keras``
    files: save a plain ``MTANet`` copy (``MTANet.from_config(model.get_config())`` + ``set_weights``)."""
