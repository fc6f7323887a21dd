"""Cheap integrity checks of the files the data readers read: images, and label files that must be regular."""

import os
from pathlib import Path

from keras_mtanet.errors import DataError
from keras_mtanet.files import printable, require_regular_file, special_kind

JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
PNG_SIGNATURE, PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND"


def check_image_file(path):
    """Return ``None`` for a complete JPEG or PNG file, else a short reason (empty, truncated, not an image, a
    FIFO or device, which is never opened).

    Reads only the first and last bytes: a JPEG must start with SOI and end with EOI (padding allowed), a PNG
    must end with its IEND chunk. Decoding errors this cannot see are still dropped by the input pipeline.
    """
    kind = special_kind(path)
    if kind:
        return f"not a regular file ({kind})"
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if head.startswith(JPEG_SOI):
        return None if JPEG_EOI in tail else "truncated JPEG (no end marker)"
    if head.startswith(PNG_SIGNATURE):
        return None if PNG_IEND in tail else "truncated PNG (no IEND chunk)"
    return "not a JPEG or PNG image"


def screen_image(path, present, check_images, stats, skipped, kind):
    """Whether an annotated image can be used; if not, count it and record why.

    A missing file is counted in ``stats[f"missing_{kind}"]``, a file failing ``check_image_file`` (when
    ``check_images``) in ``stats[f"corrupt_{kind}"]``; ``skipped`` gets ``(path, reason)``.
    """
    if not present:
        stats[f"missing_{kind}"] += 1
        skipped.append((str(path), f"no {kind[:-1]}"))
        return False
    special = None if check_images else special_kind(path)  # a FIFO would block the input pipeline
    problem = check_image_file(path) if check_images else special and f"not a regular file ({special})"
    if problem:
        stats[f"corrupt_{kind}"] += 1
        skipped.append((str(path), problem))
        return False
    return True


def require_file(path, what):
    """``DataError`` unless ``path`` is a regular file: a FIFO or device is refused unopened
    (``files.require_regular_file``), a missing file is ``PATH: WHAT not found``."""
    require_regular_file(path, what)
    if not Path(path).is_file():
        raise DataError(f"{printable(path)}: {what} not found")
