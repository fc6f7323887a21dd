"""bfloat16 and int8 inference: speed against float32 and the change in every ABAW score, in one run.

Scores: a trained preset (default: the embedded one) on generated validation faces it has not seen, in
float32 (Keras, batch-norm-folded), bfloat16 (``inference_model("bfloat16")``), TFLite float32 and TFLite
int8 (calibrated on other generated faces). Speed: the same paths on SE-ResNet-50 MTANet at 112 px (random
weights; speed does not depend on them), batch 32.

    python benchmarks/reduced_precision.py [--model PRESET] [--faces 600]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_mtanet import MTANet, abaw_scores, export, load_pretrained  # noqa: E402
from keras_mtanet.data import synthetic  # noqa: E402
from keras_mtanet.labels import TASKS  # noqa: E402
from timing import rate  # noqa: E402  (benchmarks/timing.py: the script's folder is on sys.path)

KEYS = ("ccc_valence", "ccc_arousal", "va_score", "expr_f1", "expr_acc", "expr_score", "au_f1", "au_acc",
        "au_score")


def batched(fn, images, batch=64):
    parts = [fn(images[i:i + batch]) for i in range(0, len(images), batch)]
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in TASKS}


def paths(model, tmp, calibration):
    """name -> predict function over a batch, for the four inference paths of ``model``."""
    fp32, bf16 = model.inference_model(), model.inference_model("bfloat16")
    export.export(model, os.path.join(tmp, "fp32.tflite"), "tflite")
    export.export(model, os.path.join(tmp, "int8.tflite"), "tflite", int8=True, calibration=calibration)
    return {"keras float32": fp32.predict_on_batch, "keras bfloat16": bf16.predict_on_batch,
            "tflite float32": export.TFLiteRunner(os.path.join(tmp, "fp32.tflite")),
            "tflite int8": export.TFLiteRunner(os.path.join(tmp, "int8.tflite"))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mtanet_se_resnet18_synth",
                        help="preset to score on generated synthetic faces (default: the synthetic preset)")
    parser.add_argument("--faces", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    model = load_pretrained(args.model)
    size = int(model.input_shape[1])
    images, labels = synthetic.generate(args.faces, size=size, seed=31337, frames_per_video=30)
    calibration, _ = synthetic.generate(200, size=size, seed=4711)
    with tempfile.TemporaryDirectory() as tmp:
        runs = paths(model, tmp, calibration.astype(np.float32))
        scores = {name: abaw_scores(labels, batched(fn, images.astype(np.float32))) for name, fn in runs.items()}
    base = scores["keras float32"]
    print(f"ABAW scores of {model.metadata.get('name', args.model)} on {args.faces} generated validation faces "
          f"(change vs keras float32):")
    print(f"{'path':<16}" + "".join(f"{k:>13}" for k in KEYS))
    for name, s in scores.items():
        print(f"{name:<16}" + "".join(f"{s[k]:>7.4f}{s[k] - base[k]:>+6.3f}" for k in KEYS))

    big = MTANet("se_resnet50", input_shape=(112, 112, 3))
    x = np.random.default_rng(0).uniform(0, 255, (args.batch_size, 112, 112, 3)).astype(np.float32)
    big_calibration = np.random.default_rng(1).uniform(0, 255, (32, 112, 112, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        speeds = {name: rate(lambda fn=fn: fn(x), args.batch_size)
                  for name, fn in paths(big, tmp, big_calibration).items()}
    print(f"\nSE-ResNet-50 MTANet, 112 px, batch {args.batch_size}, {os.cpu_count()} cores: img/s (ratio to keras "
          f"float32)")
    for name, ips in speeds.items():
        print(f"  {name:<16} {ips:7.1f}  ({ips / speeds['keras float32']:.2f}x)")


if __name__ == "__main__":
    main()
