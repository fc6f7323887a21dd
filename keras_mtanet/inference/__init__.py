"""Inference on real images and video: face detection, alignment, tracking, batched prediction, outputs."""

from keras_mtanet.inference.predictor import Predictor

__all__ = ["Predictor"]
