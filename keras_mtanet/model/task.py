"""MTANet: a shared SE-ResNet backbone with valence/arousal, action-unit and expression heads.

Reference: Zhang & Gu, "Facial Affect Recognition in the Wild Using Multi-Task Learning Convolutional
Network", arXiv:2002.00606 (ABAW 2020 at FG 2020).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_mtanet import losses as losses_lib
from keras_mtanet import metrics as metrics_lib
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES, TASKS
from keras_mtanet.model import backbone as backbone_lib
from keras_mtanet.model import config, fused, head, image_converter
from keras_mtanet.presets import folder as preset_folder


@keras.saving.register_keras_serializable(package="keras_mtanet")
class MTANet(keras.Model):
    """Multi-task affect network: RGB face crops in [0, 255] -> ``{"va", "au", "expr"}``.

    The task model of the package: an image converter (``model.preprocessor``: grey conversion for grey-trained
    weights, normalisation to [-1, 1]), an SE-ResNet (``model.backbone``, an ``SEResNetBackbone``) and the
    MTANet head (two pooled branches, then one layer per task). Callers feed plain 0-255 RGB pixels.

    Args:
        backbone: ``"se_resnet18"``, ``"se_resnet34"``, ``"se_resnet50"`` or ``"se_resnet101"`` (a new backbone
            with the arguments below), or an ``SEResNetBackbone`` to build on (then ``stack_blocks``,
            ``width``, ``se_ratio`` and ``fold_batchnorm`` are taken from it).
        input_shape: (height, width, 3) of the face crops; the paper uses 112x112.
        stack_blocks: optional four block counts replacing the backbone's (e.g. ``(1, 1, 1, 1)`` for tests).
        width: multiplier on the backbone's filter counts.
        se_ratio: squeeze-and-excitation reduction ratio (16 in SE-ResNet; 0 disables SE).
        head_filters: filters of each head branch's 1x1 convolution (512: 1024 pooled features).
        dropout: dropout rate before the head convolutions.
        negative_slope: LeakyReLU slope in the head.
        color_mode: ``"rgb"``, or ``"grayscale"``: the model converts its input to grey first (for models
            trained on grey faces, such as FER+; weights are the same shape either way).
        alignment_template: where alignment puts the eyes, nose tip and mouth corners (five (x, y) points in
            unit coordinates of the crop); ``None`` is ``image_converter.DEFAULT_TEMPLATE``.
        fold_batchnorm: build the inference form, with each batch norm folded into its convolution (made by
            ``inference_model()``; not for training).

    Outputs:
        ``"va"`` (N, 2) valence and arousal in [-1, 1] (tanh); ``"au"`` (N, 8) probabilities of
        ``labels.AU_NAMES`` (sigmoid); ``"expr"`` (N, 7) probabilities of ``labels.EXPR_NAMES`` (softmax).

    Example:
        >>> model = MTANet("se_resnet18", input_shape=(64, 64, 3), stack_blocks=(1, 1, 1, 1))
        >>> model.compile()  # masked CCC / BCE / CE losses and the ABAW metrics
        >>> out = model.predict(images)  # images: (N, 64, 64, 3) uint8 or float in [0, 255]
        >>> out["va"].shape, out["au"].shape, out["expr"].shape
        ((N, 2), (N, 8), (N, 7))
        >>> model.backbone.trainable = False  # fine-tune the head only
        >>> model = MTANet.from_preset("mtanet_se_resnet18_ferplus_112")
    """

    def __init__(self, backbone="se_resnet50", input_shape=(112, 112, 3), stack_blocks=None, width=1.0,
                 se_ratio=16, head_filters=512, dropout=0.5, negative_slope=0.3, fold_batchnorm=False,
                 color_mode="rgb", alignment_template=None, name="mtanet", **kwargs):
        _check_fixed_outputs(kwargs)
        input_shape = tuple(config.check_value("input_shape", input_shape))
        # Before the backbone is built (seconds for a large one); it and the converter check their own settings.
        for key, value in (("head_filters", head_filters), ("dropout", dropout), ("negative_slope", negative_slope),
                           ("fold_batchnorm", fold_batchnorm), ("color_mode", color_mode)):
            config.check_value(key, value)
        if isinstance(backbone, dict):  # a serialised SEResNetBackbone
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(backbone, backbone_lib.SEResNetBackbone):
            stack_blocks, width, se_ratio = backbone.stack_blocks, backbone.width, backbone.se_ratio
            fold_batchnorm = backbone.folded
        else:
            backbone = backbone_lib.SEResNetBackbone(backbone, image_shape=input_shape, stack_blocks=stack_blocks,
                                                     se_ratio=se_ratio, width=width, folded=fold_batchnorm)
        preprocessor = image_converter.ImageConverter(image_size=input_shape[:2], color_mode=color_mode,
                                                      alignment_template=alignment_template)

        inputs = keras.Input(shape=input_shape, name="image")
        x = backbone.apply_to(preprocessor(inputs))
        x = head.pooled_features(x, filters=head_filters, dropout=dropout, negative_slope=negative_slope)
        outputs = head.task_outputs(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.backbone = backbone
        self.preprocessor = preprocessor
        self.image_shape = input_shape
        self.head_filters = int(head_filters)
        self.dropout_rate = float(dropout)
        self.negative_slope = float(negative_slope)

        # Always present so weight files have one layout; trainable only under uncertainty weighting.
        self.task_uncertainty = losses_lib.TaskUncertainty(TASKS, name="task_uncertainty")
        self.task_uncertainty.trainable = False
        self.task_weighting = "fixed"
        self._task_losses = None
        self._loss_trackers = _Trackers()

    # The backbone's and converter's settings, under the names this class has always had.
    backbone_name = property(lambda self: self.backbone.variant)
    stack_blocks = property(lambda self: self.backbone.stack_blocks)
    width = property(lambda self: self.backbone.width)
    se_ratio = property(lambda self: self.backbone.se_ratio)
    fold_batchnorm = property(lambda self: self.backbone.folded)
    color_mode = property(lambda self: self.preprocessor.color_mode)
    num_aus = len(AU_NAMES)
    num_expressions = len(EXPR_NAMES)

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
            "fold_batchnorm": self.fold_batchnorm,
            "color_mode": self.color_mode,
            "alignment_template": self.preprocessor.alignment_template,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, compile=False, **kwargs):
        """Load a preset: a registry name (see ``keras_mtanet.list_presets()``), ``"hf://org/repo@rev"`` or a
        local preset folder. Every file is checked against its sha256 before it is read.

        Args:
            preset: the preset to load; ``None`` is the package's default preset.
            compile: also compile with the default losses and metrics.
            **kwargs: ``revision``, ``cache_dir``, ``token``, ``endpoint`` for Hub presets (see
                ``keras_mtanet.load_pretrained``).
        """
        return preset_folder.load(preset, compile=compile, cls=cls, **kwargs)

    # The architecture's schema (keras_mtanet.model.config), for the checks of untrusted presets, which find this
    # class in the Keras registry and never import it.
    @staticmethod
    def check_config(config_dict):
        """A config (a preset's config.json) checked and completed with the defaults; ``ValueError`` names the
        first bad key."""
        return config.check(config_dict)

    config_parameters = staticmethod(config.parameters)
    config_activation_bytes = staticmethod(config.activation_bytes)

    def inference_model(self, precision="float32"):
        """A copy for fast prediction: batch norms folded into the convolutions, optionally in bfloat16.

        Folding turns conv -> batch norm (-> ReLU) into one convolution with a bias (fewer ops and memory
        passes; outputs equal to 1e-4), and the SE gates run as matrix products. The copy has this
        model's current weights and ``metadata``; it is not for training, and later changes to this model's
        weights do not reach it. See ``fused.fold_batchnorm``.

        Args:
            precision: ``"float32"``, or ``"bfloat16"`` (``mixed_bfloat16`` policy: bfloat16 compute with
                float32 weights and outputs; fast on CPUs with AVX-512 BF16 / AMX).

        Example:
            >>> fast = model.inference_model("bfloat16")
            >>> out = fast.predict_on_batch(images)
        """
        return fused.fold_batchnorm(self, precision)

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict``; an empty batch of images ((0, H, W, 3)) gives empty outputs."""
        empty = self._empty_outputs(x)
        return empty if empty is not None else super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        empty = self._empty_outputs(x)
        return empty if empty is not None else super().predict_on_batch(x)

    def _empty_outputs(self, x):
        """``{"va": (0, 2), "au": (0, 8), "expr": (0, 7)}`` float32 arrays for an array-like ``x`` of no images
        (Keras fails on one with an internal error), None for anything else."""
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) < 1 or shape[0] != 0:
            return None
        if tuple(shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"expected images of shape (N, {', '.join(map(str, self.image_shape))}), got "
                             f"{tuple(shape)}.")
        sizes = {"va": 2, "au": self.num_aus, "expr": self.num_expressions}
        return {task: np.zeros((0, size), np.float32) for task, size in sizes.items()}

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
        if task_weighting not in config.TASK_WEIGHTINGS:
            raise ValueError(f"task_weighting must be one of {config.TASK_WEIGHTINGS}, got {task_weighting!r}.")
        if task_weighting == "uncertainty" and loss_weights is not None:
            raise ValueError("loss_weights cannot be combined with task_weighting='uncertainty'.")
        _check_per_task("loss_weights", loss_weights)
        _check_per_task("loss", loss)
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


def _check_per_task(name, value):
    """``ValueError`` for a dict with a key that is not an output (a typo such as ``{"vа": 1}`` would otherwise
    be ignored or fail deep inside Keras), and for a loss weight that is not a finite number at least 0."""
    if not isinstance(value, dict):
        return
    unknown = [key for key in value if key not in TASKS]
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {', '.join(map(repr, unknown))}; the outputs are "
                         f"{', '.join(TASKS)}.")
    if name == "loss_weights":
        for key, weight in value.items():
            try:
                ok = not isinstance(weight, bool) and math.isfinite(float(weight)) and float(weight) >= 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"loss_weights[{key!r}] must be a finite number at least 0, got {weight!r}.")


def _check_fixed_outputs(kwargs):
    """The outputs follow ``labels.AU_NAMES`` and ``labels.EXPR_NAMES``. Configs saved by earlier versions
    carry ``num_aus``/``num_expressions``, which are accepted with those sizes only."""
    for key, names in (("num_aus", AU_NAMES), ("num_expressions", EXPR_NAMES)):
        if key in kwargs and int(kwargs.pop(key)) != len(names):
            raise ValueError(f"{key} is fixed to {len(names)} (keras_mtanet.labels); other label sets need "
                             "their own output layer on model.backbone.")


def load_pretrained(name=None, revision=None, cache_dir=None, token=None, endpoint=None, compile=False):
    """Load a pretrained MTANet (``MTANet.from_preset``): a registry name, ``hf://org/repo[@revision]`` or a local
    preset folder.

    With no name, the embedded default preset (``keras_mtanet.presets.registry.DEFAULT_PRESET``,
    ``mtanet_se_resnet18_ferplus_112``: trained on the real faces of FER+; see its model card) loads from the
    installed package, with no network.

    Registry presets download at their pinned commit and each file must match the registry's sha256; a
    file that does not is deleted from the cache and the error names it. ``hf://`` presets are checked
    against the sha256 list in their own ``metadata.json``.

    Args:
        name: preset name (see ``list_presets()``), ``hf://org/repo[@revision]``, or a folder path.
        revision: a commit sha, tag or branch; overrides the registry's pinned revision or an ``@revision``.
        cache_dir: Hugging Face cache folder (default: the usual HF cache).
        token: Hub token (default: ``HF_TOKEN`` / the saved login); never printed or stored.
        endpoint: Hub URL (default: ``HF_ENDPOINT`` or huggingface.co).
        compile: compile the model with ``MTANet.compile()`` defaults.

    Returns:
        An ``MTANet`` with the preset weights; ``model.metadata`` holds its ``metadata.json``.

    Example:
        >>> model = keras_mtanet.load_pretrained()
        >>> model.metadata["expression_names"][4]
        'Happiness'
    """
    return MTANet.from_preset(name, compile=compile, revision=revision, cache_dir=cache_dir, token=token,
                              endpoint=endpoint)
