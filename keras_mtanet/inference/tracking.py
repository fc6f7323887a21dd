"""Face identities across frames, and cheap tracking between detections.

``IoUTracker`` gives each face an id that persists while its box keeps overlapping the box it had in the
last frames (greedy matching by intersection over union). ``propagate`` moves faces from one frame to the
next with pyramidal Lucas-Kanade optical flow on their landmarks, so the detector can run only every N
frames.
"""

import cv2
import numpy as np

from keras_mtanet.inference.detection import Face


def iou(a, b):
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class IoUTracker:
    """Greedy IoU matching of each frame's faces to the live tracks.

    Args:
        min_iou: the least overlap that continues a track.
        max_missed: frames a track may go unmatched before its id is retired.
    """

    def __init__(self, min_iou=0.3, max_missed=15):
        self.min_iou = float(min_iou)
        self.max_missed = int(max_missed)
        self._tracks = {}  # id -> [box, frames missed]
        self._next_id = 0

    def update(self, faces):
        """Ids for ``faces`` (a list of ``Face``), in the same order."""
        pairs = sorted(((iou(track[0], face.box), tid, j) for tid, track in self._tracks.items()
                        for j, face in enumerate(faces)), reverse=True)
        ids = [None] * len(faces)
        used = set()
        for overlap, tid, j in pairs:
            if overlap < self.min_iou:
                break
            if tid in used or ids[j] is not None:
                continue
            ids[j] = tid
            used.add(tid)
        for j, face in enumerate(faces):
            if ids[j] is None:
                ids[j] = self._next_id
                self._next_id += 1
            self._tracks[ids[j]] = [np.asarray(face.box, np.float64), 0]
        for tid in list(self._tracks):
            if tid not in ids:
                self._tracks[tid][1] += 1
                if self._tracks[tid][1] > self.max_missed:
                    del self._tracks[tid]
        return ids


def propagate(previous_gray, gray, faces):
    """``faces`` of the previous frame moved to this one by optical flow on their landmarks.

    Each box shifts by the median landmark motion; a face whose points are lost keeps its place. Scores
    carry over from the detection.
    """
    if not faces:
        return []
    points = np.concatenate([face.landmarks for face in faces]).astype(np.float32).reshape(-1, 1, 2)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous_gray, gray, points, None, winSize=(21, 21), maxLevel=3)
    moved, status = moved.reshape(-1, 5, 2), status.reshape(-1, 5).astype(bool)
    out = []
    for face, new, ok in zip(faces, moved, status):
        if ok.sum() < 3:
            out.append(face)
            continue
        shift = np.median(new[ok] - face.landmarks[ok], axis=0)
        landmarks = np.where(ok[:, None], new, face.landmarks + shift)
        box = np.asarray(face.box, np.float64).copy()
        box[:2] += shift
        out.append(Face(box, face.score, landmarks.astype(np.float64), face.measured_landmarks))
    return out
