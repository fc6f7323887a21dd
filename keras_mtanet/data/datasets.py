"""The tf.data input pipeline: parallel decode, crop/resize, shuffle, batch, augment, prefetch.

Every dataset made here runs with tf.data's autotuning off (``finish``): in TensorFlow 2.21 the autotuning
thread is not always woken when an iterator ends, so deleting the iterator (at the end of every ``fit`` epoch,
``evaluate`` and ``predict`` call) can wait, with every core idle, for the rest of that thread's optimisation
period: 4 to 31 s measured on this project's 2-core machine, in one 16-step epoch of three or four, with Keras's
own adapter for NumPy arrays too (what halved ``benchmarks/compare_pytorch.py``'s old ``fit`` figure in some
runs). Fixed parallelism (one map call per usable core, two batches prefetched) keeps both cores busy without
it; for arrays in memory, ``from_arrays`` gives such a dataset to pass to ``fit``.
"""

import os

import numpy as np
import tensorflow as tf

from keras_mtanet.data.augment import default_augmentation
from keras_mtanet.data.index import FrameIndex

AUTOTUNE = tf.data.AUTOTUNE
PREFETCH = 2  # batches


def cores():
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_calls(value=AUTOTUNE):
    """``num_parallel_calls`` for a map: AUTOTUNE means one call per usable core; other values pass through
    (``None``: a sequential map, as in tf.data)."""
    return cores() if value == AUTOTUNE else value


def finish(ds, options=None):
    """``ds`` with ``options`` (if given), tf.data's autotuning off (see the module note) and ``PREFETCH``
    batches prefetched. ``options`` itself is left as it is."""
    if options is not None:
        ds = ds.with_options(options)
    no_autotune = tf.data.Options()
    no_autotune.autotune.enabled = False
    return ds.with_options(no_autotune).prefetch(PREFETCH)


def from_arrays(images, labels=None, batch_size=32, shuffle=False, seed=None):
    """A batched dataset of in-memory ``images`` (and ``labels``: an array or a dict of arrays with the same
    first dimension) for ``fit`` / ``evaluate`` / ``predict``, without the end-of-iterator stall of Keras's
    adapter for NumPy arrays (module note). ``shuffle`` draws a new order every epoch; like Keras's adapter it
    shuffles row numbers and gathers the batches, so the arrays are held once, not copied into a buffer."""
    data = images if labels is None else (images, labels)
    if not shuffle:
        return finish(tf.data.Dataset.from_tensor_slices(data).batch(int(batch_size)))
    count = len(images)
    rows = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    whole = tf.data.Dataset.from_tensors(data).repeat()  # one element: the arrays, not captured in a graph
    ds = tf.data.Dataset.zip((rows.batch(int(batch_size)), whole))
    ds = ds.map(lambda i, arrays: tf.nest.map_structure(lambda a: tf.gather(a, i), arrays))
    return finish(ds)


def decode_and_resize(data, image_size, box=None, from_bytes=False):
    """Decode a JPEG/PNG (path or bytes) to float32 RGB in [0, 255], crop ``box`` if given, resize."""
    contents = data if from_bytes else tf.io.read_file(data)
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    if box is not None:
        shape = tf.shape(image)
        x0 = tf.clip_by_value(box[0], 0, shape[1] - 1)
        y0 = tf.clip_by_value(box[1], 0, shape[0] - 1)
        x1 = tf.clip_by_value(box[0] + box[2], x0 + 1, shape[1])
        y1 = tf.clip_by_value(box[1] + box[3], y0 + 1, shape[0])
        image = image[y0:y1, x0:x1]
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def _tensors(index):
    boxes = index.boxes if index.boxes is not None else np.zeros((len(index), 4), np.int32)
    # Training targets: an index with expression distributions (FER+ votes) feeds them instead of class ids.
    return np.asarray(index.paths, dtype=object).astype(str), boxes.astype(np.int32), index.targets()


def make_dataset(source, image_size=112, batch_size=32, training=False, augment=None, shuffle_buffer=20000,
                 seed=None, deterministic=False, balance_expressions=False, drop_remainder=False,
                 num_parallel_calls=AUTOTUNE, shard=None):
    """A batched ``tf.data.Dataset`` of ``(images, {"va", "au", "expr"})`` from an index or TFRecords.

    Args:
        source: a ``FrameIndex`` (``affwild2.read_index``, ``affectnet.read_index``, ``ferplus.read_index``)
            or a TFRecord file pattern written by ``tfrecord.write_tfrecords``. The ``"expr"`` labels are class
            ids, or (N, 7) distributions where the index (or any shard) carries them (``FrameIndex.targets``).
        image_size: side of the square model input; images are float32 RGB in [0, 255].
        batch_size: batch size.
        training: shuffle (reshuffled every epoch) and augment.
        augment: ``None`` means ``default_augmentation()`` when training; ``False`` disables it; or any
            Keras layer / callable applied to image batches.
        shuffle_buffer: shuffle buffer size (in frames).
        seed: seed for shuffling, sampling and augmentation.
        deterministic: fixed element order in training too (with ``seed``: identical epochs for identical
            seeds). Evaluation datasets (``training=False``) always keep the source order.
        balance_expressions: sample expression classes equally (frames without an expression label keep
            their natural share); an epoch still has as many frames as the source.
        drop_remainder: drop the last incomplete batch.
        shard: ``(count, index)`` for one of ``count`` processes training together (same ``seed``): this
            process's slice of each global batch of ``count * batch_size`` frames (give ``drop_remainder``).
    """
    if deterministic and seed is None:
        seed = 0
    # Evaluation keeps the source order (predictions are matched to frames); training may reorder for speed.
    ordered = bool(deterministic) or not training
    options = tf.data.Options()
    options.deterministic = ordered
    num_parallel_calls = parallel_calls(num_parallel_calls)

    if isinstance(source, FrameIndex):
        if len(source) == 0:
            raise ValueError("make_dataset: the index holds no frames.")
        ds = _from_index(source, training, shuffle_buffer, seed, balance_expressions)
        from_bytes, use_box, size = False, source.boxes is not None, len(source)
    else:
        from keras_mtanet.data import tfrecord

        files = sorted(tf.io.gfile.glob(str(source)))
        if not files:
            raise ValueError(f"make_dataset: no TFRecord files match {source!r}.")
        if balance_expressions:
            raise ValueError("balance_expressions needs a FrameIndex source, not TFRecords.")
        ds = tfrecord.read_examples(files, training=training, seed=seed, shuffle_buffer=shuffle_buffer)
        from_bytes, use_box, size = True, True, None

    if shard is not None:
        # Every process shuffles alike and keeps slice ``index`` of each global batch, before decoding: together
        # the processes' n-th batches, in process order, are the n-th batch a single process would draw.
        ds = ds.batch(batch_size).shard(*shard).unbatch()
        size = size and size // shard[0]

    def load(data, box, labels):
        return decode_and_resize(data, image_size, box if use_box else None, from_bytes=from_bytes), labels

    # Undecodable images are dropped (and logged) rather than ending the epoch.
    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=ordered)
    ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if training and size:
        # Dropping undecodable frames leaves the cardinality unknown; a training epoch keeps its nominal
        # number of batches by topping up from the next pass (repeat() stops if a pass yields nothing). The
        # count is stated, so that Keras knows the epoch's length from the start: without it every first epoch
        # ends in Keras's "Your input ran out of data" warning.
        steps = size // batch_size if drop_remainder else -(-size // batch_size)
        ds = ds.repeat().take(steps).apply(tf.data.experimental.assert_cardinality(steps))
    if training and augment is not False:
        layer = augment if augment is not None else default_augmentation(seed)
        # The random layers draw from one stateful seed generator: parallel calls would take its numbers in
        # varying order, so a deterministic pipeline augments one batch at a time.
        augment_batch = lambda x, y: (layer(x, training=True), y)  # noqa: E731
        if deterministic:
            ds = ds.map(augment_batch)
        else:
            ds = ds.map(augment_batch, num_parallel_calls=num_parallel_calls, deterministic=ordered)
    return finish(ds, options)


def _from_index(index, training, shuffle_buffer, seed, balance_expressions):
    paths, boxes, labels = _tensors(index)
    if not balance_expressions:
        ds = tf.data.Dataset.from_tensor_slices((paths, boxes, labels))
        if training:
            ds = ds.shuffle(min(shuffle_buffer, len(index)), seed=seed, reshuffle_each_iteration=True)
        return ds
    groups, weights = [], []
    labelled = index.expr >= 0
    classes = np.unique(index.expr[labelled])
    for c in classes:
        groups.append(index.expr == c)
        weights.append(labelled.mean() / len(classes))
    if (~labelled).any():
        groups.append(~labelled)
        weights.append((~labelled).mean())
    datasets = []
    for i, mask in enumerate(groups):
        idx = np.flatnonzero(mask)
        part = tf.data.Dataset.from_tensor_slices((paths[idx], boxes[idx], {k: v[idx] for k, v in labels.items()}))
        part_seed = None if seed is None else seed + i
        datasets.append(part.shuffle(len(idx), seed=part_seed, reshuffle_each_iteration=True).repeat())
    ds = tf.data.Dataset.sample_from_datasets(datasets, weights=weights, seed=seed)
    return ds.take(len(index))

