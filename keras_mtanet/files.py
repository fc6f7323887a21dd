"""Small-file helpers shared by the package: hashing, writes that are never seen half done, bounded JSON reads,
file names made printable and the one-line message for a failed write.

A write goes to a fresh temporary name in the destination's own folder, ``.{name}.{random}.tmp`` (created with
``O_EXCL``, so never into or through anything already there), is flushed to disk and then renamed over the
destination, so a reader (or a process killed part-way) sees the old file or the new one, never a mix. A link
planted at the destination is replaced, not followed. The leading dot and ``.tmp`` suffix mark leftovers of a
kill; run folders ignore them (``runs.prepare_run_folder``).
"""

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from keras_mtanet.errors import DataError, MTANetError, UsageError

MAX_JSON_BYTES = 1 << 20  # configs, metadata and registry entries are small: larger ones are refused unread


def printable(text):
    """``text`` with the undecodable bytes of a file name (lone surrogates, as ``os.fsdecode`` gives them) as
    ``\\xNN`` escapes and control characters (terminal escapes, bells, line breaks) as ``\\x1b``, ``\\n``...,
    so it can be written as UTF-8 and printed anywhere, on one line, without acting on the terminal."""
    text = str(text)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def shortened(name, keep=60, limit=80):
    """``name`` cut to its first ``keep`` characters and "..." when it is over ``limit`` long (a name too long
    for the file system, named in a one-line error)."""
    return name[:keep] + "..." if len(name) > limit else name


def special_kind(path):
    """What ``path`` is when it is neither a regular file nor a folder ("a FIFO", "a character device", "a block
    device", "a socket"), else None (also when it does not exist: the open that follows says so)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")


def require_regular_file(path, what, error=DataError):
    """Refuse a FIFO, device or socket given as a file to read (a config, annotation or label file, an image)
    before it is opened: reading one blocks forever or never ends. Raises ``error``:
    ``PATH: WHAT is not a regular file (a FIFO)``. A missing path or a folder passes, for the caller's open to
    report."""
    kind = special_kind(path)
    if kind:
        raise error(f"{printable(path)}: {what} is not a regular file ({kind})")


def error_reason(error):
    """What went wrong, for a one-line message: an ``OSError``'s ``strerror`` ("No space left on device")."""
    return error.strerror or str(error) if isinstance(error, OSError) else str(error)


# Why a write fails for want of room or of a writable disk, whatever file it was: the disk's problem, not the file's.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def disk_failure(error):
    """The reason ("No space left on device") when ``error`` is a write that failed for a full or read-only disk:
    an ``OSError`` with one of ``DISK_ERRNOS``, or another library's error (h5py, TensorFlow) quoting the
    system's message for one; ``None`` for anything else."""
    if isinstance(error, MTANetError):  # already one line of ours
        return None
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return error.strerror or os.strerror(error.errno)
    text = str(error)
    return next((os.strerror(code) for code in DISK_ERRNOS if os.strerror(code) in text), None)


def write_error(path, error, kind=DataError):
    """The one-line error (``kind``, ``DataError`` by default) for ``error`` met while writing ``path``:
    ``PATH: cannot write (reason)``. Raise it ``from None``: the message says all a user needs."""
    return kind(f"{printable(path)}: cannot write ({error_reason(error)})")


def read_error(path, error, kind=DataError):
    """``write_error``'s twin for reading: ``PATH: unreadable (reason)``."""
    return kind(f"{printable(path)}: unreadable ({error_reason(error)})")


def check_not_an_input(path, inputs, option):
    """``UsageError`` when ``path`` (an output about to be written) is one of the existing files ``inputs``
    (``os.path.samefile``: through links and other spellings of the same file): it would replace the input."""
    for given in inputs:
        try:
            same = os.path.samefile(path, given)
        except (OSError, ValueError):  # either one missing
            continue
        if same:
            raise UsageError(f"{printable(path)}: {option} is the input {printable(given)}; writing it would "
                             "replace that file (choose another name)")


def sha256_file(path, chunk=1 << 20):
    """The sha256 hex digest of a file, read in ``chunk``-byte blocks (weights files need not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# The names temporary_name gives: .{name}.{8 hex digits}.tmp
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def temporary_name(path):
    """A fresh temporary name beside ``path``: ``.{name}.{random}.tmp`` (``TEMPORARY_NAME``; leftovers of a kill
    are recognisable by the leading dot and the ``.tmp`` suffix, which ``runs.prepare_run_folder`` ignores)."""
    path = Path(path)
    return path.with_name(f".{path.name[:80]}.{secrets.token_hex(4)}.tmp")  # [:80]: within the name limit


def _fsync_folder(folder):
    # The rename itself is durable only once the folder's entry is on disk; not every system allows this.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Write ``data`` (``str``, written as UTF-8, or ``bytes``) to ``path`` through a fresh temporary name:
    flushed, fsynced and renamed into place. Returns ``path`` as a ``Path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_writer(path, "wb") as f:
        f.write(payload)
    return Path(path)


@contextlib.contextmanager
def atomic_writer(path, mode="w", **open_args):
    """A file object writing to a fresh temporary name beside ``path`` (``O_EXCL``: never into or through a
    file already there), fsynced and renamed over ``path`` when the block ends without error, removed
    otherwise. For writers that stream (rows written as they come); text modes default to UTF-8. A plain file
    already at ``path`` keeps its permissions; a link there is replaced by the new file.

    Example:
        >>> with atomic_writer(folder / "labels.csv", newline="") as f:
        ...     csv.writer(f).writerows(rows)
    """
    path = Path(path)
    if "b" not in mode:
        open_args.setdefault("encoding", "utf-8")
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if path.is_file() and not path.is_symlink():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_output(path):
    """For writers that choose their own file handling (``model.save_weights`` wants a name ending in
    ``.weights.h5``): yields a temporary path with ``path``'s own name inside a new ``.{name}.{random}.tmp``
    folder beside it; when the block ends without error the file is renamed over ``path``, and the folder is removed
    either way.

    Example:
        >>> with atomic_output(folder / "model.weights.h5") as tmp:
        ...     model.save_weights(tmp)
    """
    path = Path(path)
    scratch = temporary_name(path)
    scratch.mkdir()  # a fresh name: fails rather than reuse anything already there
    try:
        target = scratch / path.name
        yield target
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(target, path)
        _fsync_folder(path.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_json(path, what, limit=MAX_JSON_BYTES, error=DataError):
    """A small JSON file, parsed, read no further than ``limit`` bytes.

    Args:
        path: the file.
        what: what the file is, for messages (``"model config"``).
        limit: largest size accepted; a larger file is refused without being read whole.
        error: the exception class raised (``DataError`` for data, ``PresetError`` for presets...).

    Raises:
        ``error``, one line starting with the file's path, when it is missing, unreadable, too large or not JSON.
    """
    path = Path(path)
    require_regular_file(path, what, error)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except OSError as failure:
        raise error(f"{path}: unreadable {what} ({failure.strerror or failure})") from None
    if len(data) > limit:
        raise error(f"{path}: {what} larger than {limit // 1024} KiB; refused")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as failure:  # RecursionError: deep nesting
        raise error(f"{path}: unreadable {what} ({failure})") from None


def dump_json(value):
    """``value`` as the package writes JSON files: indented two spaces, ending in a newline."""
    return json.dumps(value, indent=2) + "\n"
