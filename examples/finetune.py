"""Fine-tune a preset on new labels: load it, freeze the backbone, fit the heads, then unfreeze briefly.

Runs as is on generated faces (a new synthetic identity set, partially labelled); point ``load_data`` at your
own images and labels (0-255 RGB crops at the preset's input size; VA -5, AU -1, EXPR -1 where unannotated).

    python examples/finetune.py [--preset mtanet_se_resnet18_synth] [--epochs 3] [--frames 360]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtanet  # noqa: E402
from keras_mtanet.data import synthetic  # noqa: E402


def load_data(size, frames=360, seed=11):
    images, labels = synthetic.generate(frames, size=size, seed=seed, frames_per_video=60)
    cut = frames * 2 // 3
    train_labels = synthetic.mask_partial({k: v[:cut] for k, v in labels.items()}, np.random.default_rng(seed))
    return (images[:cut].astype("float32"), train_labels), (images[cut:].astype("float32"),
                                                            {k: v[cut:] for k, v in labels.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="preset name, hf:// address or folder (default: embedded)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=360, help="generated faces: 2/3 to train, 1/3 to test")
    args = parser.parse_args(argv)

    model = keras_mtanet.MTANet.from_preset(args.preset)
    size = model.preprocessor.image_size[0]
    (x, y), (x_test, y_test) = load_data(size, args.frames)
    before = keras_mtanet.abaw_scores(y_test, model.predict(x_test, verbose=0))

    # Stage 1: only the head learns; BatchNorm statistics of the frozen backbone stay as they are.
    model.backbone.trainable = False
    print(f"stage 1 trains {len(model.trainable_weights)} of {len(model.weights)} weight tensors (the head)")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=2)
    # Stage 2: everything, with a small learning rate.
    model.backbone.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    model.fit(x, y, batch_size=32, epochs=1, verbose=2)

    after = keras_mtanet.abaw_scores(y_test, model.predict(x_test, verbose=0))
    for key in ("va_score", "expr_f1", "au_f1"):
        print(f"{key}: {before[key]:.3f} before fine-tuning, {after[key]:.3f} after")
    return after


if __name__ == "__main__":
    main()
