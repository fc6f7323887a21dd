"""End-to-end video speed: frames/s of ``Predictor.predict_video`` with every detector, in the same run.

640 x 480 videos are generated (scikit-image's astronaut() face moving over a textured background; one face
in every frame, and a five-face video) and run through decode -> detect (every frame) -> align -> batched
predict with SE-ResNet-50 and SE-ResNet-18 MTANet (112 px, random weights: speed does not depend on them).
Each line gives the end-to-end frames/s, its ratio to MTCNN's in the same run, the model-only img/s on the
same crop size, and the busy milliseconds of each stage per frame: where the time goes. The stages run in
three threads (decode, detect + track + align, model), so they overlap and can add up to more than the wall
time per frame; the slowest stage bounds the frame rate. "CPU ms/frame" is the process's CPU time per frame
(all threads): on a machine shared with other work it stays near the true cost while wall times stretch, and
2000 / it is the frame rate two otherwise idle cores could at best reach.

Each model runs in float32 and in bfloat16 (``--precisions``; bfloat16 is fast on CPUs with AMX or AVX-512
BF16 and moves the ABAW scores by at most 0.005, see ``benchmarks/reduced_precision.py``), through the default
runtime (OpenVINO where installed, else Keras).

    nice -n 10 python benchmarks/video_fps.py [--quick] [--frames 300] [--backbones se_resnet50 se_resnet18] \
        [--detectors blazeface mtcnn] [--precisions float32 bfloat16]

Needs scikit-image (in the test extras) for the photograph.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
from skimage import data as skdata

from keras_mtanet import MTANet, Predictor
from keras_mtanet.inference import detection

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import scenes

STAGES = ("decode", "detect", "track", "align", "predict")
ASTRONAUT_BOX = (182, 64, 83, 107)
# Five places (patch top-left) and drifts (px per frame) that keep five 141 x 182 patches apart in 640 x 480.
FIVE = [((10, 20), (0.5, 0.2)), ((240, 10), (-0.3, 0.4)), ((470, 20), (-0.4, 0.3)),
        ((110, 270), (0.4, -0.3)), ((370, 270), (-0.2, -0.4))]


def make_video(path, n_frames, faces):
    photo = skdata.astronaut()
    patch, box = scenes.face_patch(photo, ASTRONAUT_BOX, margin=0.35)
    flipped, flipped_box = scenes.mirrored(patch, box)
    if faces == 1:
        moving = [(patch, box, (30, 60), (1.5, 0.5))]
    else:  # alternate the face and its mirror image, so the five do not look alike
        moving = [((patch, flipped)[i % 2], (box, flipped_box)[i % 2], start, drift)
                  for i, (start, drift) in enumerate(FIVE)]
    frames, _ = scenes.compose(n_frames, moving, size=(480, 640))
    scenes.write_video(path, frames, fps=25.0)


def model_only_ips(predictor, batch_size, repeats=4):
    crops = np.random.default_rng(0).uniform(0, 255, (batch_size, predictor.size, predictor.size, 3))
    crops = crops.astype("float32")
    predictor.forward(crops)
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.forward(crops)
    return repeats * batch_size / (time.perf_counter() - start)


def end_to_end(predictor, video):
    predictor.predict_image(np.zeros((480, 640, 3), np.uint8))  # warm-up: detector and model graphs
    predictor.timings.clear()
    predictor.counts.clear()
    start, cpu = time.perf_counter(), time.process_time()
    predictor.predict_video(video)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    frames = predictor.counts["frames"]
    per_frame = {stage: 1000 * predictor.timings[stage] / frames for stage in STAGES}
    return frames / wall, per_frame, predictor.counts["faces"] / frames, 1000 * cpu / frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 one-face and 20 five-face frames")
    parser.add_argument("--frames", type=int, default=300, help="frames of the one-face video")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--backbones", nargs="+", default=["se_resnet50", "se_resnet18"])
    parser.add_argument("--detectors", nargs="+", default=list(detection.DETECTORS), choices=detection.DETECTORS)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    args = parser.parse_args()
    one, five = (40, 20) if args.quick else (args.frames, args.frames // 2)

    with tempfile.TemporaryDirectory() as tmp:
        videos = {1: os.path.join(tmp, "one.mp4"), 5: os.path.join(tmp, "five.mp4")}
        make_video(videos[1], one, 1)
        make_video(videos[5], five, 5)
        print(f"videos: 640x480, {one} frames with one face, {five} frames with five; detection on every frame; "
              f"OpenCV {cv2.__version__}; {os.cpu_count()} CPU cores, load average "
              f"{os.getloadavg()[0]:.1f} at the start (other work on the machine slows every line alike); BlazeFace "
              f"runs {detection.default_workers()} detection threads")
        print("| model | precision | faces | detector | fps | x MTCNN | CPU ms/frame | 2-core bound fps | "
              "model img/s | found/frame | " + " | ".join(f"{s} ms" for s in STAGES) + " |")
        print("|" + "---|" * (10 + len(STAGES)))
        for backbone in args.backbones:
            model = MTANet(backbone, input_shape=(args.input_size, args.input_size, 3))
            detectors = {name: detection.make_detector(name) for name in args.detectors}
            for precision in args.precisions:
                predictor = Predictor(model, detector=None, batch_size=args.batch_size, precision=precision)
                ips = model_only_ips(predictor, args.batch_size)
                for faces, video in videos.items():
                    rows = {}
                    for name in args.detectors + [None]:
                        predictor.detector = detectors.get(name)  # one model graph for every detector
                        rows[name] = (*end_to_end(predictor, video), ips)
                    mtcnn = rows.get("mtcnn", (float("nan"),))[0]
                    for name, (fps, per_frame, found, cpu_ms, ips) in rows.items():
                        label = name or "none (whole frame)"
                        print(f"| {backbone} | {precision} ({predictor.runtime.name}) | {faces} | {label} | "
                              f"{fps:.1f} | {fps / mtcnn:.2f} | {cpu_ms:.1f} | {2000 / cpu_ms:.0f} | {ips:.0f} | "
                              f"{found:.2f} | " + " | ".join(f"{per_frame[s]:.1f}" for s in STAGES) + " |",
                              flush=True)


if __name__ == "__main__":
    main()
