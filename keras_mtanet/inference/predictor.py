"""``Predictor``: MTANet on real images and video.

Decoding, detection and prediction run as a three-stage pipeline (``inference.pipeline``): a reader thread
decodes frames, a detector thread finds, tracks and aligns faces, and the calling thread runs the model on
batches of aligned crops through the chosen runtime (``inference.runtimes``). Records come out in frame order.
"""

import collections
import dataclasses
import os
import warnings

import numpy as np

from keras_mtanet.errors import DataError, UsageError
from keras_mtanet.inference import alignment, export_cache, runtimes
from keras_mtanet.inference.detection import DEFAULT_DETECTOR, DETECTORS, make_detector
from keras_mtanet.inference.records import (
    AU_PROB_COLUMNS,
    DEFAULT_DECISIONS,
    EXPR_PROB_COLUMNS,
    RecordWriter,
    as_table,
    set_predictions,
)
from keras_mtanet.inference.smoothing import smooth_series, smoothing_window
from keras_mtanet.inference.sources import Source, expand_inputs, webcam_source
from keras_mtanet.inference.stages import Stages
from keras_mtanet.presets.decisions import Decisions

DEFAULT_FPS = 30.0  # for a smoothing window in seconds on a video whose header gives no frame rate


@dataclasses.dataclass
class FilesReport:
    """What ``Predictor.predict_files`` did with its inputs.

    ``inputs``: the sources read (after folders and globs were expanded). ``missing``: inputs that named no
    image, video, folder, glob match or webcam (their messages come first). ``unreadable``: sources that could
    not be read, or whose face detection failed (the rest of that source skipped). ``truncated``: videos that
    ended before the frame count in their header. ``failed``: sources that are either. ``messages``: one line
    per failure, in order. ``frames``: decoded frames predicted; ``faces``: face records; ``frames_without_face``;
    ``corrupt_frames``: video frames that could not be decoded (skipped); ``rows``: records handed to the output.
    """
    inputs: int = 0
    missing: int = 0
    unreadable: int = 0
    truncated: int = 0
    failed: int = 0
    messages: list = dataclasses.field(default_factory=list)
    frames: int = 0
    faces: int = 0
    frames_without_face: int = 0
    corrupt_frames: int = 0
    rows: int = 0


class Predictor:
    """Valence/arousal, AU and expression predictions for every face in images and videos.

    Args:
        model: an ``MTANet``, a preset name / ``hf://`` address / folder for ``load_pretrained``, or None for
            the embedded default preset.
        detector: a name in ``detection.DETECTORS`` (default ``detection.DEFAULT_DETECTOR``), None to treat
            each whole image as an aligned face crop (Aff-Wild2's ``cropped_aligned``), or an object with
            ``detect(images) -> [[Face, ...], ...]``.
        batch_size: the most face crops per model call.
        detect_every: run the detector on every N-th frame of a video and track faces by optical flow in
            between.
        min_face_size: smallest face side, in pixels, to report.
        template: five-point alignment template in unit coordinates (default: the preset's
            ``alignment_template`` metadata, else ``alignment.TEMPLATE``).
        max_latency: seconds a partial batch of crops waits for more faces before the model runs on it
            (bounds the delay for webcams and slow detectors).
        precision: one of ``runtimes.PRECISIONS[runtime]``: ``"float32"``; ``"bfloat16"`` (about twice as fast
            on CPUs with AMX / AVX-512 BF16); ``"int8"`` (TFLite). Check reduced precision on your data, see
            ``benchmarks/reduced_precision.py``.
        runtime: what runs the model, one of ``runtimes.RUNTIMES``: ``"keras"``, or an exported form run by
            OpenVINO, TFLite or ONNX Runtime (same outputs to 1e-4 in float32; see ``runtimes``). Default
            (``None``): ``$KERAS_MTANET_RUNTIME``, else the fastest installed (``runtimes.default_runtime``:
            OpenVINO where ``keras-mtanet[openvino]`` is installed, else Keras).
        cache_dir: folder keeping the exported forms between runs (default: ``export_cache.default_cache_dir()``
            for the default runtime, a temporary folder for a named one).
        expression_prior: ``"balanced"`` (the preset's training prior divided out of the expression posteriors
            before the decision) or ``"training"`` (the posteriors' argmax); default: the preset's own choice
            (``keras_mtanet.presets.decisions``). The probability columns are the model's either way.
        au_threshold: one probability for every AU decision (0.5: the ABAW rule); default: the preset's
            per-AU thresholds.

    Example:
        >>> predictor = keras_mtanet.Predictor()          # embedded preset, default detector, Keras
        >>> table = predictor.predict_image("photo.jpg")  # DataFrame if pandas is installed
        >>> table[["face_id", "valence", "arousal", "expression"]]
    """

    def __init__(self, model=None, detector=DEFAULT_DETECTOR, batch_size=32, detect_every=1, min_face_size=40,
                 template=None, max_latency=0.5, precision="float32", runtime=None, cache_dir=None,
                 expression_prior=None, au_threshold=None):
        _at_least_one(batch_size=batch_size, detect_every=detect_every)
        if isinstance(detector, str) and detector not in DETECTORS:
            raise UsageError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        if model is None or isinstance(model, str):
            from keras_mtanet.model.task import load_pretrained  # Keras loads here, not on import

            model = load_pretrained(model)
        self.model = model
        meta = getattr(model, "metadata", None) or {}
        self.decisions = Decisions.from_metadata(meta, expression_prior, au_threshold)
        if runtime is None:  # the fastest installed one, its exports kept between runs
            runtime = runtimes.default_runtime(precision)
            if cache_dir is None and runtime != "keras":
                cache_dir = export_cache.usable_default_cache()
        self.runtime = runtimes.load_runtime(model, runtime, precision, cache_dir=cache_dir)
        size = int(model.input_shape[1])
        if template is None:  # the converter's (a preset's template travels in it), else the metadata's
            converter = getattr(model, "preprocessor", None)
            template = (converter.template if converter is not None
                        else meta.get("alignment_template", alignment.TEMPLATE))
        if isinstance(detector, str):
            detector = make_detector(detector, min_face_size=min_face_size)
        self.stages = Stages(self.forward, detector, size, np.asarray(template, np.float64), max(1, int(batch_size)),
                             max(1, int(detect_every)), float(max_latency), self.decisions)

    timings = property(lambda self: self.stages.timings, doc="Busy seconds per stage: decode, detect, track, "
                                                            "align, predict (they overlap).")
    counts = property(lambda self: self.stages.counts, doc="Frames, faces, frames without a face, detector calls.")
    detector = property(lambda self: self.stages.detector,
                        lambda self, detector: setattr(self.stages, "detector", detector),
                        doc="The face detector (settable: another detector on the same model and runtime).")
    size = property(lambda self: self.stages.size, doc="The side of the aligned crops in pixels.")
    template = property(lambda self: self.stages.template)

    def stream(self, sources, stride=1, max_frames=None, progress=None, check=None):
        """``Stages.stream`` over ``sources``: ``("records" | "error" | "done", source, payload)`` events."""
        return self.stages.stream(sources, stride, max_frames, progress=progress, check=check)

    def forward(self, batch):
        """The model on a float32 (N, H, W, 3) batch of aligned RGB crops in [0, 255]: ``{"va", "au", "expr"}``
        numpy arrays. The one place the model runs, through the runtime chosen at construction."""
        return self.runtime(batch)

    # ----------------------------------------------------------------------------------------------- API
    def predict_image(self, image, name=None):
        """Records for one image: a path, or an H x W x 3 RGB array (0-255). Raises ``DataError`` if the file
        cannot be read. Returns a DataFrame when pandas is installed, else a list of dicts."""
        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            source = Source(os.fsdecode(image), "image", os.fsdecode(image))
        else:
            source = Source(name or "image", "array", image)
        return as_table(self.predict_source(source))

    def predict_video(self, path, stride=1, max_frames=None, smooth=None):
        """Records for every ``stride``-th frame of a video file (or a webcam index), optionally smoothed over
        ``smooth`` (seconds, or ``"15f"`` frames). Raises ``DataError`` if it cannot be read."""
        text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
        source = webcam_source(text) if text.isdigit() else Source(text, "video", text)
        return as_table(self.predict_source(source, stride, max_frames, smooth))

    def predict_source(self, source, stride=1, max_frames=None, smooth=None):
        """The list of records for one ``Source``, smoothed if asked; ``DataError`` if it cannot be read."""
        records = RecordList()
        self.predict_files([source], stride=stride, max_frames=max_frames, smooth=smooth, output=records)
        return list(records)

    def predict_files(self, inputs, stride=1, max_frames=None, smooth=None, *, output=None, on_error=None,
                      progress=None):
        """Predict every face in images, videos, folders, globs and webcams, streaming the records to ``output``.

        One record per face per frame, or one ``face_detected=0`` record for a frame without a face, in input
        and frame order. Only a smoothed video's records are held (until it ends); everything else goes to
        ``output`` as each model batch finishes, so memory stays flat over long videos and large folders.

        Args:
            inputs: paths, folders (searched recursively), globs, webcam indices (``"0"``) or ``Source`` objects.
            output: None to return the records as a table; a ``.csv`` / ``.json`` path (written under a temporary
                name and renamed into place when done, see ``output.RecordWriter``); or an object with
                ``write(records)`` such as an open ``RecordWriter``.
            stride: predict frames 0, ``stride``, 2 ``stride``, ... of each video (images are always read).
            max_frames: predict at most this many frames of each video or webcam.
            smooth: smooth each face's predictions over time within each video: seconds (``0.5``) or frames
                (``"15f"``); centred moving average, AU decisions and expression recomputed.
            on_error: None to raise ``DataError`` for the first input that cannot be read; or a callable taking
                a one-line message for each input that fails or is truncated, while the others go on.
            progress: ``progress(frames, faces)``, called with running totals after each model batch.

        Returns:
            With ``output=None``, the records as a DataFrame (pandas installed) or list of dicts; otherwise a
            ``FilesReport``. On Ctrl-C (``KeyboardInterrupt``) the records finished so far, a smoothed video's
            included, are handed to ``output`` before it propagates.
        """
        _at_least_one(stride=stride, max_frames=max_frames)
        if smooth:
            smoothing_window(smooth, DEFAULT_FPS)  # a malformed window fails before any work
        if output is None:
            rows = RecordList()
            self.predict_files(inputs, stride, max_frames, smooth, output=rows, on_error=on_error, progress=progress)
            return as_table(list(rows))
        if isinstance(output, (str, bytes, os.PathLike)):
            with RecordWriter(output) as writer:
                return self.predict_files(inputs, stride, max_frames, smooth, output=writer, on_error=on_error,
                                          progress=progress)
        sources, problems = _sources(inputs, on_error)
        report = FilesReport(inputs=len(sources), missing=len(problems), messages=list(problems))
        held, failed, unreadable = {}, set(), set()
        before = collections.Counter(self.counts)

        def put(records):
            output.write(records)
            report.rows += len(records)

        def fail(source, message, unread):
            if on_error is None and unread:
                raise DataError(message)
            if on_error is None:
                warnings.warn(message, stacklevel=3)
            else:
                on_error(message)
            report.messages.append(message)
            failed.add(id(source))
            if unread:
                unreadable.add(id(source))

        events = self.stream(sources, stride, max_frames, progress=progress,
                             check=(lambda source: _check_smoothing(source, smooth)) if smooth else None)
        try:
            for kind, source, payload in events:
                if kind == "records":
                    if smooth and source.kind in ("video", "webcam"):
                        held.setdefault(id(source), (source, []))[1].extend(payload)
                    else:
                        put(payload)
                elif kind == "error":
                    fail(source, payload, unread=True)
                elif kind == "done":
                    if id(source) in held:
                        source, records = held.pop(id(source))
                        put(smooth_records(records, smooth, source.fps, self.decisions))
                    if source.truncated_at is not None and id(source) not in unreadable:  # one line per input
                        fail(source, source.truncation_message(), unread=False)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: what was finished, the video in progress too, goes to the output.
            events.close()
            for source, records in held.values():
                put(smooth_records(records, smooth, source.fps, self.decisions))
            raise
        finally:
            events.close()
        counts = self.counts - before
        report.unreadable, report.failed = len(unreadable), len(failed)
        report.truncated = sum(s.truncated_at is not None for s in sources)
        report.frames, report.faces = counts["frames"], counts["faces"]
        report.frames_without_face = counts["frames_without_face"]
        report.corrupt_frames = sum(s.corrupt_frames for s in sources)
        return report


def _at_least_one(**values):
    """``UsageError`` naming the first argument that is not a whole number at least 1 (None passes), as the
    command line refuses ``--batch-size 0``."""
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{name} must be a whole number at least 1, got {value!r}")


class RecordList(list):
    """A list that takes records as an output does (``write``)."""

    def write(self, records):
        self.extend(records)


def _sources(inputs, on_error):
    """``(sources, problems)``: ``inputs`` as ``Source`` objects, in order, and a line for each input naming
    nothing, which raises ``DataError`` (``on_error`` None) or is reported through ``on_error``."""
    sources, messages = [], []
    for item in inputs:
        if isinstance(item, Source):
            sources.append(item)
            continue
        found, problems = expand_inputs([item])
        for problem in problems:
            if on_error is None:
                raise DataError(problem)
            on_error(problem)
        messages.extend(problems)
        sources.extend(found)
    return sources, messages


def _check_smoothing(source, smooth):
    """``DataError`` naming ``source`` when ``smooth`` is no window at its frame rate (0.5 s at 1 fps)."""
    if source.kind not in ("video", "webcam"):
        return
    try:
        smoothing_window(smooth, source.fps or DEFAULT_FPS)
    except DataError as error:
        raise DataError(f"{source.name}: {error} at its {source.fps or DEFAULT_FPS:g} fps") from None


def smooth_records(records, smooth, fps=None, decisions=DEFAULT_DECISIONS):
    """Records with each face's VA, AU and expression probabilities smoothed over time (centred moving
    average of ``smooth``: seconds, or ``"15f"`` frames), the AU decisions and expression recomputed by
    ``decisions``."""
    window = smoothing_window(smooth, fps or DEFAULT_FPS)
    if window <= 1:
        return records
    tracks = collections.defaultdict(list)
    for record in records:
        if record["face_detected"]:
            tracks[(record["source"], record["face_id"])].append(record)
    columns = ("valence", "arousal") + AU_PROB_COLUMNS + EXPR_PROB_COLUMNS
    n_va, n_au = 2, len(AU_PROB_COLUMNS)
    smoothed = {}
    for track in tracks.values():
        track.sort(key=lambda r: r["frame"])
        values = smooth_series(np.array([[r[c] for c in columns] for r in track], np.float64), window)
        for record, row in zip(track, values):
            new = dict(record)
            set_predictions(new, row[:n_va], row[n_va:n_va + n_au], row[n_va + n_au:], decisions)
            smoothed[id(record)] = new
    return [smoothed.get(id(r), r) for r in records]
