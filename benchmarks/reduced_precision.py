"""bfloat16 and int8 inference: speed against float32 and the change in every ABAW score, in one run.

Scores: a trained preset (default: the synthetic one) on generated validation faces it has not seen, through
each asked-for runtime of ``keras_mtanet.inference.runtimes`` in every precision it offers: Keras float32
(batch-norm-folded ``inference_model()``, the reference) and bfloat16, TFLite float32 and int8 (calibrated on
other generated faces), OpenVINO float32 and bfloat16, ONNX Runtime float32. Speed: the same paths on
SE-ResNet-50 MTANet at 112 px (random weights; speed does not depend on them), batch 32.

    python benchmarks/reduced_precision.py [--model PRESET] [--faces 600] [--runtime keras tflite openvino ...]
    python benchmarks/reduced_precision.py --runtime openvino --quick   # 300 faces, scores only
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from timing import rate

from keras_mtanet import MTANet, abaw_scores, load_pretrained
from keras_mtanet.data import synthetic
from keras_mtanet.inference import runtimes
from keras_mtanet.labels import TASKS

KEYS = ("ccc_valence", "ccc_arousal", "va_score", "expr_f1", "expr_acc", "expr_score", "au_f1", "au_acc",
        "au_score")


def batched(fn, images, batch=64):
    parts = [fn(images[i:i + batch]) for i in range(0, len(images), batch)]
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in TASKS}


def paths(model, names, cache, calibration):
    """"runtime precision" -> predict function over a batch: Keras float32 first (the reference), then every
    precision of each runtime in ``names``."""
    wanted = [("keras", "float32")] + [(name, precision) for name in names for precision in runtimes.PRECISIONS[name]
                                       if (name, precision) != ("keras", "float32")]
    return {f"{name} {precision}": runtimes.load_runtime(model, name, precision, cache_dir=cache,
                                                         calibration=calibration)
            for name, precision in wanted}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mtanet_se_resnet18_synth",
                        help="preset to score on generated synthetic faces (default: the synthetic preset)")
    parser.add_argument("--faces", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtime", nargs="+", choices=runtimes.RUNTIMES, default=["keras", "tflite"],
                        help="runtimes to score in every precision they offer (keras float32 is always the reference)")
    parser.add_argument("--quick", action="store_true", help="300 faces and no speed measurement")
    args = parser.parse_args()
    if args.quick:
        args.faces = min(args.faces, 300)

    model = load_pretrained(args.model)
    size = int(model.input_shape[1])
    images, labels = synthetic.generate(args.faces, size=size, seed=31337, frames_per_video=30)
    calibration, _ = synthetic.generate(200, size=size, seed=4711)
    with tempfile.TemporaryDirectory() as tmp:
        runs = paths(model, args.runtime, tmp, calibration.astype(np.float32))
        scores = {name: abaw_scores(labels, batched(fn, images.astype(np.float32))) for name, fn in runs.items()}
    base = scores["keras float32"]
    print(f"ABAW scores of {model.metadata.get('name', args.model)} on {args.faces} generated validation faces "
          f"(change vs keras float32):")
    print(f"{'path':<21}" + "".join(f"{k:>13}" for k in KEYS) + "  largest change")
    for name, s in scores.items():
        print(f"{name:<21}" + "".join(f"{s[k]:>7.4f}{s[k] - base[k]:>+6.3f}" for k in KEYS)
              + f"  {max(abs(s[k] - base[k]) for k in KEYS):.4f}")
    if args.quick:
        return

    big = MTANet("se_resnet50", input_shape=(112, 112, 3))
    x = np.random.default_rng(0).uniform(0, 255, (args.batch_size, 112, 112, 3)).astype(np.float32)
    big_calibration = np.random.default_rng(1).uniform(0, 255, (32, 112, 112, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        speeds = {name: rate(lambda fn=fn: fn(x), args.batch_size)
                  for name, fn in paths(big, args.runtime, tmp, big_calibration).items()}
    print(f"\nSE-ResNet-50 MTANet, 112 px, batch {args.batch_size}, {os.cpu_count()} cores: img/s (ratio to keras "
          f"float32)")
    for name, ips in speeds.items():
        print(f"  {name:<21} {ips:7.1f}  ({ips / speeds['keras float32']:.2f}x)")


if __name__ == "__main__":
    main()
