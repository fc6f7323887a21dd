"""Does MTANet learn? Train on generated faces in the Aff-Wild2 layout, read back through the real reader.

Runs the synthetic preset's recipe (``keras_mtanet/presets/registry/mtanet_se_resnet18_synth/train.json``:
SE-ResNet-18 at 64 px, 15 epochs, batch 32) through ``keras_mtanet.training.run.train``: it writes a synthetic
Aff-Wild2 set (14 training and 6 validation videos of 90 frames), reads it back with ``affwild2.read_index``,
trains with ``model.fit`` and prints the ABAW scores on the held-out videos with the wall time.
Targets (issue 3): VA score >= 0.5, AU F1 >= 0.6, EXPR F1 >= 0.5 within 10 CPU minutes.

    python benchmarks/synthetic_learning.py [--epochs 15] [--seed 0] [--config FILE] [--keep DIR]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_mtanet.training import recipe  # noqa: E402
from keras_mtanet.training import run as train  # noqa: E402

TARGETS = {"va_score": 0.5, "au_f1": 0.6, "expr_f1": 0.5}
RECIPE = (Path(__file__).resolve().parents[1] / "keras_mtanet" / "presets" / "registry" / "mtanet_se_resnet18_synth"
          / "train.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(RECIPE))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", help="work here instead of a temporary folder")
    args = parser.parse_args(argv)

    config = recipe.load_config(args.config, epochs=args.epochs, seed=args.seed)
    work = Path(args.keep or tempfile.mkdtemp(prefix="synthetic_learning_"))
    start = time.perf_counter()
    scores = train.train(config, work / "data", "synthetic", work / "run", tensorboard=False)
    total = time.perf_counter() - start
    print(f"total {total:.1f} s ({total / 60:.1f} min) on {os.cpu_count()} CPU cores")
    print("validation (held-out videos): " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    met = all(scores[k] >= v for k, v in TARGETS.items()) and total <= 600
    print("targets " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()) + " within 600 s: "
          + ("met" if met else "NOT met"))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
