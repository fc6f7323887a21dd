"""Hub transfer: download preset files from the Hugging Face Hub at one pinned commit (publishing is
``keras_mtanet.presets.publish``).

Uses ``huggingface_hub`` directly (``snapshot_download``, ``HfApi``); its settings apply: ``HF_TOKEN`` for
private repos, ``HF_HUB_OFFLINE=1`` to use only the cache, ``HF_HUB_CACHE`` / ``HF_HOME`` for the cache
location, ``HF_ENDPOINT`` for another Hub. Every Hub failure becomes a one-line ``PresetError``. What a preset
folder holds is ``keras_mtanet.presets.folder``, the registry ``keras_mtanet.presets.registry``.

Every Hub request has connect and read timeouts: a Hub that accepts the connection and never answers fails
the call instead of hanging it. ``huggingface_hub`` sends some requests (repo info, tree listings) with none;
those get ``HF_HUB_DOWNLOAD_TIMEOUT`` seconds (its own download timeout, 10 by default; uploads and commits
at least ``MIN_UPLOAD_TIMEOUT``).
"""

from pathlib import Path

from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.presets import checks
from keras_mtanet.version import __version__

MIN_UPLOAD_TIMEOUT = 60.0  # seconds a commit or upload may wait for the Hub's answer


def _default_timeouts(request):
    """httpx request hook: a timeout for each phase ``huggingface_hub`` left unbounded (None)."""
    from huggingface_hub import constants

    limit = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    if request.method not in ("GET", "HEAD"):
        limit = max(limit, MIN_UPLOAD_TIMEOUT)
    timeout = dict(request.extensions.get("timeout") or {})
    request.extensions["timeout"] = {phase: limit if timeout.get(phase) is None else timeout[phase]
                                     for phase in ("connect", "read", "write", "pool")}


def bound_timeouts():
    """Add ``_default_timeouts`` to the shared HTTP client of ``huggingface_hub`` (once; it is made anew after
    a fork or a new client factory, so every Hub call checks)."""
    from huggingface_hub.utils import get_session

    hooks = get_session().event_hooks["request"]
    if _default_timeouts not in hooks:
        hooks.append(_default_timeouts)


def download(repo_id, revision, files=None, cache_dir=None, token=None, endpoint=None):
    """Download a preset's files at ``revision`` into the HF cache; returns the snapshot folder.

    ``snapshot_download`` resolves ``revision`` (a sha, tag or branch) to one commit and fetches every file at
    that commit, so a branch moving mid-download cannot mix two versions. Only the preset files are fetched:
    ``files`` (``{name: sha256}``, e.g. a registry entry's), or the preset format's file names. A failed
    download leaves no partial file in the cache.
    """
    from huggingface_hub import errors, snapshot_download

    where = f"{repo_id}@{revision}"
    bound_timeouts()
    if files:
        names = required = list(checks.check_file_map(files, where))
    else:
        names, required = list(checks.PRESET_FILES + checks.OPTIONAL_FILES), list(checks.PRESET_FILES)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                        endpoint=endpoint, allow_patterns=names, library_name="keras-mtanet",
                                        library_version=__version__))
    except errors.GatedRepoError:
        raise PresetError(f"{repo_id}: gated repo; accept its conditions on the Hub and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise PresetError(f"{repo_id}: no such repo on the Hub (check the name; private repos need HF_TOKEN)") \
            from None
    except errors.RevisionNotFoundError:
        raise PresetError(f"{where}: revision {revision!r} not found (use a commit sha, tag or branch that "
                          "exists)") from None
    except errors.LocalEntryNotFoundError as error:  # offline, or the Hub unreachable, and not (all) cached
        _remove_partial_downloads(repo_id, cache_dir)
        state = "incomplete in the cache" if isinstance(error, errors.IncompleteSnapshotError) else \
            "not in the cache"
        raise PresetError(f"{where}: {state} and the Hub cannot be reached (offline mode or no network); "
                          "connect once, or load a local preset folder") from None
    except Exception as error:  # other HTTP errors, connection and transport errors, a full disk...
        _remove_partial_downloads(repo_id, cache_dir)
        failed = _not_downloaded(repo_id, revision, required, cache_dir) or \
            _not_downloaded(repo_id, revision, names, cache_dir) or ["the preset files"]
        raise PresetError(f"{where}: download of {', '.join(failed)} failed ({first_line(error)}); nothing "
                          "partial was kept, try again") from None
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise PresetError(f"{where}: file {missing[0]!r} is missing: not a keras_mtanet preset at this revision")
    return folder


def check_new_tag(api, repo_id, tag):
    """``PresetError`` before anything is uploaded when ``tag`` already names a revision of ``repo_id``."""
    from huggingface_hub import errors

    try:
        api.repo_info(repo_id, revision=tag)
    except errors.RevisionNotFoundError:
        return
    raise PresetError(f"publish to {repo_id}: tag {tag!r} already exists (or is a branch); choose another --tag; "
                      "nothing was uploaded")


def _repo_cache(repo_id, cache_dir):
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _not_downloaded(repo_id, revision, names, cache_dir):
    """The ``names`` absent from the snapshot of ``revision`` after a failed download (its commit is the
    revision itself or, for a branch or tag, what the cache's ``refs/`` recorded); [] when unknown."""
    repo = _repo_cache(repo_id, cache_dir)
    commit = revision
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    snapshot = repo / "snapshots" / commit
    return [name for name in names if not (snapshot / name).exists()] if snapshot.parent.is_dir() else []


def _remove_partial_downloads(repo_id, cache_dir):
    root = _repo_cache(repo_id, cache_dir) / "blobs"
    for partial in root.glob("*.incomplete") if root.is_dir() else ():
        partial.unlink(missing_ok=True)
