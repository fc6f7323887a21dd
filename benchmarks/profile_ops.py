"""Where the time goes: MTANet and the PyTorch SE-ResNet of ``compare_pytorch.py``, op by op, on the same CPU.

Each framework's own profiler, each measurement in a fresh process (112 x 112, batch 32, as many threads as
``compare_pytorch.py``), time summed by op kind per step (training) or per batch (inference):

- training: ``model.fit`` steps (SGD with Nesterov momentum and weight decay, float32, as in
  ``compare_pytorch.py --training``) under TensorFlow's profiler, against PyTorch's eager SGD step under
  ``torch.profiler``;
- inference: the Keras runtime (batch norms folded) under TensorFlow's profiler and OpenVINO float32 (the
  fastest float32 runtime in ``compare_pytorch.py``) with its per-node performance counters, against
  torch.compile + channels_last under ``torch.profiler``.

TensorFlow runs its ops one at a time here (one inter-op thread, every core inside each op) so that the op
times add up to the step as PyTorch's do; ``compare_pytorch.py`` measures speed with TensorFlow's defaults.
The kinds: convolutions (forward, with any bias / ReLU fused into them), convolution gradients, batch norms
(and their gradients), the optimizer's update, everything else. It answers one question: are the ratios in
``compare_pytorch.py`` set by the convolutions, which all three runtimes take from oneDNN?

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # as for compare_pytorch.py
    python benchmarks/profile_ops.py [--backbone se_resnet50] [--parts training inference]
"""

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

# compare_pytorch.py: the script's folder is on sys.path
from compare_pytorch import SIZE, keras_fit_setup, torch_se_resnet, torch_training_step

KINDS = ("convolution", "convolution gradient", "batch norm", "optimizer", "other")


def kind_of(name, optimizer=False):
    """The kind of an op from its (TensorFlow, PyTorch or OpenVINO) type name."""
    lower = name.lower()
    if optimizer:
        return "optimizer"
    if "backprop" in lower or "convolution_backward" in lower:
        return "convolution gradient"
    if "conv" in lower:
        return "convolution"
    if "batchnorm" in lower or "batch_norm" in lower:
        return "batch norm"
    return "other"


def tensorflow_ops(logdir):
    """{kind: seconds} summed over the op events of TensorFlow's executor threads in a profiler log folder."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            space.ParseFromString(file.read())
        for plane in space.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name  # "scope/op_name:OpType"
                    if ":" not in name or name.startswith(("Threadpool", "Executor")):
                        continue
                    scope, op_type = name.rsplit(":", 1)
                    totals[kind_of(op_type, optimizer="/sgd/" in scope)] += event.duration_ps / 1e12
    return totals


def torch_ops(prof):
    """{kind: seconds} of self CPU time from a ``torch.profiler`` run; ops under ``Optimizer.step`` are the
    optimizer's."""
    totals = collections.Counter()
    for event in prof.events():
        parent, optimizer = event.cpu_parent, False
        while parent is not None and not optimizer:
            optimizer = parent.name.startswith("Optimizer.step")
            parent = parent.cpu_parent
        totals[kind_of(event.name, optimizer)] += event.self_cpu_time_total / 1e6
    return totals


def _tensorflow_setup(threads):
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    return tf


def _tensorflow_profile(run, steps, versions):
    """``run()`` (``steps`` steps) timed once as it is, then again under TensorFlow's profiler."""
    import tensorflow as tf

    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="profile_ops-") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        run()
        profiled = time.perf_counter() - start
        tf.profiler.experimental.stop()
        totals = tensorflow_ops(logdir)
    return {"wall": wall / steps, "profiled": profiled / steps, "ops": {k: v / steps for k, v in totals.items()},
            "versions": versions}


def _torch_profile(step, steps, versions):
    """``step()`` timed ``steps`` times as it is, then ``steps`` times under ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        profiled = time.perf_counter() - start
    return {"wall": wall / steps, "profiled": profiled / steps,
            "ops": {k: v / steps for k, v in torch_ops(prof).items()}, "versions": versions}


def keras_fit(backbone, batch, threads, steps):
    tf = _tensorflow_setup(threads)
    import keras

    net, data = keras_fit_setup(backbone, batch, steps)
    return _tensorflow_profile(lambda: net.fit(data, epochs=1, verbose=0, shuffle=False), steps,
                               f"tensorflow {tf.__version__}, keras {keras.__version__}")


def keras_infer(backbone, batch, threads, steps):
    tf = _tensorflow_setup(threads)
    import numpy as np

    from keras_mtanet import MTANet
    from keras_mtanet.inference import runtimes

    x = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    run = runtimes.load_runtime(MTANet(backbone, input_shape=(SIZE, SIZE, 3)), "keras", "float32")
    for _ in range(3):
        run(x)

    def batches():
        for _ in range(steps):
            run(x)

    return _tensorflow_profile(batches, steps, f"tensorflow {tf.__version__}")


def openvino_infer(backbone, batch, threads, steps):
    import keras
    import numpy as np
    import openvino as ov

    from keras_mtanet import MTANet, export
    from keras_mtanet.inference.runtimes import OpenVINORuntime

    x = np.random.default_rng(0).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    model = MTANet(backbone, input_shape=(SIZE, SIZE, 3))
    with tempfile.TemporaryDirectory(prefix="profile_ops-") as folder:
        path = os.path.join(folder, "model.xml")
        export.export_openvino(model, path)
        core = ov.Core()
        # The package's OpenVINO runtime settings; a second copy counts per node.
        config = {**OpenVINORuntime.config("float32"), "INFERENCE_NUM_THREADS": threads}
        plain, counted = (core.compile_model(core.read_model(path), "CPU", {**config, "PERF_COUNT": count})
                          .create_infer_request() for count in (False, True))
    for request in (plain, counted):
        for _ in range(3):
            request.infer({0: x})
    start = time.perf_counter()
    for _ in range(steps):
        plain.infer({0: x})
    wall = time.perf_counter() - start
    totals, profiled = collections.Counter(), 0.0
    for _ in range(steps):
        start = time.perf_counter()
        counted.infer({0: x})
        profiled += time.perf_counter() - start
        for node in counted.profiling_info:  # the last inference's per-node times
            totals[kind_of(node.node_type)] += node.real_time.total_seconds()
    return {"wall": wall / steps, "profiled": profiled / steps, "ops": {k: v / steps for k, v in totals.items()},
            "versions": f"openvino {ov.__version__}"}


def torch_train(backbone, batch, threads, steps):
    import torch

    step = torch_training_step(backbone, batch, threads)
    for _ in range(2):
        step()
    return _torch_profile(step, steps, f"torch {torch.__version__}")


def torch_compile_infer(backbone, batch, threads, steps):
    import torch

    torch.set_num_threads(threads)
    x = (torch.rand(batch, 3, SIZE, SIZE) * 255.0).contiguous(memory_format=torch.channels_last)
    model = torch_se_resnet(backbone).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        compiled = torch.compile(model)
        for _ in range(3):
            compiled(x)
        return _torch_profile(lambda: compiled(x), steps, f"torch {torch.__version__}")


PARTS = {"keras_fit": keras_fit, "torch_train": torch_train, "keras_infer": keras_infer,
         "openvino_infer": openvino_infer, "torch_compile_infer": torch_compile_infer}
GROUPS = {"training": (("torch_train", "PyTorch eager SGD step"), ("keras_fit", "MTANet fit float32")),
          "inference": (("torch_compile_infer", "torch.compile + channels_last"),
                        ("keras_infer", "Keras float32 (folded)"), ("openvino_infer", "OpenVINO float32"))}


def child(part, backbone, batch, threads, steps):
    out = subprocess.run([sys.executable, __file__, "--child", part, "--backbone", backbone, "--batch-size",
                          str(batch), "--threads", str(threads), "--steps", str(steps)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{part} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(group, results, batch):
    rows = GROUPS[group]
    print(f"\n{group}: ms per {'step' if group == 'training' else 'batch'} of {batch} (share of the op total)")
    print(f"{'':32s}" + "".join(f"{label:>34s}" for _, label in rows))
    for kind in KINDS + ("op total", "wall (profiled)", "wall (not profiled)"):
        cells = []
        for part, _ in rows:
            ops = results[part]["ops"]
            total = sum(ops.values())
            if kind == "op total":
                cells.append(f"{total * 1e3:.0f}")
            elif kind.startswith("wall"):
                cells.append(f"{results[part]['profiled' if kind == 'wall (profiled)' else 'wall'] * 1e3:.0f}")
            else:
                cells.append(f"{ops.get(kind, 0.0) * 1e3:.0f} ({100 * ops.get(kind, 0.0) / total:.0f}%)")
        print(f"{kind:32s}" + "".join(f"{cell:>34s}" for cell in cells))
    base = results[rows[0][0]]["ops"]
    for part, label in rows[1:]:
        ops = results[part]["ops"]
        conv = sum(ops.get(k, 0.0) for k in KINDS[:2]) / sum(base.get(k, 0.0) for k in KINDS[:2])
        rest = sum(ops.get(k, 0.0) for k in KINDS[2:]) / sum(base.get(k, 0.0) for k in KINDS[2:])
        speed = results[rows[0][0]]["wall"] / results[part]["wall"]
        print(f"{label} against {rows[0][1]}: convolutions take x{conv:.2f} the time, everything else x{rest:.2f}; "
              f"{speed:.2f}x its speed without the profilers (one process each: see compare_pytorch.py for "
              "medians)")
    print("versions: " + "; ".join(sorted({results[part]["versions"] for part, _ in rows})))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="se_resnet50", choices=("se_resnet50", "se_resnet18"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=6, help="profiled steps / batches per measurement")
    parser.add_argument("--parts", nargs="+", choices=tuple(GROUPS), default=list(GROUPS))
    parser.add_argument("--child", choices=tuple(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1 or args.threads < 1:
        parser.error("--steps, --batch-size and --threads must be at least 1")
    if args.child:
        print(json.dumps(PARTS[args.child](args.backbone, args.batch_size, args.threads, args.steps)))
        return
    print(f"{args.backbone}, {SIZE}x{SIZE}, batch {args.batch_size}, {args.threads} threads, {args.steps} profiled "
          "steps each, each measurement in a fresh process")
    for group in args.parts:
        results = {part: child(part, args.backbone, args.batch_size, args.threads, args.steps)
                   for part, _ in GROUPS[group]}
        report(group, results, args.batch_size)


if __name__ == "__main__":
    main()
