"""MTANet (Keras 3 / TensorFlow) vs a PyTorch SE-ResNet on the same CPU, in one run.

PyTorch baseline: timm's ``seresnet50`` / ``seresnet18`` (17 outputs, as MTANet's 2 + 8 + 7), 112 x 112,
batch 32, as many threads as TensorFlow uses. Inference: eager, channels_last, and torch.compile with
channels_last, under ``torch.inference_mode()``. Training: one eager SGD (Nesterov momentum) step.
Ours: ``predict_on_batch`` after warm-up (the path users call) on the model as trained, on its
batch-norm-folded ``inference_model()`` (what ``Predictor`` and ``export`` use) and on
``inference_model("bfloat16")``; and ``model.fit`` steps with the same SGD (float32, and mixed bfloat16).

Each measurement runs in a fresh child process so thread pools and caches do not carry over, ``--repeats`` times,
alternating; speed differs between processes on this machine (the same script gives two distinct levels from
run to run, in PyTorch too), so the parent prints medians with the range, and ratios of medians.
PyTorch and timm are needed for the baseline only (not package dependencies):

    pip install torch==2.14.1 torchvision==0.29.1 timm   # the versions on this project's machines
    python benchmarks/compare_pytorch.py [--backbones se_resnet50 se_resnet18] [--batch-size 32]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from timing import rate  # benchmarks/timing.py: the script's folder is on sys.path

SIZE = 112
OUTPUTS = 17


def torch_infer(backbone, batch, threads):
    import timm
    import torch

    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, SIZE, SIZE) * 255.0
    results = {}
    model = timm.create_model(TIMM_NAMES[backbone], pretrained=False, num_classes=OUTPUTS).eval()
    with torch.inference_mode():
        results["eager"] = rate(lambda: model(x), batch)
        model_cl = model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        results["channels_last"] = rate(lambda: model_cl(x_cl), batch)
        compiled = torch.compile(model_cl)
        results["compile_channels_last"] = rate(lambda: compiled(x_cl), batch, warmup=3)
    results["versions"] = f"torch {torch.__version__}, timm {timm.__version__}"
    return results


def torch_train(backbone, batch, threads):
    import timm
    import torch

    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, SIZE, SIZE) * 255.0
    model = timm.create_model(TIMM_NAMES[backbone], pretrained=False, num_classes=OUTPUTS).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    target = torch.randint(0, OUTPUTS, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()

    return {"train_eager": rate(step, batch, warmup=2, min_seconds=8.0, min_repeats=3)}


def keras_infer(backbone, batch, threads):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_mtanet import MTANet

    results = {}
    x = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    model = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    results["predict_on_batch"] = rate(lambda: model.predict_on_batch(x), batch)
    folded = model.inference_model()
    results["predict_on_batch_folded"] = rate(lambda: folded.predict_on_batch(x), batch)
    half = model.inference_model("bfloat16")
    results["predict_on_batch_bf16"] = rate(lambda: half.predict_on_batch(x), batch)
    results["versions"] = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    return results


def keras_fit(backbone, batch, threads, policy="float32"):
    import keras
    import numpy as np

    from keras_mtanet import MTANet
    from keras_mtanet.data import synthetic

    images, labels = synthetic.generate(batch, size=SIZE, seed=0)
    steps = 4
    xs = np.repeat(images[None], steps, 0).reshape(-1, SIZE, SIZE, 3).astype("float32")
    ys = {k: np.concatenate([v] * steps) for k, v in labels.items()}
    keras.mixed_precision.set_global_policy(policy)
    net = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    net.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4))
    net.fit(xs[:2 * batch], {k: v[:2 * batch] for k, v in ys.items()}, batch_size=batch, epochs=1, verbose=0)
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        net.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
        best = max(best, steps * batch / (time.perf_counter() - start))
    return {"fit" if policy == "float32" else "fit_bf16": best}


PARTS = {"torch_infer": torch_infer, "torch_train": torch_train, "keras_infer": keras_infer,
         "keras_fit": keras_fit, "keras_fit_bf16": lambda *a: keras_fit(*a, policy="mixed_bfloat16")}
TIMM_NAMES = {"se_resnet50": "seresnet50", "se_resnet18": "seresnet18"}


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
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per framework; medians are reported (speed varies between processes)")
    parser.add_argument("--child", choices=tuple(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(PARTS[args.child](args.backbones[0], args.batch_size, args.threads)))
        return

    print(f"{SIZE}x{SIZE}, batch {args.batch_size}, {args.threads} threads; img/s (higher is better), median of "
          f"{args.repeats} processes per framework [min-max]")
    for backbone in args.backbones:
        runs = {"torch": [], "keras": []}
        for _ in range(args.repeats):  # alternate, so both see the same machine conditions
            for framework in runs:
                merged = {}
                for part in PARTS:  # every measurement in a fresh process
                    if part.startswith(framework):
                        merged.update(child(part, backbone, args.batch_size, args.threads))
                runs[framework].append(merged)
        theirs, ours = _medians(runs["torch"]), _medians(runs["keras"])
        print(f"\n{backbone}  ({runs['torch'][0]['versions']}; {runs['keras'][0]['versions']})")
        for name, label in (("eager", "PyTorch eager"), ("channels_last", "PyTorch channels_last"),
                            ("compile_channels_last", "PyTorch torch.compile + channels_last"),
                            ("train_eager", "PyTorch eager SGD step")):
            print(f"  {label:<46} {_spread(runs['torch'], name)}")
        for name, label in (("predict_on_batch", "MTANet predict_on_batch float32"),
                            ("predict_on_batch_folded", "MTANet inference_model() float32"),
                            ("predict_on_batch_bf16", "MTANet inference_model('bfloat16')"),
                            ("fit", "MTANet fit float32 (SGD)"), ("fit_bf16", "MTANet fit mixed_bfloat16 (SGD)")):
            print(f"  {label:<46} {_spread(runs['keras'], name)}")
        best_torch = theirs["compile_channels_last"]
        print(f"  inference float32 vs torch.compile+channels_last: predict_on_batch "
              f"{ours['predict_on_batch'] / best_torch:.2f}x, "
              f"inference_model {ours['predict_on_batch_folded'] / best_torch:.2f}x (target 1.2x)")
        print(f"  inference bfloat16 vs our float32 inference_model: "
              f"{ours['predict_on_batch_bf16'] / ours['predict_on_batch_folded']:.2f}x (target 1.8x); "
              f"vs torch.compile: {ours['predict_on_batch_bf16'] / best_torch:.2f}x")
        print(f"  training float32 vs eager PyTorch step: {ours['fit'] / theirs['train_eager']:.2f}x (target 1.2x); "
              f"mixed bfloat16: {ours['fit_bf16'] / theirs['train_eager']:.2f}x")


def _medians(results):
    return {key: statistics.median(r[key] for r in results) for key in results[0] if key != "versions"}


def _spread(results, key):
    values = [r[key] for r in results]
    return f"{statistics.median(values):7.1f}  [{min(values):.1f}-{max(values):.1f}]"


if __name__ == "__main__":
    main()
