"""MTANet: a shared SE-ResNet backbone with valence/arousal, action-unit and expression heads.

Reference: Zhang & Gu, "Facial Affect Recognition in the Wild Using Multi-Task Learning Convolutional
Network", arXiv:2002.00606 (ABAW 2020 at FG 2020).
"""

import keras
import numpy as np
from keras import layers, ops

from keras_mtanet import backbone as backbone_lib
from keras_mtanet import heads
from keras_mtanet import losses as losses_lib
from keras_mtanet import metrics as metrics_lib
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, TASKS

TASK_WEIGHTINGS = ("fixed", "uncertainty")
COLOR_MODES = ("rgb", "grayscale")
# ITU-R BT.601 luma, as OpenCV's and PIL's RGB -> grey conversions use.
LUMA = (0.299, 0.587, 0.114)


@keras.saving.register_keras_serializable(package="keras_mtanet")
class Grayscale(layers.Layer):
    """RGB -> grey (BT.601 luma) repeated over three channels: a model trained on grey faces sees colour input
    the way it saw its training images; grey input (three equal channels) passes unchanged."""

    def call(self, inputs):
        weights = ops.convert_to_tensor(LUMA, dtype=inputs.dtype)
        grey = ops.sum(inputs * weights, axis=-1, keepdims=True)
        return ops.repeat(grey, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_mtanet")
class MTANet(keras.Model):
    """Multi-task affect network: RGB face crops in [0, 255] -> ``{"va", "au", "expr"}``.

    Normalisation to [-1, 1] is part of the model, so callers feed plain 0-255 RGB pixels.

    Args:
        backbone: ``"se_resnet18"``, ``"se_resnet34"``, ``"se_resnet50"`` or ``"se_resnet101"``.
        input_shape: (height, width, 3) of the face crops; the paper uses 112x112.
        stack_blocks: optional four block counts replacing the backbone's (e.g. ``(1, 1, 1, 1)`` for tests).
        width: multiplier on the backbone's filter counts.
        se_ratio: squeeze-and-excitation reduction ratio (16 in SE-ResNet; 0 disables SE).
        head_filters: filters of each head branch's 1x1 convolution (512: 1024 pooled features).
        dropout: dropout rate before the head convolutions.
        negative_slope: LeakyReLU slope in the head.
        num_aus, num_expressions: sizes of the AU and expression outputs.
        color_mode: ``"rgb"``, or ``"grayscale"``: the model converts its input to grey first (for models
            trained on grey faces, such as FER+; weights are the same shape either way).
        fold_batchnorm: build the inference form, with each batch norm folded into its convolution (made by
            ``inference_model()``; not for training).

    Outputs:
        ``"va"`` (N, 2) valence and arousal in [-1, 1] (tanh); ``"au"`` (N, num_aus) AU probabilities
        (sigmoid); ``"expr"`` (N, num_expressions) expression probabilities (softmax).

    Example:
        >>> model = MTANet("se_resnet18", input_shape=(64, 64, 3), stack_blocks=(1, 1, 1, 1))
        >>> model.compile()  # masked CCC / BCE / CE losses and the ABAW metrics
        >>> out = model.predict(images)  # images: (N, 64, 64, 3) uint8 or float in [0, 255]
        >>> out["va"].shape, out["au"].shape, out["expr"].shape
        ((N, 2), (N, 8), (N, 7))
    """

    def __init__(self, backbone="se_resnet50", input_shape=(112, 112, 3), stack_blocks=None, width=1.0,
                 se_ratio=16, head_filters=512, dropout=0.5, negative_slope=0.3, num_aus=len(AU_NAMES),
                 num_expressions=len(EXPR_NAMES), fold_batchnorm=False, color_mode="rgb", name="mtanet", **kwargs):
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}.")
        if color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be one of {', '.join(COLOR_MODES)}, got {color_mode!r}.")
        backbone_lib.backbone_spec(backbone, stack_blocks)  # validates the name and block counts

        inputs = keras.Input(shape=input_shape, name="image")
        x = Grayscale(name="grayscale")(inputs) if color_mode == "grayscale" else inputs
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)
        x = backbone_lib.se_resnet_features(x, backbone, stack_blocks=stack_blocks, se_ratio=se_ratio,
                                            width=width, folded=fold_batchnorm)
        x = heads.pooled_features(x, filters=head_filters, dropout=dropout, negative_slope=negative_slope)
        outputs = heads.task_outputs(x, num_aus=num_aus, num_expressions=num_expressions)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.backbone_name = backbone
        self.image_shape = input_shape
        self.stack_blocks = None if stack_blocks is None else [int(b) for b in stack_blocks]
        self.width = float(width)
        self.se_ratio = int(se_ratio)
        self.head_filters = int(head_filters)
        self.dropout_rate = float(dropout)
        self.negative_slope = float(negative_slope)
        self.num_aus = int(num_aus)
        self.num_expressions = int(num_expressions)
        self.fold_batchnorm = bool(fold_batchnorm)
        self.color_mode = color_mode

        # Always present so weight files have one layout; trainable only under uncertainty weighting.
        self.task_uncertainty = losses_lib.TaskUncertainty(TASKS, name="task_uncertainty")
        self.task_uncertainty.trainable = False
        self.task_weighting = "fixed"
        self._task_losses = None
        self._loss_trackers = _Trackers()

    def get_config(self):
        return {
            "backbone": self.backbone_name,
            "input_shape": list(self.image_shape),
            "stack_blocks": self.stack_blocks,
            "width": self.width,
            "se_ratio": self.se_ratio,
            "head_filters": self.head_filters,
            "dropout": self.dropout_rate,
            "negative_slope": self.negative_slope,
            "num_aus": self.num_aus,
            "num_expressions": self.num_expressions,
            "fold_batchnorm": self.fold_batchnorm,
            "color_mode": self.color_mode,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    def inference_model(self, precision="float32"):
        """A copy for fast prediction: batch norms folded into the convolutions, optionally in bfloat16.

        Folding turns conv -> batch norm (-> ReLU) into one convolution with a bias (fewer ops and memory
        passes; outputs equal to 1e-4), and the SE gates run as matrix products. The copy has this
        model's current weights and ``metadata``; it is not for training, and later changes to this model's
        weights do not reach it.

        Args:
            precision: ``"float32"``, or ``"bfloat16"`` (``mixed_bfloat16`` policy: bfloat16 compute with
                float32 weights and outputs; fast on CPUs with AVX-512 BF16 / AMX).

        Example:
            >>> fast = model.inference_model("bfloat16")
            >>> out = fast.predict_on_batch(images)
        """
        policies = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
        if precision not in policies:
            raise ValueError(f"precision must be one of {', '.join(policies)}, got {precision!r}")
        config = {**self.get_config(), "fold_batchnorm": True}
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policies[precision])
        try:
            fast = MTANet.from_config(config)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        source = {layer.name: layer for layer in self.layers}
        for layer in fast.layers:
            if not layer.weights:
                continue
            bn = source.get(layer.name[:-len("_conv")] + "_bn") if layer.name.endswith("_conv") else None
            if bn is None:  # no batch norm to fold (or this model is folded already)
                layer.set_weights(source[layer.name].get_weights())
                continue
            gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
            kernel = np.asarray(source[layer.name].get_weights()[0], np.float64)
            scale = gamma / np.sqrt(variance + bn.epsilon)
            layer.set_weights([(kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)])
        fast.metadata = getattr(self, "metadata", None)
        return fast

    # -- training ---------------------------------------------------------------------------------------

    def compile(self, optimizer="auto", loss="auto", loss_weights=None, metrics="auto",
                task_weighting="fixed", **kwargs):
        """Configure training; with no arguments, everything needed for partially labelled data.

        Args:
            optimizer: ``"auto"`` is AdamW (lr 1e-3, weight decay 1e-4); anything ``keras.Model.compile``
                accepts otherwise.
            loss: ``"auto"`` is ``{"va": CCCLoss(), "au": MaskedBinaryCrossentropy(), "expr":
                MaskedCategoricalCrossentropy()}``; a dict keyed by output replaces it.
            loss_weights: fixed per-task weights, e.g. ``{"va": 1.0, "au": 1.0, "expr": 1.0}``
                (with ``task_weighting="fixed"`` only).
            metrics: ``"auto"`` is streaming CCC per VA dimension, AU F1 and accuracy, expression macro F1
                and accuracy; ``None`` for none.
            task_weighting: ``"fixed"`` (loss_weights) or ``"uncertainty"``: learned task weights
                (Kendall et al. 2018), see ``losses.TaskUncertainty``.
            **kwargs: passed on to ``keras.Model.compile`` (``jit_compile``, ``steps_per_execution``...).
        """
        if task_weighting not in TASK_WEIGHTINGS:
            raise ValueError(f"task_weighting must be one of {TASK_WEIGHTINGS}, got {task_weighting!r}.")
        if task_weighting == "uncertainty" and loss_weights is not None:
            raise ValueError("loss_weights cannot be combined with task_weighting='uncertainty'.")
        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4)
        if isinstance(loss, str) and loss == "auto":
            loss = losses_lib.default_losses()
        if isinstance(metrics, str) and metrics == "auto":
            metrics = metrics_lib.default_metrics()

        self.task_weighting = task_weighting
        self.task_uncertainty.trainable = task_weighting == "uncertainty"
        if task_weighting == "uncertainty":
            if not isinstance(loss, dict) or set(loss) != set(TASKS):
                raise ValueError(f"task_weighting='uncertainty' needs one loss per task {TASKS}.")
            self._task_losses = {t: keras.losses.get(loss[t]) for t in TASKS}
            self._loss_trackers.reset({t: keras.metrics.Mean(name=f"{t}_loss") for t in TASKS})
            super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)
        else:
            self._task_losses = None
            self._loss_trackers.reset({})
            super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
                            **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.task_weighting != "uncertainty":
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        task_losses = {}
        for task, loss_fn in self._task_losses.items():
            weight = sample_weight.get(task) if isinstance(sample_weight, dict) else sample_weight
            task_losses[task] = ops.cast(loss_fn(y[task], y_pred[task], weight), "float32")
            self._loss_trackers.metrics[task].update_state(task_losses[task])
        total = self.task_uncertainty.combine(task_losses)
        for extra in self.losses:
            total = total + ops.cast(ops.sum(extra), "float32")
        return total

    # -- multi-worker training --------------------------------------------------------------------------
    # Keras 3 (checked: 3.15 with TensorFlow 2.21) cannot fit under MultiWorkerMirroredStrategy as it is:
    # (1) it builds the compiled state from the first batch passed through strategy.reduce, which takes single
    # values only, not the nested (x, {"va", "au", "expr"}) batch; (2) it reduces every log with
    # strategy.reduce("MEAN", v, axis=0), which fails for scalars. Under that strategy only, the model builds
    # from this worker's local batch and returns its logs as 1-element vectors (the mean over workers of
    # synchronised values is the value itself). Every other strategy takes Keras's own path.

    def _multi_worker(self):
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        return isinstance(getattr(self, "_distribute_strategy", None), tf.distribute.MultiWorkerMirroredStrategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not self._multi_worker():
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        import tensorflow as tf

        strategy = self._distribute_strategy
        for _, _, distributed in iterator:
            batch = next(distributed)
            break
        local = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, batch)
        with strategy.scope():
            self._symbolic_build(data_batch=local)

    # ``*args``: TensorFlow's and PyTorch's trainers call ``train_step(data)``, JAX's ``train_step(state, data)``.
    def train_step(self, *args):
        logs = super().train_step(*args)
        return self._vector_logs(logs) if self._multi_worker() else logs

    def test_step(self, *args):
        logs = super().test_step(*args)
        return self._vector_logs(logs) if self._multi_worker() else logs

    @staticmethod
    def _vector_logs(logs):
        return {k: ops.reshape(v, (1,)) if len(ops.shape(v)) == 0 else v for k, v in logs.items()}

    @property
    def metrics(self):
        return super().metrics + list(self._loss_trackers.metrics.values())

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["task_weighting"] = self.task_weighting
            if self.task_weighting == "uncertainty":
                config["loss"] = keras.saving.serialize_keras_object(self._task_losses)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)


class _Trackers:
    """Holds per-task loss trackers out of sight of Keras's attribute tracking (they are added to
    ``metrics`` explicitly, and only under uncertainty weighting, where Keras's own trackers are unused)."""

    def __init__(self):
        self.metrics = {}

    def reset(self, metrics):
        self.metrics = metrics
