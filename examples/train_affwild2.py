"""Train MTANet on Aff-Wild2 with the authors' recipe, then evaluate on the validation set.

For a user with the real data (ABAW 2020 layout: ``ROOT/annotations/{VA_Set,EXPR_Set,AU_Set}/...`` and
``ROOT/cropped_aligned/<video>/<frame>.jpg``):

    python examples/train_affwild2.py /data/Aff-Wild2 runs/affwild2_se_resnet50

The same as ``keras-mtanet train --data ROOT --format affwild2 --output RUN`` followed by
``keras-mtanet evaluate --model RUN --data ROOT --predictions RUN/predictions --metrics RUN/val.json``.
Recipe (Zhang & Gu 2020): SE-ResNet-50, 112 px, SGD with Nesterov momentum 0.9, lr 1e-3, weight decay 1e-4,
polynomial decay, batch 80, learned uncertainty task weights. Change it with a JSON config (see
``keras_mtanet.training.run.DEFAULTS`` for the keys) or the keyword arguments below.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_mtanet import evaluate, load_pretrained  # noqa: E402
from keras_mtanet.training import recipe
from keras_mtanet.training import run as train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="Aff-Wild2 root")
    parser.add_argument("run", help="output run folder")
    parser.add_argument("--config", help="JSON recipe overriding the authors' defaults")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--mixed-precision", action="store_true", default=None)
    args = parser.parse_args(argv)

    config = recipe.load_config(args.config, epochs=args.epochs, batch_size=args.batch_size,
                               mixed_precision=args.mixed_precision)
    train.train(config, args.root, "affwild2", args.run)
    model = load_pretrained(args.run)
    scores = evaluate.evaluate(model, args.root, "Validation_Set", os.path.join(args.run, "predictions"),
                               smooth="0.5")
    evaluate.write_metrics(os.path.join(args.run, "validation.json"), scores)
    print({k: round(v, 4) for k, v in scores.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
