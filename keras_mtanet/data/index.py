"""``FrameIndex``: the images of a data set split and their labels, before any pixel is decoded."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class FrameIndex:
    """Image paths with merged labels, plus what was skipped while indexing.

    Attributes:
        paths: image paths (str), one per frame.
        videos: the video (Aff-Wild2) or sub-directory (AffectNet) of each frame.
        frames: the 1-based frame number of each frame (AffectNet: the CSV line).
        va: (N, 2) float32, -5 unannotated; au: (N, 8) float32, -1 unannotated; expr: (N,) int32, -1.
        stats: counts of what was read and skipped.
        skipped: ``[(path, reason)]`` for every annotated frame that was left out.
        boxes: optional (N, 4) int32 face boxes (x, y, width, height) to crop before resizing.
        expr_soft: optional (N, 7) float32 expression distributions (FER+ crowd votes) to train on; ``expr``
            then holds the majority class, which the metrics score. An all-zero row is unannotated.
        votes: optional (N, 10) int64 raw FER+ vote counts (``ferplus.VOTE_NAMES`` order), for the teachers.
    """
    paths: list
    videos: list
    frames: np.ndarray
    va: np.ndarray
    au: np.ndarray
    expr: np.ndarray
    stats: dict
    skipped: list
    boxes: np.ndarray = None
    expr_soft: np.ndarray = None
    votes: np.ndarray = None

    def __len__(self):
        return len(self.paths)

    def labels(self):
        """The labels the metrics score: VA, AUs and expression class ids."""
        return {"va": self.va, "au": self.au, "expr": self.expr}

    def targets(self):
        """The training targets: ``labels()``, with the expression distributions in place of the ids if any."""
        out = self.labels()
        if self.expr_soft is not None:
            out["expr"] = self.expr_soft
        return out


def in_split(key, split, held_out, validation):
    """Whether the image ``key`` belongs to ``split`` of a set with a held-out list: ``"all"``; ``"test"``, exactly
    the ``held_out`` keys; ``"valid"``, the others for which ``validation(key)`` holds; ``"train"``, the rest."""
    if split == "all":
        return True
    if split == "test" or key in held_out:
        return split == "test" and key in held_out
    return bool(validation(key)) == (split == "valid")
