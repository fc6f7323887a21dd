"""The package's one error hierarchy. Every error a user can cause is an ``MTANetError``: the CLI prints its
message on one line (no traceback) and exits with status 2.

- ``UsageError``: a command line, argument or training config asks for something impossible.
- ``DataError``: a data set, annotation, image or video is missing or malformed; names the file (and line).
- ``PresetError``: a preset cannot be found, fetched, verified or loaded.
- ``DependencyError``: an optional package a feature needs is not installed; says which and how to get it.

Each keeps the built-in base it had before this module existed (``ValueError``, ``Exception``,
``RuntimeError``), so existing ``except ValueError`` code still catches what it caught.
"""


class MTANetError(Exception):
    """Base of every error a user of keras_mtanet can cause and fix."""


class UsageError(MTANetError, ValueError):
    """A command line, argument or configuration asks for something impossible; the message says what."""


class DataError(MTANetError, ValueError):
    """A data set problem a user must fix; the message names the file (and line) at fault."""


class PresetError(MTANetError):
    """A preset cannot be found, fetched, verified or loaded; the message says what to do."""


class DependencyError(MTANetError, RuntimeError):
    """An optional package a feature needs is not installed; the message says which and how to get it."""


def first_line(error, limit=200):
    """The first line of ``str(error)`` (or its type's name), cut to ``limit`` characters: for messages that
    quote another library's error inside one line of ours."""
    text = str(error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."
