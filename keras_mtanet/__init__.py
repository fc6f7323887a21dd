"""keras_mtanet: multi-task facial affect (valence/arousal, action units, expressions) with Keras 3.

Implements MTANet (Zhang & Gu, arXiv:2002.00606) with the ABAW 2020 metrics.
"""

from keras_mtanet.version import __version__
from keras_mtanet.startup import quiet_start; quiet_start()  # before Keras: see keras_mtanet/startup.py
from keras_mtanet import labels, losses, metrics
from keras_mtanet.backbone import SEResNet, SEResNetBackbone
from keras_mtanet.errors import DataError, DependencyError, MTANetError, PresetError, UsageError
from keras_mtanet.hub import load_pretrained, publish
from keras_mtanet.metrics import abaw_scores
from keras_mtanet.model import MTANet
from keras_mtanet.preprocessing import ImageConverter
from keras_mtanet.presets import list_presets


def __getattr__(name):
    # The inference stack (OpenCV, TensorFlow, the detectors) loads on first use of ``Predictor``, so that
    # ``import keras_mtanet`` stays light and works on backends without TensorFlow.
    if name == "Predictor":
        from keras_mtanet.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'keras_mtanet' has no attribute {name!r}")


__all__ = ["MTANet", "SEResNetBackbone", "ImageConverter", "Predictor", "SEResNet", "abaw_scores",
           "load_pretrained", "publish", "list_presets",
           "MTANetError", "UsageError", "DataError", "PresetError", "DependencyError",
           "labels", "losses", "metrics", "__version__"]
