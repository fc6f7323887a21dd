"""Five-point face alignment to the model's square crop.

The template is the widely used 112 x 112 five-point layout (eyes, nose tip, mouth corners; as in ArcFace and
Aff-Wild2-style aligned crops), stored in unit coordinates so it scales to any crop size. The package's
synthetic faces are drawn with the same geometry, so the embedded preset sees aligned real faces the way it
saw its training crops.
"""

import cv2
import numpy as np

from keras_mtanet.model.image_converter import DEFAULT_TEMPLATE

# Image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner; unit coords.
# Defined once, with the image converter that owns it (a preset's converter may carry its own).
TEMPLATE = np.asarray(DEFAULT_TEMPLATE, np.float64)


def landmarks_from_keypoints(left_eye, right_eye, nose, mouth_centre, template=TEMPLATE):
    """The five template landmarks from four measured points (BlazeFace gives the mouth centre, not its
    corners): the corners are placed about the mouth centre along the eye line, as far apart relative to the
    eye distance as in ``template``. A similarity fit to these five points is then the fit to the four
    measured ones with the mouth centre counted twice, so the corners add no information of their own.

    Each argument is an (..., 2) array of pixel coordinates; returns (..., 5, 2).
    """
    template = np.asarray(template, np.float64)
    half_mouth = 0.5 * np.linalg.norm(template[4] - template[3]) / np.linalg.norm(template[1] - template[0])
    eye_line = np.asarray(right_eye, np.float64) - np.asarray(left_eye, np.float64)
    mouth_centre = np.asarray(mouth_centre, np.float64)
    return np.stack([left_eye, right_eye, nose, mouth_centre - half_mouth * eye_line,
                     mouth_centre + half_mouth * eye_line], axis=-2).astype(np.float64)


def similarity_transform(src, dst):
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` points onto ``dst``.

    Umeyama's closed form (IEEE PAMI 13(4), 1991) without reflections. Returns a 2 x 3 matrix for
    ``cv2.warpAffine``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    var = (src_c ** 2).sum() / len(src)
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(image, landmarks, size, template=TEMPLATE):
    """Warp ``image`` (H x W x 3 uint8) so the five ``landmarks`` land on ``template`` in a ``size`` crop.

    Pixels outside the image repeat the border, as a tight crop near the frame edge would look.
    """
    matrix = similarity_transform(landmarks, np.asarray(template) * size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_whole(image, size):
    """The whole image resized to ``size`` x ``size`` (area averaging when shrinking), for ``--no-detect``."""
    h, w = image.shape[:2]
    interpolation = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
