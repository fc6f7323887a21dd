"""Inference on real images and video: face detection, alignment, tracking, batched prediction through a choice
of runtime, and the records it writes. ``keras_mtanet.Predictor`` is the way in."""
