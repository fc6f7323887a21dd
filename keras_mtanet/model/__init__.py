"""The MTANet model: its architecture schema (config), blocks, backbone, head, image converter, task and the
TensorFlow-only fast layers (fused)."""
