"""End-to-end video speed: frames/s of ``Predictor.predict_video`` beside the model-only img/s, same run.

A 640 x 480 video is generated (scikit-image's astronaut() face moving over a textured background, some
frames without a face) and run through decode -> detect -> track -> align -> batched predict with
SE-ResNet-50 and SE-ResNet-18 MTANet (112 px, random weights: speed does not depend on them). Each line
gives the end-to-end frames/s, the model-only img/s of ``predict_on_batch`` on the same crops, and the busy
time of each stage per frame (the stages overlap, so they can add up to more than the wall time).

    python benchmarks/video_fps.py [--frames 120] [--faces 1] [--backbones se_resnet50 se_resnet18]

Needs scikit-image (in the test extras) for the photograph.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data as skdata  # noqa: E402

from keras_mtanet import MTANet, Predictor  # noqa: E402
from keras_mtanet.inference import scenes  # noqa: E402

STAGES = ("decode", "detect", "track", "align", "predict")


def make_video(path, n_frames, faces):
    photo = skdata.astronaut()
    patch, box = scenes.face_patch(photo, (182, 64, 83, 107), margin=0.35)
    moving = [(patch, box, (30, 60), (3, 1))]
    if faces > 1:
        flipped, flipped_box = scenes.mirrored(patch, box)
        moving.append((flipped, flipped_box, (460, 250), (-2, -1)))
    faceless = range(n_frames // 2, n_frames // 2 + n_frames // 10)
    frames, _ = scenes.compose(n_frames, moving, size=(480, 640), faceless=faceless)
    scenes.write_video(path, frames, fps=25.0)


def model_only_ips(model, batch_size, repeats=5):
    crops = np.random.default_rng(0).uniform(0, 255, (batch_size,) + tuple(model.input_shape[1:])).astype("float32")
    model.predict_on_batch(crops)
    model.predict_on_batch(crops)
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(crops)
    return repeats * batch_size / (time.perf_counter() - start)


def end_to_end(model, video, detector, every, batch_size):
    predictor = Predictor(model, detector=detector, batch_size=batch_size, detect_every=every)
    predictor.predict_image(np.zeros((480, 640, 3), np.uint8))  # warm-up: detector and model graphs
    predictor.timings.clear()
    predictor.counts.clear()
    start = time.perf_counter()
    records = predictor.predict_video(video)
    wall = time.perf_counter() - start
    frames = predictor.counts["frames"]
    per_frame = {stage: 1000 * predictor.timings[stage] / frames for stage in STAGES}
    return frames / wall, per_frame, len(records), predictor.counts["faces"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--faces", type=int, default=1, choices=(1, 2))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--backbones", nargs="+", default=["se_resnet50", "se_resnet18"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "bench.mp4")
        make_video(video, args.frames, args.faces)
        print(f"video: {args.frames} frames of 640x480, {args.faces} face(s), 10% of frames without a face; "
              f"OpenCV {cv2.__version__}, {os.cpu_count()} CPU cores")
        print(f"{'model':<12} {'detector':<9} {'every':>5} {'e2e fps':>8} {'model img/s':>11} "
              + " ".join(f"{s + ' ms':>10}" for s in STAGES))
        for backbone in args.backbones:
            model = MTANet(backbone, input_shape=(args.input_size, args.input_size, 3))
            ips = model_only_ips(model, args.batch_size)
            for detector, every in (("mtcnn", 1), ("mtcnn", 5), ("haar", 1)):
                fps, per_frame, _, _ = end_to_end(model, video, detector, every, args.batch_size)
                print(f"{backbone:<12} {detector:<9} {every:>5} {fps:>8.1f} {ips:>11.1f} "
                      + " ".join(f"{per_frame[s]:>10.1f}" for s in STAGES))
            fps, per_frame, _, _ = end_to_end(model, video, None, 1, args.batch_size)
            print(f"{backbone:<12} {'none':<9} {1:>5} {fps:>8.1f} {ips:>11.1f} "
                  + " ".join(f"{per_frame[s]:>10.1f}" for s in STAGES)
                  + "   (--no-detect: whole frame as the crop)")


if __name__ == "__main__":
    main()
