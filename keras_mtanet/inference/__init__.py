"""Inference on real images and video: face detection, alignment, tracking, batched prediction through a choice
of runtime, outputs."""

from keras_mtanet.inference.predictor import FilesReport, Predictor

__all__ = ["FilesReport", "Predictor"]
