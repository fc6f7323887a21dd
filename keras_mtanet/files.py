"""Small-file helpers shared by the package: hashing, writes that are never seen half done, bounded JSON reads,
file names made printable and the one-line message for a failed write.

A write goes to a fresh temporary name in the destination's own folder, ``.{name}.{random}.tmp`` (created with
``O_EXCL``, so never into or through anything already there), is flushed to disk and then renamed over the
destination, so a reader (or a process killed part-way) sees the old file or the new one, never a mix
(``AtomicFile``, with its one rule for a link at the destination). The leading dot and ``.tmp`` suffix mark
leftovers of a kill; run folders ignore them (``keras_mtanet.training.run_folder``).
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
    are recognisable by the leading dot and the ``.tmp`` suffix, which ``run_folder.prepare_run_folder`` ignores)."""
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


def link_target(path):
    """Where writing the user's ``path`` lands: a symbolic link's target, so renaming onto it keeps the link."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def is_special(target):
    """Whether ``target`` exists and is not a regular file (a device or a named pipe): written in place."""
    return target.exists() and not target.is_file()


def create_temporary(target):
    """A new file beside ``target`` (``temporary_name``, ``O_EXCL``: never into or through anything already there):
    ``(descriptor, path)``; mode 0666 less the umask. ``FileExistsError`` if eight fresh names are all taken."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for attempt in range(8):
        temp = temporary_name(target)
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            if attempt == 7:
                raise


class AtomicFile:
    """The package's one atomic writer: a file written under a fresh temporary name beside ``path`` and renamed
    onto it by ``commit`` (flushed and fsynced first; an existing file keeps its permissions); ``discard``
    removes it and leaves ``path`` as it was. As a context manager it commits on success and discards on an
    exception. Text modes default to UTF-8.

    One rule for a link at ``path``: what the user named (``user_file=True``: ``--output``, ``--plot``, teach's
    labels) is written where it leads, through a symbolic link the user made, which stays, and straight into a
    device or named pipe; a name the package chose (a preset's, a run folder's or a cache's own files) is never
    written through: a link planted there is replaced by the new file.

    Args:
        path: the destination.
        mode: ``open`` mode (``"w"``, ``"wb"``...).
        user_file: ``path`` was named by the user (see above).
        error: the error class a failed write becomes, one line naming ``path`` (``None``: the ``OSError``
            itself, for callers that word it).
    """

    def __init__(self, path, mode="w", user_file=False, error=DataError, **open_args):
        self.path = Path(path)
        self.target = link_target(self.path) if user_file else self.path
        self.error, self.temp, self.done = error, None, False
        if "b" not in mode:
            open_args.setdefault("encoding", "utf-8")
        try:
            if user_file and is_special(self.target):
                self.file = open(self.target, mode, **open_args)
            else:
                fd, self.temp = create_temporary(self.target)
                self.file = os.fdopen(fd, mode, **open_args)
        except OSError as failure:
            self._raise(failure)

    def _raise(self, failure):
        if self.error is None:
            raise failure
        raise write_error(self.path, failure, self.error) from None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as failure:
            self._raise(failure)

    def flush(self):
        try:
            self.file.flush()
        except OSError as failure:
            self._raise(failure)

    def commit(self):
        """Finish the file and rename it onto ``path``."""
        if self.done:
            return
        try:
            self.file.flush()
            if self.temp is not None:
                os.fsync(self.file.fileno())
            self.file.close()
            if self.temp is not None:
                if self.target.is_file() and not self.target.is_symlink():
                    shutil.copymode(self.target, self.temp)
                os.replace(self.temp, self.target)
                _fsync_folder(self.target.parent)
        except OSError as failure:
            self.discard()
            self._raise(failure)
        self.done = True

    def discard(self):
        """Remove the temporary file; ``path`` is left as it was."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            self.file.close()
        if self.temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path, data):
    """Write ``data`` (``str``, written as UTF-8, or ``bytes``) to the package-chosen ``path`` with ``AtomicFile``
    (a link there is replaced); ``OSError`` as raised. Returns ``path`` as a ``Path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with AtomicFile(path, "wb", error=None) as f:
        f.write(payload)
    return Path(path)


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


def write_json(path, value):
    """Write ``value`` as JSON (``dump_json``) through a temporary file beside ``path``, renamed into place."""
    write_atomic(path, dump_json(value))
