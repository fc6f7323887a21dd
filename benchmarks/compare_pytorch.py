"""MTANet (Keras 3 / TensorFlow) vs a PyTorch SE-ResNet on the same CPU, in one run.

PyTorch baseline: timm's ``seresnet50`` / ``seresnet18`` (17 outputs, as MTANet's 2 + 8 + 7), 112 x 112,
batch 32, as many threads as TensorFlow uses. Inference: eager, channels_last, and torch.compile with
channels_last, under ``torch.inference_mode()``. Training: one eager SGD (Nesterov momentum) step.
Ours: ``MTANet.predict_on_batch`` after warm-up (the path users call), in float32 and in the bfloat16
inference mode, and ``model.fit`` steps (float32, and mixed bfloat16).

Each framework runs in its own child process so their thread pools do not compete; the parent prints the
img/s and the ratios. PyTorch and timm are needed for the baseline only (not package dependencies):

    pip install torch==2.14.1 torchvision==0.29.1 timm   # the versions on this project's machines
    python benchmarks/compare_pytorch.py [--backbones se_resnet50 se_resnet18] [--batch-size 32]
"""

import argparse
import json
import os
import subprocess
import sys
import time

SIZE = 112
OUTPUTS = 17


def _rate(fn, batch, warmup=3, min_seconds=4.0, min_repeats=5):
    for _ in range(warmup):
        fn()
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        fn()
        repeats += 1
    return repeats * batch / (time.perf_counter() - start)


def torch_part(backbone, batch, threads):
    import timm
    import torch

    torch.set_num_threads(threads)
    name = {"se_resnet50": "seresnet50", "se_resnet18": "seresnet18"}[backbone]
    x = torch.rand(batch, 3, SIZE, SIZE) * 255.0
    results = {}
    model = timm.create_model(name, pretrained=False, num_classes=OUTPUTS).eval()
    with torch.inference_mode():
        results["eager"] = _rate(lambda: model(x), batch)
        model_cl = model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        results["channels_last"] = _rate(lambda: model_cl(x_cl), batch)
        compiled = torch.compile(model_cl)
        results["compile_channels_last"] = _rate(lambda: compiled(x_cl), batch, warmup=3)
    model = timm.create_model(name, pretrained=False, num_classes=OUTPUTS).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    target = torch.randint(0, OUTPUTS, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()

    results["train_eager"] = _rate(step, batch, warmup=2, min_seconds=8.0, min_repeats=3)
    results["versions"] = f"torch {torch.__version__}, timm {timm.__version__}"
    return results


def keras_part(backbone, batch, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_mtanet import MTANet
    from keras_mtanet.data import synthetic

    results = {}
    x = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    model = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    results["predict_on_batch"] = _rate(lambda: model.predict_on_batch(x), batch)
    fast = model.inference_model("bfloat16")
    results["predict_on_batch_bf16"] = _rate(lambda: fast.predict_on_batch(x), batch)

    images, labels = synthetic.generate(batch, size=SIZE, seed=0)
    steps = 4
    xs = np.repeat(images[None], steps, 0).reshape(-1, SIZE, SIZE, 3).astype("float32")
    ys = {k: np.concatenate([v] * steps) for k, v in labels.items()}

    def fit_rate(policy):
        keras.mixed_precision.set_global_policy(policy)
        net = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
        net.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4))
        net.fit(xs[:2 * batch], {k: v[:2 * batch] for k, v in ys.items()}, batch_size=batch, epochs=1,
                verbose=0)
        best = 0.0
        for _ in range(2):
            start = time.perf_counter()
            net.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
            best = max(best, steps * batch / (time.perf_counter() - start))
        keras.mixed_precision.set_global_policy("float32")
        return best

    results["fit"] = fit_rate("float32")
    results["fit_bf16"] = fit_rate("mixed_bfloat16")
    results["versions"] = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    return results


def child(part, backbone, batch, threads):
    """Run one framework's measurements in a fresh interpreter; returns its results dict."""
    out = subprocess.run([sys.executable, __file__, "--child", part, "--backbones", backbone, "--batch-size",
                          str(batch), "--threads", str(threads)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{part} measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["se_resnet50", "se_resnet18"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--child", choices=("torch", "keras"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = torch_part if args.child == "torch" else keras_part
        print(json.dumps(fn(args.backbones[0], args.batch_size, args.threads)))
        return

    print(f"{SIZE}x{SIZE}, batch {args.batch_size}, {args.threads} threads; img/s (higher is better)")
    for backbone in args.backbones:
        theirs = child("torch", backbone, args.batch_size, args.threads)
        ours = child("keras", backbone, args.batch_size, args.threads)
        print(f"\n{backbone}  ({theirs.pop('versions')}; {ours.pop('versions')})")
        print(f"  PyTorch eager {theirs['eager']:.1f}, channels_last {theirs['channels_last']:.1f}, "
              f"torch.compile+channels_last {theirs['compile_channels_last']:.1f}, "
              f"eager SGD step {theirs['train_eager']:.1f}")
        print(f"  MTANet predict_on_batch fp32 {ours['predict_on_batch']:.1f}, "
              f"bf16 {ours['predict_on_batch_bf16']:.1f}; fit fp32 {ours['fit']:.1f}, "
              f"fit mixed bf16 {ours['fit_bf16']:.1f}")
        best_torch = theirs["compile_channels_last"]
        print(f"  inference fp32 vs torch.compile+channels_last: {ours['predict_on_batch'] / best_torch:.2f}x "
              f"(target 1.2x)")
        print(f"  inference bf16 vs our fp32: {ours['predict_on_batch_bf16'] / ours['predict_on_batch']:.2f}x "
              f"(target 1.8x)")
        print(f"  training fp32 vs eager PyTorch step: {ours['fit'] / theirs['train_eager']:.2f}x (target 1.2x); "
              f"mixed bf16: {ours['fit_bf16'] / theirs['train_eager']:.2f}x")


if __name__ == "__main__":
    main()
