"""Sharded TFRecords for large-scale training (Aff-Wild2 has about 2.6M frames).

Each example stores the encoded image file as it was on disk (no re-encoding), the face box used for cropping
(0-size when none) and the three labels with their unannotated codes. An index with expression distributions
(FER+ votes) also stores them as ``expr_soft``; shards holding any such example are read back with distributions
as the ``"expr"`` label (a shard without them gives the one-hot of its class id, all zero when unannotated).
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mtanet.errors import DataError
from keras_mtanet.labels import AU_NAMES, EXPR_NAMES

SOFT_KEY = "expr_soft"
FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "box": tf.io.FixedLenFeature([4], tf.int64),
    "va": tf.io.FixedLenFeature([2], tf.float32),
    "au": tf.io.FixedLenFeature([len(AU_NAMES)], tf.float32),
    "expr": tf.io.FixedLenFeature([], tf.int64),
}


def _example(image_bytes, box, va, au, expr, expr_soft=None):
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "box": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in box])),
        "va": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in va])),
        "au": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in au])),
        "expr": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(expr)])),
    }
    if expr_soft is not None:
        feature[SOFT_KEY] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in expr_soft]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(index, out_dir, num_shards=None, frames_per_shard=10000, prefix="frames"):
    """Write ``index`` (a ``FrameIndex``) as ``out_dir/<prefix>-00000-of-0000N.tfrecord`` shards.

    Frames are dealt round-robin so every shard mixes videos. Returns the list of shard paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(index)
    if n == 0:
        raise DataError("write_tfrecords: the index holds no frames")
    num_shards = num_shards or max(1, int(np.ceil(n / frames_per_shard)))
    paths = [out_dir / f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
    boxes = index.boxes if index.boxes is not None else np.zeros((n, 4), np.int64)
    try:
        for i in range(n):
            with open(index.paths[i], "rb") as f:
                data = f.read()
            box = boxes[i] if index.boxes is not None else (0, 0, 0, 0)
            soft = None if index.expr_soft is None else index.expr_soft[i]
            writers[i % num_shards].write(_example(data, box, index.va[i], index.au[i], index.expr[i], soft))
    finally:
        for w in writers:
            w.close()
    return [str(p) for p in paths]


def _parse(serialized):
    ex = tf.io.parse_single_example(serialized, FEATURES)
    box = tf.cast(ex["box"], tf.int32)
    labels = {"va": ex["va"], "au": ex["au"], "expr": tf.cast(ex["expr"], tf.int32)}
    return ex["image"], box, labels


# A soft row of -1 marks an example written without distributions; it is replaced by its class id's one-hot.
_SOFT_FEATURES = {**FEATURES, SOFT_KEY: tf.io.FixedLenFeature([len(EXPR_NAMES)], tf.float32,
                                                                default_value=[-1.0] * len(EXPR_NAMES))}


def _parse_soft(serialized):
    ex = tf.io.parse_single_example(serialized, _SOFT_FEATURES)
    ids = tf.cast(ex["expr"], tf.int32)
    hard = tf.one_hot(tf.maximum(ids, 0), len(EXPR_NAMES)) * tf.cast(ids >= 0, tf.float32)
    soft = tf.where(tf.reduce_min(ex[SOFT_KEY]) < 0.0, hard, ex[SOFT_KEY])
    return ex["image"], tf.cast(ex["box"], tf.int32), {"va": ex["va"], "au": ex["au"], "expr": soft}


def has_soft_targets(files):
    """Whether any of the TFRecord ``files`` holds expression distributions (reads each file's first example)."""
    for path in files:
        for record in tf.data.TFRecordDataset(str(path)).take(1):
            if SOFT_KEY in tf.train.Example.FromString(record.numpy()).features.feature:
                return True
    return False


def read_examples(files, training=False, seed=None, shuffle_buffer=20000):
    """``(image bytes, box, labels)`` elements from TFRecord ``files``, interleaved (and shuffled when
    training). A zero-size box means "no crop" and is widened to the whole image by the decoder. The ``"expr"``
    label is a class id, or a distribution over the classes when any file holds distributions."""
    files = list(files)
    parse = _parse_soft if has_soft_targets(files) else _parse
    files = tf.data.Dataset.from_tensor_slices(files)
    if training:
        files = files.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=tf.data.AUTOTUNE,
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training or seed is not None)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.map(lambda image, box, labels: (image, _full_if_empty(box), labels))


def _full_if_empty(box):
    big = tf.constant([0, 0, 1 << 30, 1 << 30], tf.int32)
    return tf.where(box[2] > 0, box, big)
