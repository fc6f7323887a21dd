"""Predict affect for every face in a video with the Python API, and summarise each face.

    python examples/predict_video.py VIDEO [--model PRESET] [--output faces.csv] [--plot faces.png]

Without --model the embedded default preset is used: it was trained on synthetic cartoon faces only, so its
numbers on real faces show the pipeline working, not real affect. Pass a preset trained on Aff-Wild2 or
AffectNet (``keras-mtanet presets``, or a run folder from ``keras-mtanet train``) for real use.
"""

import argparse
import collections

import keras_mtanet
from keras_mtanet.inference import plots, records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--model", help="preset name, hf://ORG/REPO or folder (default: embedded preset)")
    parser.add_argument("--output", default="faces.csv")
    parser.add_argument("--plot")
    parser.add_argument("--smooth", default="0.5", help="seconds, or frames as 15f (default 0.5 s)")
    parser.add_argument("--every", type=int, default=1, help="detect every N frames, track in between")
    args = parser.parse_args()

    predictor = keras_mtanet.Predictor(args.model, detector="mtcnn", detect_every=args.every)
    found = predictor.predict_video(args.video, smooth=args.smooth)
    found = found.to_dict("records") if hasattr(found, "to_dict") else found
    with records.RecordWriter(args.output) as writer:
        writer.write(found)

    faces = collections.defaultdict(list)
    for record in found:
        if record["face_detected"]:
            faces[int(record["face_id"])].append(record)
    frames = len({r["frame"] for r in found})
    print(f"{args.video}: {frames} frames, {len(faces)} face(s)")
    for face_id, rows in sorted(faces.items()):
        valence = sum(r["valence"] for r in rows) / len(rows)
        arousal = sum(r["arousal"] for r in rows) / len(rows)
        expression, count = collections.Counter(r["expression"] for r in rows).most_common(1)[0]
        print(f"face {face_id}: {len(rows)} frames, mean valence {valence:+.2f}, mean arousal {arousal:+.2f}, "
              f"mostly {expression} ({count}/{len(rows)} frames)")
    if args.plot:
        plots.plot_records(found, args.plot, title=args.video)
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in sorted(predictor.timings.items()))
    print(f"time per stage (they overlap): {timings}")
    print(f"per-frame rows: {args.output}")


if __name__ == "__main__":
    main()
