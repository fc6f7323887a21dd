"""keras_mtanet: multi-task facial affect (valence/arousal, action units, expressions) with Keras 3.

Implements MTANet (Zhang & Gu, arXiv:2002.00606) with the ABAW 2020 metrics. The public API below loads on
first use (PEP 562): ``import keras_mtanet`` imports nothing but this table, so it starts no backend and works
on every Keras backend; ``keras_mtanet.MTANet`` loads Keras, ``keras_mtanet.Predictor`` the inference stack.
"""

import importlib

from keras_mtanet.version import __version__

# Each public name and the module that defines it: its one import path is ``keras_mtanet.<name>``.
_API = {
    "MTANet": "keras_mtanet.model.task",
    "load_pretrained": "keras_mtanet.model.task",
    "SEResNetBackbone": "keras_mtanet.model.backbone",
    "ImageConverter": "keras_mtanet.model.image_converter",
    "Predictor": "keras_mtanet.inference.predictor",
    "abaw_scores": "keras_mtanet.metrics",
    "list_presets": "keras_mtanet.presets.registry",
    "publish": "keras_mtanet.presets.publish",
    "MTANetError": "keras_mtanet.errors",
    "UsageError": "keras_mtanet.errors",
    "DataError": "keras_mtanet.errors",
    "PresetError": "keras_mtanet.errors",
    "DependencyError": "keras_mtanet.errors",
}
_MODULES = ("labels", "losses", "metrics")
# Presets find their model class in the Keras registry; these names load the classes that register there first.
_NEEDS_MODEL_CLASSES = ("SEResNetBackbone", "publish")


def __getattr__(name):
    if name in _API:
        if name in _NEEDS_MODEL_CLASSES:
            importlib.import_module("keras_mtanet.model.task")
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"keras_mtanet.{name}")
    else:
        raise AttributeError(f"module 'keras_mtanet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_API) + list(_MODULES))


__all__ = [*_API, *_MODULES, "__version__"]
