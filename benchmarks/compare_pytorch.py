"""MTANet (Keras 3 / TensorFlow, and every prediction runtime) vs a PyTorch SE-ResNet on the same CPU, in one run.

PyTorch baseline: an SE-ResNet-50 / -18 written out below with the layers of timm's ``seresnet50`` /
``seresnet18`` (SE after the last batch norm of each block, reduction 16 rounded to 8 channels; 17 outputs, as
MTANet's 2 + 8 + 7), 112 x 112, batch 32, as many threads as TensorFlow uses. Inference: eager, channels_last,
and torch.compile with channels_last, under ``torch.inference_mode()``. Training: one eager SGD (Nesterov
momentum) step.
Ours: ``predict_on_batch`` after warm-up on the model as trained, then every runtime of
``keras_mtanet.inference.runtimes`` (what ``Predictor(runtime=...)`` and ``keras-mtanet predict --runtime``
use) in each precision it offers: Keras ``inference_model()`` (batch norms folded) in float32 and bfloat16,
OpenVINO float32 and bfloat16, TFLite float32 and int8, ONNX Runtime float32; and ``model.fit`` steps with the
same SGD (float32, and mixed bfloat16), fed by ``keras_mtanet.data.datasets.from_arrays``. Reduced precisions
move the scores a little: see ``benchmarks/reduced_precision.py --runtime NAME``.

Each measurement runs in a fresh child process so thread pools and caches do not carry over, ``--repeats`` times,
alternating; speed differs between processes on this machine (the same script gives two distinct levels from
run to run, in PyTorch too), so the parent prints medians with the range, and ratios of medians. Exports are
made once into a cache folder shared by the child processes (conversion time is not measured).
PyTorch is needed for the baseline only (not a package dependency):

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # the README names each figure's version
    python benchmarks/compare_pytorch.py [--backbones se_resnet50 se_resnet18] [--batch-size 32]
    python benchmarks/compare_pytorch.py --quick --backbones se_resnet50   # inference only, one process each
    python benchmarks/compare_pytorch.py --quick --repeats 3 --backbones se_resnet50   # inference, 3 processes each
    python benchmarks/compare_pytorch.py --training --repeats 5 --backbones se_resnet50   # five training runs
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from timing import rate  # benchmarks/timing.py: the script's folder is on sys.path

SIZE = 112
OUTPUTS = 17
# Seconds each figure is timed for (at least): the default, and --quick.
SECONDS = {"full": 4.0, "quick": 2.0}
STACKS = {"se_resnet50": ("bottleneck", (3, 4, 6, 3)), "se_resnet18": ("basic", (2, 2, 2, 2))}


def torch_se_resnet(backbone, num_classes=OUTPUTS):
    """timm's ``seresnet50`` / ``seresnet18`` layer for layer (random weights; speed does not depend on them)."""
    from torch import nn

    def conv_bn(cin, cout, kernel, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))

    class SE(nn.Module):
        def __init__(self, channels):
            super().__init__()
            hidden = max(8, int(channels / 16 + 4) // 8 * 8)  # timm's make_divisible(channels / 16, 8)
            self.fc1, self.fc2 = nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)

        def forward(self, x):
            gate = x.mean((2, 3), keepdim=True)
            return x * self.fc2(self.fc1(gate).relu()).sigmoid()

    class Block(nn.Module):
        def __init__(self, kind, cin, width, stride):
            super().__init__()
            cout = width * (4 if kind == "bottleneck" else 1)
            if kind == "bottleneck":
                self.body = nn.Sequential(conv_bn(cin, width, 1), nn.ReLU(), conv_bn(width, width, 3, stride),
                                          nn.ReLU(), conv_bn(width, cout, 1), SE(cout))
            else:
                self.body = nn.Sequential(conv_bn(cin, width, 3, stride), nn.ReLU(), conv_bn(width, cout, 3), SE(cout))
            self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
            self.out_channels = cout

        def forward(self, x):
            return (self.body(x) + self.shortcut(x)).relu()

    kind, stacks = STACKS[backbone]
    layers, cin = [conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for i, (blocks, width) in enumerate(zip(stacks, (64, 128, 256, 512))):
        for j in range(blocks):
            layers.append(Block(kind, cin, width, 2 if i > 0 and j == 0 else 1))
            cin = layers[-1].out_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def torch_infer(backbone, batch, threads, seconds, cache):
    import torch

    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, SIZE, SIZE) * 255.0
    results = {}
    model = torch_se_resnet(backbone).eval()
    with torch.inference_mode():
        results["eager"] = rate(lambda: model(x), batch, min_seconds=seconds)
        model_cl = model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        results["channels_last"] = rate(lambda: model_cl(x_cl), batch, min_seconds=seconds)
        compiled = torch.compile(model_cl)
        results["compile_channels_last"] = rate(lambda: compiled(x_cl), batch, warmup=3, min_seconds=seconds)
    results["versions"] = f"torch {torch.__version__}"
    return results


def torch_training_step(backbone, batch, threads):
    """One eager SGD step (Nesterov momentum, weight decay) of the PyTorch SE-ResNet on a fixed random batch."""
    import torch

    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, SIZE, SIZE) * 255.0
    model = torch_se_resnet(backbone).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    target = torch.randint(0, OUTPUTS, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()

    return step


def torch_train(backbone, batch, threads, seconds, cache):
    import torch

    step = torch_training_step(backbone, batch, threads)
    return {"train_eager": rate(step, batch, warmup=2, min_seconds=8.0, min_repeats=3),
            "versions": f"torch {torch.__version__}"}


def keras_infer(backbone, batch, threads, seconds, cache):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_mtanet import MTANet

    x = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    model = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    return {"predict_on_batch": rate(lambda: model.predict_on_batch(x), batch, min_seconds=seconds),
            "versions": f"tensorflow {tf.__version__}, keras {keras.__version__}"}


def runtime_infer(name, backbone, batch, threads, seconds, cache):
    """Every precision of runtime ``name`` on a fresh MTANet; exports land in (and are reused from) ``cache``."""
    import keras
    import numpy as np

    from keras_mtanet import MTANet
    from keras_mtanet.data import synthetic
    from keras_mtanet.inference import runtimes

    x = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    # Fixed seeds: the same weights in every process, so the cached exports are reused (and int8's speed does
    # not depend on which faces calibrated it: 32 synthetic ones keep the conversion short).
    keras.utils.set_random_seed(0)
    model = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    calibration = synthetic.generate(32, size=SIZE, seed=1)[0].astype("float32")
    results = {}
    for precision in runtimes.PRECISIONS[name]:
        run = runtimes.load_runtime(model, name, precision, cache_dir=cache, calibration=calibration)
        results[f"{name} {precision}"] = rate(lambda run=run: run(x), batch, min_seconds=seconds)
    results["versions"] = runtime_version(name)
    return results


def runtime_version(name):
    from importlib import metadata

    package = {"keras": "keras", "tflite": "tensorflow", "openvino": "openvino", "onnxruntime": "onnxruntime"}[name]
    return f"{package} {metadata.version(package)}"


def keras_fit_setup(backbone, batch, steps, policy="float32"):
    """A compiled MTANet (the SGD of ``torch_training_step``, Keras's decoupled weight decay) after a 2-batch
    warm-up ``fit`` (tracing), and a ``steps``-batch dataset of synthetic faces for the timed ``fit``."""
    import keras
    import numpy as np

    from keras_mtanet import MTANet
    from keras_mtanet.data import datasets, synthetic

    images, labels = synthetic.generate(batch, size=SIZE, seed=0)
    xs = np.repeat(images[None], steps, 0).reshape(-1, SIZE, SIZE, 3).astype("float32")
    ys = {k: np.concatenate([v] * steps) for k, v in labels.items()}
    keras.mixed_precision.set_global_policy(policy)
    net = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    net.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4))
    warm_up = datasets.from_arrays(xs[:2 * batch], {k: v[:2 * batch] for k, v in ys.items()}, batch)
    net.fit(warm_up, verbose=0, shuffle=False)
    return net, datasets.from_arrays(xs, ys, batch)


def keras_fit(backbone, batch, threads, seconds, cache, policy="float32"):
    """``model.fit`` on 12 batches fed by ``keras_mtanet.data.datasets.from_arrays`` (tf.data without autotuning:
    the pipeline module says why), after a 2-batch warm-up ``fit`` on the same kind of dataset (tracing).
    ``fit``: images/s over steps 2-12 (like PyTorch's rate after its warm-up steps); ``fit_whole``: of the whole
    timed ``fit`` call, start-up and end of epoch included."""
    import keras
    import tensorflow as tf

    steps = 12
    net, data = keras_fit_setup(backbone, batch, steps, policy)
    ends = []
    step_ends = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda step, logs=None: ends.append(time.perf_counter()))
    start = time.perf_counter()
    net.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[step_ends])
    whole = time.perf_counter() - start
    step = (ends[-1] - ends[0]) / (len(ends) - 1)  # mean step after the first, as timing.rate's warm-up
    suffix = "" if policy == "float32" else "_bf16"
    return {"fit" + suffix: batch / step, "fit_whole" + suffix: steps * batch / whole,
            "versions": f"tensorflow {tf.__version__}, keras {keras.__version__}"}


PARTS = {"torch_infer": torch_infer, "torch_train": torch_train, "keras_infer": keras_infer,
         "keras_fit": keras_fit, "keras_fit_bf16": lambda *a: keras_fit(*a, policy="mixed_bfloat16")}
RUNTIME_NAMES = ("keras", "openvino", "tflite", "onnxruntime")  # keras_mtanet.inference.runtimes.RUNTIMES
PARTS.update({f"runtime_{name}": (lambda *a, name=name: runtime_infer(name, *a)) for name in RUNTIME_NAMES})
TRAINING = ("torch_train", "keras_fit", "keras_fit_bf16")


def child(part, backbone, batch, threads, seconds, cache):
    """Run one framework's measurements in a fresh interpreter; returns its results dict."""
    out = subprocess.run([sys.executable, __file__, "--child", part, "--backbones", backbone, "--batch-size",
                          str(batch), "--threads", str(threads), "--seconds", str(seconds), "--cache-dir", cache],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{part} measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["se_resnet50", "se_resnet18"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=None,
                        help="fresh processes per measurement, alternating; medians are reported (speed varies "
                             "between processes; default 3, 1 with --quick)")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIME_NAMES, default=None,
                        help="prediction runtimes to measure (default: every installed one)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--quick", action="store_true",
                        help=f"inference only, {SECONDS['quick']:.0f} s per figure (one process per measurement "
                             "unless --repeats)")
    only.add_argument("--training", action="store_true",
                        help="training only (the five-run check: --training --repeats 5 --backbones se_resnet50)")
    parser.add_argument("--cache-dir", help="folder for the exported models (default: a temporary one)")
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=tuple(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.child:
        print(json.dumps(PARTS[args.child](args.backbones[0], args.batch_size, args.threads, args.seconds,
                                           args.cache_dir)))
        return

    from keras_mtanet.inference import runtimes

    names = args.runtimes or runtimes.available()
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    seconds = SECONDS["quick" if args.quick else "full"]
    parts = [p for p in PARTS if not (args.quick and p in TRAINING) and not (args.training and p not in TRAINING)
             and not (p.startswith("runtime_") and p[len("runtime_"):] not in names)]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="compare_pytorch-")
    print(f"{SIZE}x{SIZE}, batch {args.batch_size}, {args.threads} threads; img/s (higher is better), median of "
          f"{repeats} processes per measurement [min-max]{'; --quick' if args.quick else ''}")
    try:
        for backbone in args.backbones:
            report(backbone, parts, names, repeats, args.batch_size, args.threads, seconds, cache)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)


def report(backbone, parts, names, repeats, batch, threads, seconds, cache):
    runs = {"torch": [], "keras": []}
    for _ in range(repeats):  # alternate, so both see the same machine conditions
        for framework, results in runs.items():
            merged = {}
            for part in parts:  # every measurement in a fresh process
                if part.startswith(framework) or (framework == "keras" and part.startswith("runtime_")):
                    result = child(part, backbone, batch, threads, seconds, cache)
                    if part.startswith("runtime_"):
                        merged.setdefault("runtime_versions", []).append(result.pop("versions"))
                    merged.update(result)
            results.append(merged)
    theirs, ours = _medians(runs["torch"]), _medians(runs["keras"])
    best_torch = theirs.get("compile_channels_last", float("nan"))
    versions = ", ".join([runs["keras"][0]["versions"]] + [v for v in runs["keras"][0].get("runtime_versions", [])
                                                           if not v.startswith(("keras ", "tensorflow "))])
    print(f"\n{backbone}  ({runs['torch'][0]['versions']}; {versions})")
    rows = [("eager", "PyTorch eager"), ("channels_last", "PyTorch channels_last"),
            ("compile_channels_last", "PyTorch torch.compile + channels_last"),
            ("train_eager", "PyTorch eager SGD step")]
    for name, label in rows:
        if name in theirs:
            print(f"  {label:<46} {_spread(runs['torch'], name)}")
    inference = ([key for key in ("predict_on_batch",) if key in ours]
                 + [key for key in ours if key.split()[0] in RUNTIME_NAMES])
    if inference:
        print(f"  {'':<46} {'img/s':>7}  [range]      vs torch.compile + channels_last")
    labels = {"predict_on_batch": "MTANet predict_on_batch float32 (as trained)"}
    for key in inference:
        label = labels.get(key, f"runtime {key}")
        print(f"  {label:<46} {_spread(runs['keras'], key)}  {ours[key] / best_torch:.2f}x")
    fits = (("fit", "MTANet fit float32 (SGD), per step"), ("fit_whole", "MTANet fit float32 (SGD), whole call"),
            ("fit_bf16", "MTANet fit mixed_bfloat16 (SGD), per step"),
            ("fit_whole_bf16", "MTANet fit mixed_bfloat16 (SGD), whole call"))
    for name, label in fits:
        if name in ours:
            print(f"  {label:<46} {_spread(runs['keras'], name)}")
    fp32 = {key: value for key, value in ours.items() if key.endswith(" float32")}
    if fp32:
        best = max(fp32, key=fp32.get)
        print(f"  inference float32: fastest runtime {best.split()[0]} {fp32[best] / best_torch:.2f}x "
              f"torch.compile + channels_last (target 1.2x); keras {ours.get('keras float32', 0) / best_torch:.2f}x")
    reduced = {key: value for key, value in ours.items() if key.split()[-1] in ("bfloat16", "int8")}
    for key, value in reduced.items():
        base = ours.get(f"{key.split()[0]} float32")
        vs_own = f"{value / base:.2f}x its float32, " if base else ""
        print(f"  inference {key}: {vs_own}{value / best_torch:.2f}x torch.compile + channels_last")
    if "train_eager" in theirs and "fit" in ours:
        for name, label in (("fit", "per step"), ("fit_whole", "whole fit call")):
            each = [k[name] / t["train_eager"] for k, t in zip(runs["keras"], runs["torch"])]
            print(f"  training float32 vs eager PyTorch step, {label}: median {statistics.median(each):.2f}x, "
                  f"each run (in order) {' '.join(f'{r:.2f}' for r in each)} (target: median 1.2x, none below 0.9x)")
        print(f"  training mixed bfloat16 vs eager PyTorch float32 step, per step: "
              f"{ours['fit_bf16'] / theirs['train_eager']:.2f}x")


def _medians(results):
    return {key: statistics.median(r[key] for r in results) for key, value in results[0].items()
            if isinstance(value, float)}


def _spread(results, key):
    values = [r[key] for r in results]
    return f"{statistics.median(values):7.1f}  [{min(values):.1f}-{max(values):.1f}]"


if __name__ == "__main__":
    main()
