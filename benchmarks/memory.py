"""Peak resident memory and time per item as the input grows, on every long-running path.

Each path runs in a child process (the real ``keras-mtanet`` command where there is one) at three lengths: 1
item (start-up: imports, model load), a short and a long input. The child's resident memory (its own and its
children's, from ``/proc/PID/status``) is sampled every 0.1 s; peak RSS is the larger of the sampled peak and
the kernel's high-water mark (``ru_maxrss`` from ``wait4``). Time per item is the time above the 1-item
run's, divided by the items beyond one, so start-up does not hide growth: wall time, and CPU time (user +
system), which a machine shared with other work disturbs less. Flat memory means the long run's peak stays near
the short run's (ratio near 1.0); flat time means ms/item long/short near 1.0.

Paths:

- ``video``: ``keras-mtanet predict`` on a 640 x 480, 30 fps video of one face (the astronaut photograph
  bundled in ``keras_mtanet/assets``, drifting across a frame), detection on every frame.
- ``images``: ``keras-mtanet predict`` on a folder of N 640 x 480 JPEGs of that face (hard links to 16
  distinct files, so a 100,000-image folder costs no disk).
- ``demo``: ``keras-mtanet demo --synthetic --frames N``.
- ``evaluate``: ``keras-mtanet evaluate`` on an Aff-Wild2-layout split of one video of N annotated frames
  (one 112 px crop hard-linked for every frame), writing the prediction files.
- ``teach``: the teacher pass (``keras_mtanet.teachers.teach``) over N FER+ images with a stand-in for MediaPipe
  (a function of the pixels, about 0.1 ms an image), so what is measured is the pass and its cache writer.
- ``annotations``: ``affwild2.read_index`` on one Aff-Wild2 VA annotation file of N frames (8.6 million: a
  160 MB file) and no crops; goal: peak at most 2 GB (it was 6.3 GB when the reader held Python lists).

    python benchmarks/memory.py --quick            # video 300/3,000 frames, images 200/2,000, ... (~5 min)
    python benchmarks/memory.py                    # video 1,800/18,000 frames (1 and 10 min at 30 fps), ...
    python benchmarks/memory.py --quick --paths video teach

Single inputs (issue 23 item 2; each run once, its peak printed beside the 2 GB goal):

- ``large-jpegs``: ``predict`` on a folder of N JPEGs of 7200 x 5400 (39 megapixels, decoded whole; N is 40,
  10 with ``--quick``), the default detector.
- ``padded-png``: ``predict`` on a 512 x 512 PNG padded to 5 GB (1 GB with ``--quick``; a sparse file, no disk)
  beside a good photo: the padded file is refused unread, the photo keeps its row.
- ``big-preset``: ``predict`` with a preset whose config is se_resnet50 at width 3.3 and 1024 px (290 M
  weights, inside the weight limit): refused before anything is built.

    python benchmarks/memory.py --quick --paths --cases large-jpegs padded-png big-preset

Linux only (``/proc``). Inputs are generated under a temporary folder, removed at the end.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from keras_mtanet import files
from keras_mtanet.presets import checks
from keras_mtanet.presets import folder as preset_folder

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "keras_mtanet" / "assets" / "astronaut.jpg"
FPS = 30
# (short, long) lengths per path; the video's full lengths are 1 and 10 minutes at 30 fps.
FULL = {"video": (1_800, 18_000), "images": (10_000, 100_000), "demo": (1_000, 10_000),
        "evaluate": (1_800, 18_000), "teach": (10_000, 100_000), "annotations": (2_150_000, 8_600_000)}
QUICK = {"video": (300, 3_000), "images": (200, 2_000), "demo": (300, 3_000), "evaluate": (300, 3_000),
         "teach": (2_000, 20_000), "annotations": (200_000, 2_150_000)}
PATHS = tuple(FULL)
UNITS = {"video": "frame", "images": "image", "demo": "frame", "evaluate": "frame", "teach": "image",
         "annotations": "frame"}


# ---------------------------------------------------------------------------------------------------------
# measuring a child process


def _tree_rss_kb(pid):
    """Resident memory (kB) of ``pid`` and its descendants, from /proc (0 for a process that has gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(command, env=None, timeout=3600, statuses=(0,)):
    """Run ``command``; return wall seconds, CPU seconds (user + system, the child and the children it waited
    for), peak RSS (MB) and the RSS timeline ``[(seconds, MB)]``."""
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samples = []
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(child.stderr.read()), daemon=True)
    reader.start()
    status = rusage = None
    while status is None:
        rss = _tree_rss_kb(child.pid)
        samples.append((time.perf_counter() - began, rss / 1024))
        pid, status_word, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            status, rusage = os.waitstatus_to_exitcode(status_word), usage
            break
        if time.perf_counter() - began > timeout:
            child.kill()
        time.sleep(0.1)
    wall = time.perf_counter() - began
    reader.join(5)
    child.returncode = status  # wait4 reaped it
    if status not in statuses:
        tail = (stderr[0] if stderr else b"").decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(map(str, command))[:200]} exited {status}: " + " | ".join(tail))
    peak = max(max(mb for _, mb in samples), rusage.ru_maxrss / 1024)
    return wall, rusage.ru_utime + rusage.ru_stime, peak, samples


def timeline(samples, points=(0.25, 0.5, 0.75, 1.0)):
    """RSS (MB) at the given shares of the run's wall time (the last sample at or before each)."""
    end = samples[-1][0]
    out = []
    for share in points:
        before = [mb for t, mb in samples if t <= share * end and mb > 0]
        out.append(before[-1] if before else 0.0)
    return out


# ---------------------------------------------------------------------------------------------------------
# inputs


def _frame_source():
    """``frame(i)``: a 640 x 480 BGR frame with the astronaut's face, drifting 2 px a frame and back."""
    import cv2
    import numpy as np

    photo = cv2.imread(str(PHOTO))
    if photo is None:
        raise SystemExit(f"{PHOTO}: cannot read the bundled photograph")
    face = cv2.resize(photo, (400, 400), interpolation=cv2.INTER_AREA)
    background = np.full((480, 640, 3), (90, 110, 100), np.uint8)

    def frame(i):
        out = background.copy()
        x = 20 + abs((2 * i) % 400 - 200)  # 20..220
        out[40:440, x:x + 400] = face
        return out

    return frame


def write_video(path, frames):
    import cv2

    frame = _frame_source()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
    if not writer.isOpened():
        raise SystemExit(f"{path}: OpenCV cannot write mp4v video here")
    for i in range(frames):
        writer.write(frame(i))
    writer.release()


def write_image_folder(folder, count, distinct=16):
    import cv2

    frame = _frame_source()
    folder.mkdir(parents=True)
    sources = []
    for i in range(distinct):
        path = folder.parent / f"{folder.name}-source-{i:02d}.jpg"
        cv2.imwrite(str(path), frame(i * 23))
        sources.append(path)
    for i in range(count):
        os.link(sources[i % distinct], folder / f"{i:06d}.jpg")


def write_affwild2(root, frames):
    """One video of ``frames`` annotated frames in the Aff-Wild2 layout (Validation_Set, all three tasks)."""
    import cv2
    import numpy as np

    from keras_mtanet.data import affwild2

    frame = _frame_source()(0)
    crop = cv2.resize(frame[40:440, 20:420], (112, 112), interpolation=cv2.INTER_AREA)
    crops = affwild2.crop_folder(root, "video1")
    crops.mkdir(parents=True)
    cv2.imwrite(str(root / "crop.jpg"), crop)
    for i in range(1, frames + 1):
        os.link(root / "crop.jpg", crops / affwild2.crop_name(i))
    rng = np.random.default_rng(0)
    labels = {"va": np.round(rng.uniform(-1, 1, (frames, 2)), 3).astype(np.float32),
              "au": rng.integers(0, 2, (frames, 8)).astype(np.float32),
              "expr": rng.integers(0, 7, frames).astype(np.int32)}
    for task, values in labels.items():
        path = affwild2.annotation_path(root, task, "Validation_Set", "video1")
        path.parent.mkdir(parents=True, exist_ok=True)
        affwild2.write_annotation_file(path, task, values)


def write_va_annotations(root, frames, block=200_000):
    """One Aff-Wild2 VA annotation file of ``frames`` random lines (about 19 bytes each), no crops."""
    import numpy as np

    from keras_mtanet.data import affwild2

    path = affwild2.annotation_path(root, "va", "Training_Set", "video1")
    path.parent.mkdir(parents=True)
    (root / "cropped_aligned").mkdir()
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("valence,arousal\n")
        for start in range(0, frames, block):
            values = rng.uniform(-1, 1, (min(block, frames - start), 2))
            f.write("".join(f"{a:.6g},{b:.6g}\n" for a, b in values))


ANNOTATIONS_CHILD = textwrap.dedent("""
    import sys
    from keras_mtanet.data import affwild2
    index = affwild2.read_index(sys.argv[1], "train", tasks=("va",))
    assert index.stats["annotated_frames"] == int(sys.argv[2])
""")


def write_ferplus(root, count, distinct=16):
    import cv2
    import numpy as np

    folder = root / "FER2013Test"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(distinct):
        level = 60 + 8 * i
        cv2.imwrite(str(root / f"source-{i:02d}.png"), rng.integers(level - 30, level + 30, (48, 48)).astype(np.uint8))
    with open(folder / "label.csv", "w") as f:
        for i in range(count):
            name = f"fer{i:07d}.png"
            os.link(root / f"source-{i % distinct:02d}.png", folder / name)
            votes = [0] * 10
            votes[i % 7] = 6
            votes[(i + 3) % 7] = 4
            f.write(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)) + "\n")


# The teacher pass with a stand-in for MediaPipe's landmarker, run as a child process.
TEACH_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_mtanet.teachers import landmarker, teach

    class Stub:
        def __init__(self, *a, **k): pass
        def settings(self): return {"stub": 1}
        def observe(self, gray):
            mean = float(gray.mean()) / 255
            if mean < 0.4:
                return landmarker.Observation(False, np.full(52, np.nan, np.float32), np.full(7, np.nan, np.float32))
            return landmarker.Observation(True, np.linspace(0, mean, 52).astype(np.float32),
                                          np.full(7, mean / 10, np.float32), 0)
        def __enter__(self): return self
        def __exit__(self, *exc): pass

    landmarker.FaceLandmarker = Stub
    landmarker.check_bundle = lambda path: b""
    teach.teach(sys.argv[1], "stub.task", sys.argv[2], splits=("test",), log=lambda *a: None)
""")


def _cli(*args):
    return [sys.executable, "-m", "keras_mtanet", *map(str, args)]


def prepare(path, length, work):
    """``(command, env)`` that runs ``path`` on an input of ``length`` items, generating the input in ``work``."""
    where = work / f"{path}-{length}"
    where.mkdir()
    if path == "video":
        write_video(where / "clip.mp4", length)
        return _cli("predict", where / "clip.mp4", "--output", where / "out.csv", "--quiet")
    if path == "images":
        write_image_folder(where / "images", length)
        return _cli("predict", where / "images", "--output", where / "out.csv", "--quiet")
    if path == "demo":
        return _cli("demo", "--synthetic", "--frames", length, "--output", where / "out.csv")
    if path == "evaluate":
        write_affwild2(where / "aw", length)
        return _cli("evaluate", "--data", where / "aw", "--split", "Validation_Set", "--predictions",
                    where / "predictions", "--metrics", where / "scores.json")
    if path == "teach":
        write_ferplus(where / "fer", length)
        return [sys.executable, "-c", TEACH_CHILD, str(where / "fer"), str(where / "labels.csv")]
    if path == "annotations":
        write_va_annotations(where / "aw", length)
        return [sys.executable, "-c", ANNOTATIONS_CHILD, str(where / "aw"), str(length)]
    raise ValueError(path)


# ---------------------------------------------------------------------------------------------------------
# single inputs (issue 23 item 2)

CASES = ("large-jpegs", "padded-png", "big-preset")
GOAL_MB = 2000


def _uniform_jpeg(width, height):
    """A valid grey baseline JPEG of any size, written without its pixels in memory (as in
    tests/cli/test_predict_command.py): every 8 x 8 block is two 0 bits."""
    import struct

    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"
    bits = 2 * -(-width // 8) * -(-height // 8)
    scan = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")
    return (b"\xff\xd8" + segment(0xDB, b"\x00" + bytes([1] * 64))
            + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
            + segment(0xC4, b"\x00" + one_code) + segment(0xC4, b"\x10" + one_code)
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + scan + b"\xff\xd9")


def prepare_case(case, work, quick):
    """``(command, what)`` for one single-input case, its input generated in ``work``."""
    import shutil
    import struct

    where = work / case
    where.mkdir()
    if case == "large-jpegs":
        count = 10 if quick else 40
        folder = where / "photos"
        folder.mkdir()
        (where / "source.jpg").write_bytes(_uniform_jpeg(7200, 5400))
        for i in range(count):
            os.link(where / "source.jpg", folder / f"{i:03d}.jpg")
        return _cli("predict", folder, "--output", where / "out.csv", "--quiet"), f"{count} JPEGs of 7200 x 5400"
    if case == "padded-png":
        import cv2

        gigabytes = 1 if quick else 5
        photo = cv2.resize(cv2.imread(str(PHOTO)), (512, 512))
        png = cv2.imencode(".png", photo)[1].tobytes()
        iend = png.rindex(b"IEND") - 4
        pad = gigabytes * 2 ** 30
        with open(where / "padded.png", "wb") as f:
            f.write(png[:iend] + struct.pack(">I", min(pad, 2 ** 31 - 1)) + b"prVt")
            f.seek(pad, 1)
            f.write(b"\0\0\0\0" + png[iend:])
        shutil.copy(PHOTO, where / "good.jpg")
        return (_cli("predict", where / "padded.png", where / "good.jpg", "--output", where / "out.csv", "--quiet"),
                f"a 512 x 512 PNG padded to {gigabytes} GB beside a good photo")
    if case == "big-preset":
        sys.path.insert(0, str(ROOT))
        from keras_mtanet import MTANet

        folder = where / "preset"
        model = MTANet("se_resnet18", input_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1), width=0.25,
                       head_filters=32)
        preset_folder.save_preset(model, folder, preset_folder.preset_metadata(model, "none"), "card")
        config = json.loads((folder / checks.CONFIG_FILE).read_text())
        config.update(backbone="se_resnet50", input_shape=[1024, 1024, 3], width=3.3, stack_blocks=None)
        (folder / checks.CONFIG_FILE).write_text(json.dumps(config))
        meta = json.loads((folder / checks.METADATA_FILE).read_text())
        meta["files"][checks.CONFIG_FILE] = files.sha256_file(folder / checks.CONFIG_FILE)
        meta["input_size"] = [1024, 1024]
        (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
        return (_cli("predict", PHOTO, "--model", folder, "--output", where / "out.csv", "--quiet"),
                "se_resnet50, width 3.3, 1024 px (290 M weights), one photo")
    raise ValueError(case)


def run_case(case, work, quick, log=print):
    command, what = prepare_case(case, work, quick)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    wall, cpu, peak, _ = measure(command, env=env, statuses=(0, 1, 2))
    verdict = "within" if peak <= GOAL_MB else "OVER"
    log(f"  {case} ({what}): peak {peak:.0f} MB, {wall:.1f} s wall ({verdict} the {GOAL_MB} MB goal)")
    return {"input": what, "peak_rss_mb": round(peak, 1), "wall_s": round(wall, 2), "goal_mb": GOAL_MB}


def run_path(path, short, long, work, log=print):
    results = {}
    for length in (1, short, long):
        command = prepare(path, length, work)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
        wall, cpu, peak, samples = measure(command, env=env)
        results[length] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak, 1),
                           "rss_at_25_50_75_100_percent_mb": [round(v, 1) for v in timeline(samples)]}
        log(f"  {path} {length}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {peak:.0f} MB")
    for length in (short, long):
        for kind in ("wall", "cpu"):
            extra = results[length][f"{kind}_s"] - results[1][f"{kind}_s"]
            results[length][f"{kind}_ms_per_item"] = round(1000 * extra / (length - 1), 3)
    s, lg = results[short], results[long]
    ratios = {"peak_rss_long_over_short": round(lg["peak_rss_mb"] / s["peak_rss_mb"], 3),
              **{f"{kind}_ms_per_item_long_over_short": round(lg[f"{kind}_ms_per_item"] /
                                                              max(s[f"{kind}_ms_per_item"], 1e-9), 3)
                 for kind in ("wall", "cpu")}}
    return {"lengths": results, **ratios}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short inputs (about 5 minutes in all on 2 cores)")
    parser.add_argument("--paths", nargs="*", choices=PATHS, default=list(PATHS))
    parser.add_argument("--cases", nargs="*", choices=CASES, default=list(CASES),
                        help="single inputs of issue 23 item 2, each run once (default: all)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        raise SystemExit("benchmarks/memory.py reads /proc: Linux only")
    sizes = QUICK if args.quick else FULL
    report = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtanet-memory-") as tmp:
        for path in args.paths:
            short, long = sizes[path]
            print(f"{path}: lengths 1, {short}, {long} {UNITS[path]}s", flush=True)
            report[path] = run_path(path, short, long, Path(tmp), log=lambda m: print(m, flush=True))
            shutil_rm(Path(tmp))
        cases = {}
        for case in args.cases:
            print(f"{case}:", flush=True)
            cases[case] = run_case(case, Path(tmp), args.quick, log=lambda m: print(m, flush=True))
            shutil_rm(Path(tmp))
    print()
    for case, figures in cases.items():
        print(f"{case:<12} peak RSS {figures['peak_rss_mb']:>7.0f} MB (goal <= {GOAL_MB} MB): {figures['input']}")
    if report:
        print(f"{'path':<9} {'length':>8} {'peak RSS MB':>12} {'wall ms/item':>13} {'CPU ms/item':>12}   "
              "RSS at 25/50/75/100 % of the run (MB)")
    for path, r in report.items():
        for length, figures in r["lengths"].items():
            wall, cpu = (figures.get(f"{k}_ms_per_item") for k in ("wall", "cpu"))
            print(f"{path:<9} {length:>8} {figures['peak_rss_mb']:>12.0f} "
                  f"{'-' if wall is None else f'{wall:.2f}':>13} {'-' if cpu is None else f'{cpu:.2f}':>12}   "
                  + " / ".join(f"{v:.0f}" for v in figures["rss_at_25_50_75_100_percent_mb"]))
        print(f"{path:<9} long/short: peak RSS x{r['peak_rss_long_over_short']:.2f}, wall ms/item "
              f"x{r['wall_ms_per_item_long_over_short']:.2f}, CPU ms/item x{r['cpu_ms_per_item_long_over_short']:.2f}")
    print(f"total {time.perf_counter() - began:.0f} s")
    if args.json:
        tmp = Path(args.json).with_name(Path(args.json).name + ".tmp")
        tmp.write_text(json.dumps({"quick": args.quick, "paths": report, "cases": cases}, indent=2) + "\n")
        os.replace(tmp, args.json)
    return report


def shutil_rm(folder):
    """Empty ``folder`` between paths, so the generated inputs never pile up on disk."""
    import shutil

    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


if __name__ == "__main__":
    main()
