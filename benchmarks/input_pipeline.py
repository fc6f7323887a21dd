"""Is the input pipeline fast enough? Frames/s it delivers vs SE-ResNet-50 MTANet training img/s.

Both are measured in the same run on the same machine: the pipeline reads generated 112 px Aff-Wild2-layout
JPEG crops through ``affwild2.read_index`` and ``datasets.make_dataset(training=True)`` (decode, resize,
shuffle, augmentation, batching); the model trains with ``model.fit`` on in-memory batches of the same size.
A ratio above 1 means the pipeline is not the bottleneck.

    python benchmarks/input_pipeline.py [--videos 8] [--batch-size 32] [--steps 10]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mtanet import MTANet  # noqa: E402
from keras_mtanet.data import affwild2, datasets, synthetic  # noqa: E402


def pipeline_fps(index, size, batch_size, epochs=2, augment=None):
    ds = datasets.make_dataset(index, size, batch_size, training=True, seed=0, augment=augment)
    for _ in ds.take(2):  # warm-up: graph tracing, thread pools
        pass
    start, frames = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _ in ds:
            frames += int(images.shape[0])
    return frames / (time.perf_counter() - start)


def training_ips(size, batch_size, steps, backbone):
    model = MTANet(backbone, input_shape=(size, size, 3))
    model.compile()
    images, labels = synthetic.generate(batch_size, size=size, seed=0)
    x = np.repeat(images[None], steps, 0).reshape(-1, size, size, 3).astype("float32")
    y = {k: np.repeat(v[None], steps, 0).reshape((-1,) + v.shape[1:]) for k, v in labels.items()}
    # Arrays through datasets.from_arrays (Keras's own array adapter can stall at the end of the epoch).
    warm_up = datasets.from_arrays(x[:2 * batch_size], {k: v[:2 * batch_size] for k, v in y.items()}, batch_size)
    model.fit(warm_up, epochs=1, verbose=0)  # tracing
    data = datasets.from_arrays(x, y, batch_size)
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backbone", default="se_resnet50")
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="pipeline_bench_")
    synthetic.write_affwild2(root, train_videos=args.videos, val_videos=0, frames=90, size=112, seed=0)
    index = affwild2.read_index(root, "Training_Set")
    keras.utils.set_random_seed(0)
    fps = pipeline_fps(index, args.size, args.batch_size)
    fps_plain = pipeline_fps(index, args.size, args.batch_size, augment=False)
    ips = training_ips(args.size, args.batch_size, args.steps, args.backbone)
    print(f"frames: {len(index)} JPEG crops of 112 px, model input {args.size} px, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores")
    print(f"input pipeline with augmentation: {fps:8.1f} frames/s")
    print(f"input pipeline without augmentation: {fps_plain:8.1f} frames/s")
    print(f"{args.backbone} MTANet training (model.fit): {ips:8.1f} img/s")
    print(f"ratio pipeline / training: {fps / ips:.1f}x with augmentation, {fps_plain / ips:.1f}x without "
          f"({'the pipeline is not' if fps > ips else 'the pipeline IS'} the bottleneck)")


if __name__ == "__main__":
    main()
