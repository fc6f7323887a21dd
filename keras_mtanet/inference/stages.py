"""The three stages ``Predictor`` runs: a reader thread decodes frames, a detector thread finds, tracks
and aligns faces, and the calling thread runs the model on batches of aligned crops. OpenCV and the model's
runtime release the GIL, so the stages overlap. Records come out in frame order.
"""

import collections
import dataclasses
import queue
import threading
import time

import cv2
import numpy as np

from keras_mtanet.errors import DataError
from keras_mtanet.inference import alignment, records, tracking
from keras_mtanet.inference.detection import Face
from keras_mtanet.labels import TASKS

_STOP = object()
# Decoded frames waiting for the detector, and those it takes at once, are bounded in bytes, not only in number:
# 128 frames of 7200 x 5400 are 15 GB. At least one frame always passes, whatever its size.
MAX_QUEUED_BYTES = 128 * 2 ** 20


class Stages:
    """The stages, as ``Predictor`` holds them.

    Args:
        forward: ``forward(batch) -> {"va", "au", "expr"}`` numpy arrays: the model on a float32 (N, H, W, 3)
            batch of aligned crops.
        detector: an object with ``detect(images) -> [[Face, ...], ...]``, or None (each image is a face crop).
        size: the side of the aligned crops in pixels.
        template: the five-point alignment template in unit coordinates, (5, 2).
        batch_size: the most crops per ``forward`` call.
        detect_every: run the detector on every N-th video frame, tracking faces in between.
        max_latency: seconds a partial batch waits for more faces.
    """

    def __init__(self, forward, detector, size, template, batch_size, detect_every, max_latency,
                 decisions=records.DEFAULT_DECISIONS):
        self.forward, self.detector, self.size, self.template = forward, detector, size, template
        self.decisions = decisions  # how the records' AU decisions and expression follow the probabilities
        self.batch_size, self.detect_every, self.max_latency = batch_size, detect_every, max_latency
        self.timings = collections.Counter()  # busy seconds per stage: decode, detect, track, align, predict
        self.counts = collections.Counter()   # frames, faces, frames_without_face, detector_calls

    def stream(self, sources, stride=1, max_frames=None, progress=None, check=None):
        """Run the pipeline over ``sources``; yields, in order:

        - ``("records", source, [record, ...])`` for each decoded frame (one record per face, or one
          ``face_detected=0`` record),
        - ``("error", source, message)`` for a source that could not be read, or where face detection or
          alignment failed (a one-line message naming it; the rest of that source is skipped, the other
          sources go on),
        - ``("done", source, None)`` after each source (``source.truncated_at`` then tells a truncated video).

        ``progress(frames, faces)`` is called after each model batch. ``check(source)``, called in the reader
        once a source's first frame is decoded (a video's frame rate is known then), may raise ``DataError``:
        that source fails with its message before any of its frames is predicted.
        """
        stop = threading.Event()
        frames_q = _BytesQueue(4 * self.batch_size, MAX_QUEUED_BYTES)
        jobs_q = queue.Queue(maxsize=4 * self.batch_size)  # aligned crops: the frames' pixels are dropped
        errors = []
        threads = [threading.Thread(target=self._guard, args=(self._read, errors, jobs_q, stop, sources, stride,
                                                               max_frames, frames_q, check), daemon=True),
                   threading.Thread(target=self._guard, args=(self._detect, errors, jobs_q, stop, frames_q,
                                                               jobs_q), daemon=True)]
        for thread in threads:
            thread.start()
        try:
            yield from self._predict(jobs_q, errors, progress)
        finally:
            stop.set()
            for q in (frames_q, jobs_q):
                _drain(q)
            for thread in threads:
                thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------ stages
    @staticmethod
    def _guard(stage, errors, jobs_q, stop, *args):
        """Run a stage thread; an unexpected exception is handed to the consumer and ends the stream."""
        try:
            stage(stop, *args)
        except BaseException as error:  # re-raised in the consumer thread
            errors.append(error)
            _put(jobs_q, _STOP, stop)

    def _read(self, stop, sources, stride, max_frames, frames_q, check=None):
        for source in sources:
            frames = source.frames(stride, max_frames)
            first = True
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    frame = next(frames)
                    if first and check is not None:
                        check(source)
                    first = False
                except StopIteration:
                    break
                except DataError as error:
                    frames.close()
                    _put(frames_q, ("error", source, str(error)), stop)
                    break
                except Exception as error:  # e.g. out of memory, or an OpenCV error: this input fails alone
                    _put(frames_q, ("error", source, f"{source.name}: could not be read ({_one_line(error)})"),
                         stop)
                    break
                finally:
                    self.timings["decode"] += time.perf_counter() - start
                _put(frames_q, ("frame", source, frame), stop)
            _put(frames_q, ("done", source, None), stop)
        _put(frames_q, _STOP, stop)

    def _detect(self, stop, frames_q, jobs_q):
        state, carry, failed = None, None, None
        while not stop.is_set():
            item, carry = (carry if carry is not None else _get(frames_q, stop)), None
            if item is _STOP:
                break
            kind, source, frame = item
            if kind != "frame":
                state = None
                if kind == "done":
                    failed = None
                _put(jobs_q, item, stop)
                continue
            if source is failed:
                continue  # detection failed earlier in this source: its error was reported
            if state is None:
                state = _TrackState()
            # Take the frames of this source already decoded (up to 8) to run the detector on them at once.
            batch = [frame]
            held = _nbytes(item)
            while self.detector is not None and len(batch) < 8 and held < MAX_QUEUED_BYTES:
                try:
                    nxt = frames_q.get_nowait()
                except queue.Empty:
                    break
                if nxt is not _STOP and nxt[0] == "frame" and nxt[1] is source:
                    batch.append(nxt[2])
                    held += _nbytes(nxt)
                else:
                    carry = nxt
                    break
            try:
                for job in self._faces_of(batch, state):
                    _put(jobs_q, ("frame", source, job), stop)
            except Exception as error:  # one input's failure, not the run's
                failed = source
                where = f" at frame {batch[0].index}, the rest skipped" if source.kind in ("video", "webcam") else ""
                _put(jobs_q, ("error", source, f"{source.name}: face detection or alignment failed{where} "
                                               f"({_one_line(error)})"), stop)
        _put(jobs_q, _STOP, stop)

    def _faces_of(self, frames, state):
        """(frame, faces, ids, crops) for consecutive ``frames`` of one source: detected, or tracked from the
        previous frame, then aligned."""
        if self.detector is None:
            for frame in frames:
                start = time.perf_counter()
                crop = alignment.resize_whole(frame.image, self.size)
                self.timings["align"] += time.perf_counter() - start
                h, w = frame.image.shape[:2]
                yield _without_pixels(frame), [Face(np.array([0.0, 0.0, w, h]), float("nan"), None, False)], [0], [crop]
            return
        needs = [(state.since_detection + i) % self.detect_every == 0 for i in range(len(frames))]
        to_detect = [f.image for f, need in zip(frames, needs) if need]
        start = time.perf_counter()
        detected = iter(self.detector.detect(to_detect) if to_detect else ())
        self.timings["detect"] += time.perf_counter() - start
        self.counts["detector_calls"] += len(to_detect)
        for frame, need in zip(frames, needs):
            start = time.perf_counter()
            gray = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY) if self.detect_every > 1 else None
            if need:
                faces = next(detected)
            else:
                faces = tracking.propagate(state.gray, gray, state.faces)
            faces = sorted(faces, key=lambda f: (f.box[0], f.box[1]))
            ids = state.tracker.update(faces)
            state.gray, state.faces = gray, faces
            state.since_detection += 1
            self.timings["track"] += time.perf_counter() - start
            start = time.perf_counter()
            crops = [alignment.align_face(frame.image, face.landmarks, self.size, self.template) for face in faces]
            self.timings["align"] += time.perf_counter() - start
            yield _without_pixels(frame), faces, ids, crops

    def _predict(self, jobs_q, errors, progress):
        pending, crops, finished, since = [], [], False, None
        while not finished:
            # Batches fill up to batch_size; a partial batch waits at most max_latency for more faces.
            wait = None if since is None else max(0.0, self.max_latency - (time.perf_counter() - since))
            try:
                item = jobs_q.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                finished = True
            elif item is not None:
                pending.append(item)
                since = since or time.perf_counter()
                if item[0] == "frame":
                    crops.extend(item[2][3])
            late = since is not None and time.perf_counter() - since >= self.max_latency
            if pending and (finished or late or len(crops) >= self.batch_size):
                yield from self._flush(pending, crops)
                pending, crops, since = [], [], None
                if progress is not None:
                    progress(self.counts["frames"], self.counts["faces"])
        if errors:
            raise errors[0]

    def _flush(self, pending, crops):
        outputs = None
        if crops:
            start = time.perf_counter()
            outputs = {}
            for lo in range(0, len(crops), self.batch_size):
                batch = np.stack(crops[lo:lo + self.batch_size]).astype(np.float32)
                pred = self.forward(batch)
                for key in TASKS:
                    outputs.setdefault(key, []).append(pred[key])
            outputs = {key: np.concatenate(parts) for key, parts in outputs.items()}
            self.timings["predict"] += time.perf_counter() - start
        k = 0
        for kind, source, payload in pending:
            if kind != "frame":
                yield kind, source, payload
                continue
            frame, faces, ids, _ = payload
            self.counts["frames"] += 1
            if not faces:
                self.counts["frames_without_face"] += 1
                yield "records", source, [records.empty_record(frame, self.decisions)]
                continue
            rows = []
            for face, face_id in zip(faces, ids):
                rows.append(records.face_record(frame, face_id, face.box, face.score, outputs["va"][k],
                                                outputs["au"][k], outputs["expr"][k], self.decisions))
                k += 1
            self.counts["faces"] += len(faces)
            yield "records", source, rows


class _TrackState:
    """Per-source detector-thread state: face ids, and the last frame's faces for optical-flow tracking."""

    def __init__(self):
        self.tracker = tracking.IoUTracker()
        self.gray, self.faces, self.since_detection = None, [], 0


def _without_pixels(frame):
    """``frame`` without its image: what the records need (name, index, time, scale) once the crops are cut, so
    the frames waiting for the model hold no full-size pixels."""
    return dataclasses.replace(frame, image=None)


def _nbytes(item):
    """The pixel bytes a queue item holds (a decoded frame's image; 0 for other items)."""
    if item is _STOP or item[0] != "frame":
        return 0
    image = getattr(item[2], "image", None)
    return int(image.nbytes) if image is not None else 0


class _BytesQueue:
    """A FIFO queue bounded by item count and by the bytes its items hold (``_nbytes``); an item larger than the
    whole budget passes when the queue is empty. The subset of ``queue.Queue`` the pipeline uses."""

    def __init__(self, maxsize, maxbytes):
        self.maxsize, self.maxbytes = maxsize, maxbytes
        self._items, self._bytes = collections.deque(), 0
        self._changed = threading.Condition()

    def put(self, item, timeout=None):
        size = _nbytes(item)
        with self._changed:
            fits = lambda: not self._items or (len(self._items) < self.maxsize  # noqa: E731
                                               and self._bytes + size <= self.maxbytes)
            if not self._changed.wait_for(fits, timeout):
                raise queue.Full
            self._items.append((item, size))
            self._bytes += size
            self._changed.notify_all()

    def get(self, timeout=None):
        with self._changed:
            if not self._changed.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            return self._pop()

    def get_nowait(self):
        with self._changed:
            if not self._items:
                raise queue.Empty
            return self._pop()

    def _pop(self):
        item, size = self._items.popleft()
        self._bytes -= size
        self._changed.notify_all()
        return item


def _one_line(error, limit=300):
    """An exception as one short line (OpenCV's messages span several)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _get(q, stop):
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _STOP


def _put(q, item, stop):
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _drain(q):
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass

