"""Writes ``preprocessor_preset/`` and ``preprocessor_preset_outputs.npz`` in this folder with keras_mtanet as of
commit b41459d (presets stored the image converter as ``preprocessor.json``, today's ``image_converter.json``):

    git worktree add /tmp/old b41459d && cd /tmp/old && python /path/to/tests/data/legacy/make_legacy_preset.py OUT

A tiny grey MTANet with a non-default alignment template, trained one epoch, saved as a preset, with the outputs
it predicted for ``inputs.npy``. tests/model/test_config.py checks that today's code loads it and predicts the
same.
"""

import sys
from pathlib import Path

import numpy as np

from keras_mtanet import MTANet, zoo

out = Path(sys.argv[1])
rng = np.random.default_rng(1)
x = np.load(out / "inputs.npy")
model = MTANet("se_resnet18", input_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1), width=0.125, head_filters=8,
               color_mode="grayscale", alignment_template=[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8],
                                                           [0.65, 0.8]])
model.compile()
n = 16
y = {"va": rng.uniform(-1, 1, (n, 2)).astype("float32"), "au": rng.integers(0, 2, (n, 8)).astype("float32"),
     "expr": rng.integers(0, 7, (n,)).astype("int32")}
model.fit(rng.integers(0, 256, (n, 32, 32, 3)).astype("float32"), y, batch_size=8, epochs=1, verbose=0)
meta = zoo.preset_metadata(model, "random faces, one epoch (a test fixture)", name="preprocessor_preset")
zoo.save_preset(model, out / "preprocessor_preset", meta, zoo.model_card_text(meta, "preprocessor_preset"))
np.savez(out / "preprocessor_preset_outputs.npz", **model.predict(x.astype("float32"), verbose=0))
print(sorted(p.name for p in (out / "preprocessor_preset").iterdir()))
