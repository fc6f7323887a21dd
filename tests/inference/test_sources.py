"""Image and video sources (keras_mtanet.inference.sources): huge images decode reduced, in bounded memory."""

import os
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import ASTRONAUT_BOX, read_csv, write_image

from keras_mtanet import Predictor
from keras_mtanet.errors import DataError
from keras_mtanet.inference import sources, tracking
from keras_mtanet.inference.sources import Source

# Peak resident memory allowed to `keras-mtanet predict` on a 20000 x 20000 JPEG (400 megapixels). Measured on
# 2 CPU cores: about 0.95 GB for a 512 x 512 photo (TensorFlow and the model), 1.8 GB for the 20000 x 20000
# JPEG (decoded at 1/4 size); before the pixel limit it went past 10 GB.
MAX_RSS_BYTES = 3 * 2 ** 30


def uniform_jpeg(width, height):
    """A valid baseline grey JPEG of any size, built without its pixels in memory: every 8 x 8 block has a DC
    difference of 0 and no AC coefficient, coded with one-code Huffman tables ('0'), so each block is two 0
    bits and every pixel decodes to 128."""
    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    bits = 2 * -(-width // 8) * -(-height // 8)
    scan = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")  # pad with 1 bits
    return (b"\xff\xd8" + segment(0xDB, b"\x00" + bytes([1] * 64))
            + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
            + segment(0xC4, b"\x00" + one_code) + segment(0xC4, b"\x10" + one_code)
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + scan + b"\xff\xd9")


@pytest.mark.safety
def test_a_20000_pixel_square_jpeg_runs_in_bounded_memory(tmp_path):
    small = tmp_path / "small.jpg"
    small.write_bytes(uniform_jpeg(37, 21))
    decoded = cv2.imread(str(small))
    assert decoded.shape == (21, 37, 3) and np.all(decoded == 128)  # the generator makes real JPEGs
    big = tmp_path / "big.jpg"
    big.write_bytes(uniform_jpeg(20000, 20000))
    assert big.stat().st_size < 2_000_000
    assert sources.image_header(big) == ("JPEG", 20000, 20000)
    out = tmp_path / "big.csv"
    # Linux counts a process's peak RSS from the memory of the process it was spawned from (exec records the old
    # address space's high-water mark), and this pytest process may hold gigabytes by now: a small Python in
    # between starts the command and reports the peak of its child alone.
    wrapper = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")
    process = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "keras_mtanet", "predict",
                              str(big), "--output", str(out), "--quiet"], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    stdout, stderr = process.stdout, process.stderr
    assert process.returncode == 0, stderr[-2000:]
    peak_kb = int(stderr.strip().splitlines()[-1])
    assert peak_kb * 1024 < MAX_RSS_BYTES, f"peak RSS {peak_kb / 2 ** 20:.2f} GB"
    assert "1 frames from 1 of 1 inputs: 0 faces, 1 frames without a face" in stdout
    rows = read_csv(out)
    assert [(r["source"], r["face_detected"]) for r in rows] == [(str(big), "0")]


@pytest.mark.safety
def test_large_jpeg_is_decoded_reduced_with_boxes_in_original_pixels(preset, photo, tmp_path, monkeypatch):
    path, png = tmp_path / "astronaut.jpg", tmp_path / "astronaut.png"
    write_image(path, photo)
    write_image(png, photo)
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 70_000)  # 512 x 512 is 262,144 pixels; 1/2 size fits
    frame = next(Source(str(path), "image", str(path)).frames())
    assert frame.image.shape == (256, 256, 3) and frame.scale == 2.0
    records = Predictor(preset, min_face_size=20).predict_image(path).to_dict("records")
    assert len(records) == 1
    assert tracking.iou([records[0][k] for k in "xywh"], ASTRONAUT_BOX) > 0.5
    with pytest.raises(DataError) as error:
        sources.read_image(png)
    assert str(error.value) == (f"{png}: 512 x 512 pixels is over the 0.07-megapixel limit (only JPEGs are decoded "
                                "reduced)")
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 4000)  # 1/8 size is 64 x 64 = 4096 pixels
    with pytest.raises(DataError, match=r"astronaut.jpg: 512 x 512 pixels is over the 0.004-megapixel limit "
                                        r"even at 1/8 size$"):
        sources.read_image(path)
