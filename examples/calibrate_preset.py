"""Choose a preset's decision rules on validation faces and write them into a copy of it.

The rules (``keras_mtanet.presets.decisions``): the expression prior the balanced decision divides out (the class mix
of FER+ train's vote distributions) and how much of it (``tau``, by the mean of balanced accuracy and macro F1 on
FER+ valid and facial_expressions valid); per-AU thresholds (AU12: best F1 against GENKI-4K valid's human smile
labels; the others: Youden's J between validation faces whose expression has the AU in its EMFACS prototype and
neutral faces, never more than ``--max-negative-rate`` of the neutral faces on) and the AUs whose validation AUC is
below ``--min-auc`` (unreliable). Only validation splits are read: FER2013Valid, and the validation parts of
GENKI-4K and facial_expressions (keras_mtanet.data.genki4k / facial_expressions: never their test lists). FER+
faces are predicted as the crops they are (``predict --no-detect``), the two photo sets through the default face
detector, as ``predict`` sees them.

    python examples/calibrate_preset.py --output FOLDER [--model PRESET] [--data ../shared/data] \\
        [--max-negative-rate 0.2] [--min-auc 0.7]

FOLDER must not exist; it gets the preset's files with the new metadata.json and a model card section saying how
the rules were chosen, with the validation figures.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_mtanet.data import facial_expressions, ferplus, genki4k  # noqa: E402
from keras_mtanet.inference.predictor import Predictor  # noqa: E402
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES  # noqa: E402
from keras_mtanet.model.task import load_pretrained  # noqa: E402
from keras_mtanet.presets import checks, registry  # noqa: E402
from keras_mtanet.presets import folder as preset_folder  # noqa: E402
from keras_mtanet.training import calibration  # noqa: E402


def collect(model, data):
    """Validation outputs: ``{set: (found, au, expr, expression truth, AU labels)}``."""
    out = {}
    index = ferplus.read_index(data / "ferplus", "valid")
    found, _, au, expr = calibration.face_predictions(Predictor(model, detector=None, batch_size=64), index.paths)
    out["FER+ valid"] = (found, au, expr, index.expr, index.au)
    detecting = Predictor(model, batch_size=64)
    for name, module, folder in (("facial_expressions valid", facial_expressions, "facial_expressions"),
                                 ("GENKI-4K valid", genki4k, "genki4k")):
        index = module.read_index(data / folder, "valid")
        found, _, au, expr = calibration.face_predictions(detecting, index.paths)
        out[name] = (found, au, expr, index.expr, index.au)
    return out


def choose(outputs, prior, max_negative_rate, min_auc):
    """The rules and the evidence behind them."""
    sets = {name: (truth[found & (truth >= 0)], expr[found & (truth >= 0)])
            for name, (found, _, expr, truth, _) in outputs.items() if np.any(truth >= 0)}
    power, table = calibration.choose_prior_power(sets, prior)
    expr_faces = [(au[found & (truth >= 0)], truth[found & (truth >= 0)])
                  for found, au, _, truth, _ in outputs.values() if np.any(truth >= 0)]
    found, au, _, _, labels = outputs["GENKI-4K valid"]
    smile_au = au[found, AU_NAMES.index("AU12")]
    smiles = labels[found, AU_NAMES.index("AU12")]
    thresholds, unreliable, evidence = calibration.choose_au_thresholds(
        np.concatenate([a for a, _ in expr_faces]), np.concatenate([t for _, t in expr_faces]),
        max_negative_rate=max_negative_rate, min_auc=min_auc, human={"AU12": (smile_au, smiles)})
    t = np.array([thresholds[a] for a in AU_NAMES])
    non_smiling = au[found][smiles == 0]
    on_rates = {"at 0.5": dict(zip(AU_NAMES, (non_smiling > 0.5).mean(axis=0).round(3).tolist())),
                "at the thresholds": dict(zip(AU_NAMES, (non_smiling > t).mean(axis=0).round(3).tolist()))}
    rules = {"au_thresholds": {a: round(v, 4) for a, v in thresholds.items()}, "unreliable_aus": unreliable,
             "expression_training_prior": dict(zip(EXPR_NAMES, np.round(prior, 4).tolist())),
             "expression_prior_power": power,
             # choose_prior_power leaves tau 0 (the posteriors' argmax) only for a strictly better score
             "expression_prior": "balanced" if power > 0 else "training"}
    faces = {name: {"images": int(len(found)), "faces_found": int(found.sum())}
             for name, (found, *_) in outputs.items()}
    report = {"faces": faces, "expression": {f"{k:g}": v for k, v in table.items()},
              "au": evidence, "genki_non_smiling_on_rate": on_rates, "max_negative_rate": max_negative_rate,
              "min_auc": min_auc}
    return rules, report


def card_section(rules, report):
    """The model card's account of the rules, with the validation figures."""
    expression = report["expression"]
    power = f"{rules['expression_prior_power']:g}"
    lines = ["## Decision rules (chosen on validation data)", "",
             "The probabilities are the model's; the decisions drawn from them follow rules stored in "
             "`metadata.json` (`keras_mtanet.presets.decisions`), chosen by `examples/calibrate_preset.py` on "
             "validation faces only: FER2013Valid (its crops as they are), and the validation parts of "
             "GENKI-4K and facial_expressions through the default face detector (their test lists are never read).",
             "",
             f"**Expression prior.** Default `--expression-prior {rules['expression_prior']}`: the balanced rule "
             f"decides `argmax(log p - {power} log prior)`, the prior being the class mix of FER+ train's vote "
             "distributions (" + ", ".join(f"{k} {v:.3f}" for k, v in rules["expression_training_prior"].items())
             + f"). tau = {power} had the best mean of balanced accuracy and macro F1 over the two validation sets "
             "(tau 0 is `--expression-prior training`, the posteriors' argmax):", "",
             "| validation set | rule | accuracy | balanced accuracy | macro F1 |", "|---|---|---|---|---|"]
    for name in expression["0"]:
        for label, key in (("training (tau 0)", "0"), (f"balanced (tau {power})", power), ("tau 1", "1")):
            s = expression[key][name]
            lines.append(f"| {name} | {label} | {s['accuracy']:.3f} | {s['balanced_accuracy']:.3f} | "
                         f"{s['macro_f1']:.3f} |")
    lines += ["", "**AU thresholds.** AU12: the best F1 against GENKI-4K valid's human smile labels. The others: "
              "Youden's J between validation faces whose expression shows the AU in its EMFACS prototype and "
              f"neutral faces, with at most {report['max_negative_rate']:g} of the neutral faces on. An AU whose "
              f"validation ROC AUC is below {report['min_auc']:g} is marked unreliable: its decision is given, "
              "and marked in the rows (`unreliable_aus`), the demo (`?`) and here. `--au-threshold 0.5` restores "
              "the ABAW challenge's rule.", "",
              "| AU | threshold | validation AUC | evidence | reliable | GENKI-4K valid non-smiling on, at 0.5 | "
              "at the threshold |", "|---|---|---|---|---|---|---|"]
    rates = report["genki_non_smiling_on_rate"]
    for au in AU_NAMES:
        e = report["au"][au]
        lines.append(f"| {au} | {rules['au_thresholds'][au]:.3f} | {e['auc']:.3f} | {e['positives']} vs "
                     f"{e['negatives']} faces | {'no' if au in rules['unreliable_aus'] else 'yes'} | "
                     f"{rates['at 0.5'][au]:.3f} | {rates['at the thresholds'][au]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="preset name or folder (default: the embedded default)")
    parser.add_argument("--output", required=True, help="new folder for the calibrated preset")
    parser.add_argument("--data", default="../shared/data", help="folder holding ferplus/, genki4k/, "
                                                                 "facial_expressions/")
    parser.add_argument("--max-negative-rate", type=float, default=0.2)
    parser.add_argument("--min-auc", type=float, default=0.7)
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists():
        sys.exit(f"{output}: exists; give a new folder")
    source = registry.resolve(args.model or registry.DEFAULT_PRESET)
    model = load_pretrained(args.model)
    data = Path(args.data)
    prior = calibration.class_prior(ferplus.read_index(data / "ferplus", "train", check_images=False).expr_soft)
    rules, report = choose(collect(model, data), prior, args.max_negative_rate, args.min_auc)
    shutil.copytree(source, output)
    card = (output / checks.CARD_FILE).read_text(encoding="utf-8")
    card = card.split("## Decision rules")[0].rstrip("\n") + "\n\n" + card_section(rules, report)
    preset_folder.update_preset(output, card, **rules, decision_calibration=report)
    load_pretrained(str(output))  # the written preset loads and its rules check
    print(card_section(rules, report))
    print(f"calibrated preset: {output}")


if __name__ == "__main__":
    main()
