"""Train an MTANet on FER+ with Keras's JAX backend (a GPU, no TensorFlow), from packed arrays.

``keras-mtanet train`` reads images through tf.data. A machine with a GPU and JAX but no TensorFlow can still
train the same model with the same losses, metrics and augmentation layers (all backend-independent Keras):
this script packs the FER+ training split and the teacher labels into a few files once (``pack``, on the
machine that has the data), then trains from them with ``model.fit`` on whatever backend ``KERAS_BACKEND``
selects (``train``), and writes the weights. ``keras_mtanet.presets.folder.save_preset`` (or ``preset`` below)
turns them into a preset on any backend.

    python examples/train_ferplus_jax.py pack --data FERPLUS_ROOT --labels labels.csv --output packed/
    KERAS_BACKEND=jax python examples/train_ferplus_jax.py train --packed packed/ --config RECIPE.json \\
        --output weights.weights.h5 [--input-size 112]

Images travel as lossless WebP mosaics of the 48 x 48 faces (0.70 of their raw size), targets as an npz.
Resizing is bilinear, as in the tf.data pipeline; the augmentation does ``data.augment``'s transformations
with OpenCV on CPU threads.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
if sys.argv[1:2] == ["train"]:
    os.environ.setdefault("KERAS_BACKEND", "jax")  # read when keras is first imported

import numpy as np  # noqa: E402

COLUMNS, TILE = 64, 48
PER_CHUNK = COLUMNS * 300  # WebP images are at most 16383 px high


def pack(args):
    import cv2

    from keras_mtanet.data import ferplus
    from keras_mtanet.teachers import cache

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    index = ferplus.read_index(args.data, "train", labels=cache.read_labels(args.labels) if args.labels else None)
    faces = np.stack([cv2.imread(p, cv2.IMREAD_GRAYSCALE) for p in index.paths])
    chunks = []
    for c, lo in enumerate(range(0, len(faces), PER_CHUNK)):
        part = faces[lo:lo + PER_CHUNK]
        rows = -(-len(part) // COLUMNS)
        mosaic = np.zeros((rows * TILE, COLUMNS * TILE), np.uint8)
        for i, face in enumerate(part):
            r, k = divmod(i, COLUMNS)
            mosaic[r * TILE:(r + 1) * TILE, k * TILE:(k + 1) * TILE] = face
        ok, data = cv2.imencode(".webp", mosaic, [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101: lossless
        assert ok and np.array_equal(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), mosaic)
        (out / f"train_{c}.webp").write_bytes(data.tobytes())
        chunks.append(len(part))
    np.savez(out / "train_targets.npz", expr=index.expr_soft, au=index.au, va=index.va, majority=index.expr,
             chunks=np.array(chunks))
    print(f"packed {len(faces)} faces in {len(chunks)} mosaics to {out}")


def unpack(folder):
    import cv2

    targets = np.load(Path(folder) / "train_targets.npz")
    faces = []
    for c, count in enumerate(targets["chunks"]):
        mosaic = cv2.imdecode(np.fromfile(Path(folder) / f"train_{c}.webp", np.uint8), cv2.IMREAD_GRAYSCALE)
        for i in range(int(count)):
            r, k = divmod(i, COLUMNS)
            faces.append(mosaic[r * TILE:(r + 1) * TILE, k * TILE:(k + 1) * TILE])
    return np.stack(faces), {key: targets[key] for key in ("va", "au", "expr")}


def train(args):
    import cv2
    import keras

    from keras_mtanet.model.task import MTANet
    from keras_mtanet.training import recipe  # the config and what it builds, without TensorFlow

    config = recipe.load_config(args.config, input_size=args.input_size, epochs=args.epochs)
    faces, targets = unpack(args.packed)
    size, batch = int(config["input_size"]), int(config["batch_size"])
    keras.utils.set_random_seed(int(config["seed"]))
    if config["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    augment = bool(config["augment"])

    class Batches(keras.utils.PyDataset):
        """Shuffled batches, resized and augmented with OpenCV on CPU threads: ``data.augment``'s layers run
        eagerly here (they are fast inside tf.data graphs, slow op by op on JAX), so this does the same
        transformations per image: flip, rotation up to 11 degrees, zoom and shift up to 10% and 5%, brightness
        and contrast up to 20%, and (with ``random_erasing``) half of the faces get a noise patch of 2-20% of
        their area."""

        def __init__(self):
            super().__init__(workers=8, use_multiprocessing=False)
            self.order = np.random.default_rng(int(config["seed"])).permutation(len(faces))
            self.epoch = 0

        def __len__(self):
            return -(-len(faces) // batch)

        def on_epoch_end(self):
            self.epoch += 1
            np.random.default_rng([int(config["seed"]), self.epoch]).shuffle(self.order)

        def __getitem__(self, i):
            rng = np.random.default_rng([int(config["seed"]), self.epoch, i])
            rows = self.order[i * batch:(i + 1) * batch]
            images = np.stack([self.augment(faces[r], rng) if augment else
                               cv2.resize(faces[r], (size, size), interpolation=cv2.INTER_LINEAR) for r in rows])
            images = np.repeat(images.astype(np.float32)[..., None], 3, axis=-1)
            return images, {key: value[rows] for key, value in targets.items()}

        @staticmethod
        def augment(face, rng):
            image = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            if rng.random() < 0.5:
                image = image[:, ::-1]
            angle, zoom = rng.uniform(-10.8, 10.8), rng.uniform(0.9, 1.1)
            matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, zoom)
            matrix[:, 2] += rng.uniform(-0.05, 0.05, 2) * size
            image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
            mean = image.mean()
            image = (image - mean) * rng.uniform(0.8, 1.2) + mean + rng.uniform(-0.2, 0.2) * 255
            if config["random_erasing"] and rng.random() < 0.5:
                area, aspect = rng.uniform(0.02, 0.2) * size * size, np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
                h, w = min(size, int(round(np.sqrt(area * aspect)))), min(size, int(round(np.sqrt(area / aspect))))
                y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
                image[y:y + h, x:x + w] = rng.uniform(0, 255, (h, w))
            return np.clip(image, 0, 255)

    data = Batches()
    model = recipe.build_model(config)
    index = argparse.Namespace(au=targets["au"])  # what compile_model reads (the AU positive weights)
    recipe.compile_model(model, config, index, len(data))
    started = time.perf_counter()

    class Budget(keras.callbacks.Callback):
        """Stops after the epoch that would let the next one overrun ``--time-budget`` (a leased GPU's limit)."""
        last, stopped_after = started, None

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            if args.time_budget and now - started + (now - self.last) > args.time_budget:
                self.model.stop_training, self.stopped_after = True, epoch + 1
            self.last = now

    budget = Budget()
    history = model.fit(data, epochs=int(config["epochs"]), verbose=2, callbacks=[budget])
    seconds = time.perf_counter() - started
    bare = MTANet.from_config(model.get_config())  # a compiled model's file would carry the optimizer's slots too
    bare.set_weights(model.get_weights())
    output = Path(args.output)
    tmp = output.with_name(f".tmp-{output.name}")  # renamed into place once complete
    bare.save_weights(tmp)
    os.replace(tmp, output)
    output.with_suffix(".json").write_text(json.dumps(
        {"config": config, "seconds": round(seconds, 1), "backend": keras.backend.backend(),
         "epochs_run": len(history.history.get("loss", [])), "stopped_by_time_budget": budget.stopped_after,
         "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}, indent=1))
    print(f"trained {len(history.history.get('loss', []))} of {config['epochs']} epochs in {seconds:.0f} s on "
          f"{keras.backend.backend()}; "
          f"weights: {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--output", required=True)
    t = sub.add_parser("train")
    t.add_argument("--packed", required=True)
    t.add_argument("--config", required=True)
    t.add_argument("--output", required=True, help="a .weights.h5 file")
    t.add_argument("--input-size", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--time-budget", type=float, help="seconds; stop before an epoch would overrun them")
    args = parser.parse_args()
    (pack if args.command == "pack" else train)(args)


if __name__ == "__main__":
    main()
