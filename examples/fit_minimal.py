"""Train MTANet with plain ``model.fit`` on a few hundred generated faces with partial labels.

Every task has rows without annotation (Aff-Wild2's codes: VA -5, AU -1, EXPR -1); the default losses skip
them. Prints the per-task losses of each epoch, which fall, and the ABAW scores on held-out faces.

    python examples/fit_minimal.py [--epochs 8] [--size 48] [--train 480] [--test 160] [--width 1.0]

The test suite runs it with tiny settings (``--epochs 2 --size 32 --train 64 --test 32 --width 0.25
--head-filters 32``).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtanet  # noqa: E402
from keras_mtanet.data import synthetic  # noqa: E402


def main(epochs=8, size=48, n_train=480, n_test=160, width=1.0, head_filters=512, seed=0):
    images, labels = synthetic.generate(n_train + n_test, size=size, seed=seed, frames_per_video=40)
    rng = np.random.default_rng(seed)
    train_labels = synthetic.mask_partial({k: v[:n_train] for k, v in labels.items()}, rng)
    test_labels = {k: v[n_train:] for k, v in labels.items()}
    annotated = {k: float(np.mean(np.min(v.reshape(n_train, -1), axis=1) > -1 if k != "va"
                                  else v[:, 0] > -2)) for k, v in train_labels.items()}
    print("annotated share of training rows: " + ", ".join(f"{k} {v:.0%}" for k, v in annotated.items()))

    keras.utils.set_random_seed(seed)
    model = keras_mtanet.MTANet("se_resnet18", input_shape=(size, size, 3), stack_blocks=(1, 1, 1, 1), width=width,
                                head_filters=head_filters)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))

    class PrintLosses(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch {epoch + 1:2d}: loss {logs['loss']:.3f}  va_loss {logs['va_loss']:.3f}  "
                  f"au_loss {logs['au_loss']:.3f}  expr_loss {logs['expr_loss']:.3f}")

    history = model.fit(images[:n_train], train_labels, batch_size=32, epochs=epochs, verbose=0,
                        callbacks=[PrintLosses()])
    scores = keras_mtanet.abaw_scores(test_labels, model.predict(images[n_train:], verbose=0))
    print("held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return history.history


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive(int), default=8)
    parser.add_argument("--size", type=positive(int), default=48, help="face side in pixels (default 48)")
    parser.add_argument("--train", type=positive(int), default=480, help="training faces (default 480)")
    parser.add_argument("--test", type=positive(int), default=160, help="held-out faces (default 160)")
    parser.add_argument("--width", type=positive(float), default=1.0, help="backbone channel multiplier")
    parser.add_argument("--head-filters", type=positive(int), default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.size, args.train, args.test, args.width, args.head_filters, args.seed)
