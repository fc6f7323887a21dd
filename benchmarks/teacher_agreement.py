"""Do the teacher's AUs agree with the expression prototypes, and where do the derived VA targets sit?

Reads a label cache written by ``keras-mtanet teach`` and the FER+ votes of one split (test by default, which
no part of the teacher was fitted or tuned on) and prints, as Markdown:

1. per split in the cache: images, share of faces the landmarker found, landmarker minutes (from LABELS.csv.json);
2. per majority expression: the share of found faces with each AU above 0.5, the prototype AUs (EMFACS:
   happiness AU6+AU12, surprise AU1+AU2+AU25, sadness AU1+AU4+AU15, fear AU1+AU2+AU4+AU20+AU25, anger AU4)
   marked with *, and the share with *all* of them active; neutral is the row to compare against;
3. mean (and standard deviation) of the derived valence and arousal per majority expression.

    python benchmarks/teacher_agreement.py --data ../shared/data/ferplus --labels LABELS.csv [--split test]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from keras_mtanet.data import ferplus
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

PROTOTYPES = {"Happiness": ("AU6", "AU12"), "Surprise": ("AU1", "AU2", "AU25"),
              "Sadness": ("AU1", "AU4", "AU15"), "Fear": ("AU1", "AU2", "AU4", "AU20", "AU25"), "Anger": ("AU4",)}
ORDER = ("Neutral", "Happiness", "Surprise", "Sadness", "Fear", "Anger", "Disgust")


def split_table(labels):
    summary = Path(str(labels) + ".json")
    if not summary.exists():
        return "(no LABELS.csv.json beside the cache)"
    splits = json.loads(summary.read_text())["splits"]
    lines = ["| split | images | found | share found | landmarker minutes |", "|---|---:|---:|---:|---:|"]
    for folder, r in splits.items():
        lines.append(f"| {folder} | {r['images']} | {r['found']} | {100 * r['found_share']:.1f} % | "
                     f"{r['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def agreement_table(index):
    found = np.all(index.au >= 0, axis=1)
    active = index.au > 0.5
    lines = ["| majority expression | faces found | " + " | ".join(AU_NAMES) + " | all prototype AUs |",
             "|---|---:|" + "---:|" * (len(AU_NAMES) + 1)]
    for name in ORDER:
        rows = found & (index.expr == EXPR_NAMES.index(name))
        if not rows.any():
            continue
        proto = PROTOTYPES.get(name, ())
        cells = [f"{100 * active[rows, j].mean():.0f}{'*' if au in proto else ''}" for j, au in enumerate(AU_NAMES)]
        both = np.all(active[rows][:, [AU_NAMES.index(a) for a in proto]], axis=1).mean() if proto else None
        lines.append(f"| {name} | {rows.sum()} | " + " | ".join(cells) + " | "
                     + (f"{100 * both:.0f} %" if both is not None else "-") + " |")
    return "\n".join(lines)


def va_table(index):
    rated = np.all(index.va > -2, axis=1)
    lines = ["| majority expression | images | mean valence (sd) | mean arousal (sd) |", "|---|---:|---:|---:|"]
    groups = [(n, index.expr == EXPR_NAMES.index(n)) for n in ORDER] + [("(contempt majority)", index.expr < 0)]
    for name, rows in groups:
        rows = rows & rated
        if rows.any():
            v, a = index.va[rows, 0], index.va[rows, 1]
            lines.append(f"| {name} | {rows.sum()} | {v.mean():+.3f} ({v.std():.3f}) | "
                         f"{a.mean():+.3f} ({a.std():.3f}) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="FER+ root")
    parser.add_argument("--labels", required=True, help="label cache from keras-mtanet teach")
    parser.add_argument("--split", default="test", choices=ferplus.SPLITS)
    args = parser.parse_args(argv)
    index = ferplus.read_index(args.data, args.split, labels=args.labels)
    s = index.stats
    print("## Teacher runs\n")
    print(split_table(args.labels))
    print(f"\n## AU activation (p > 0.5) per majority expression, FER+ {args.split}, % of found faces "
          f"({s['teacher_found']} found, {s['teacher_missed']} missed; * = prototype AU)\n")
    print(agreement_table(index))
    print(f"\n## Derived valence/arousal per majority expression, FER+ {args.split}\n")
    print(va_table(index))


if __name__ == "__main__":
    main()
