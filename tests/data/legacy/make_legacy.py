"""Writes the files in this folder with keras_mtanet as of commit 3d7d2ab (before ``SEResNetBackbone``):

    git worktree add /tmp/base 3d7d2ab && cd /tmp/base && python /path/to/tests/data/legacy/make_legacy.py OUT

A tiny MTANet per colour mode, trained one epoch so batch-norm statistics and the optimizer are not at their
initial values, saved as ``.keras`` and ``.weights.h5``, with the inputs and the outputs it predicted then.
tests/model/test_task.py checks that today's code loads them and predicts the same.
"""

import sys
from pathlib import Path

import numpy as np

import keras_mtanet
from keras_mtanet import MTANet

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (6, 32, 32, 3)).astype("uint8")
np.save(out / "inputs.npy", x)
for color_mode in ("rgb", "grayscale"):
    model = MTANet("se_resnet18", input_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1), width=0.125, head_filters=8,
                   color_mode=color_mode)
    model.compile()
    n = 16
    y = {"va": rng.uniform(-1, 1, (n, 2)).astype("float32"), "au": rng.integers(0, 2, (n, 8)).astype("float32"),
         "expr": rng.integers(0, 7, (n,)).astype("int32")}
    model.fit(rng.integers(0, 256, (n, 32, 32, 3)).astype("float32"), y, batch_size=8, epochs=1, verbose=0)
    model.save(out / f"{color_mode}.keras")
    model.save_weights(out / f"{color_mode}.weights.h5")
    np.savez(out / f"{color_mode}_outputs.npz", **model.predict(x.astype("float32"), verbose=0))
print(keras_mtanet.__version__, sorted(p.name for p in out.iterdir()))
