"""Hub transfer: pull presets from and publish them to the Hugging Face Hub, at one pinned commit.

Uses ``huggingface_hub`` directly (``snapshot_download``, ``HfApi``); its settings apply: ``HF_TOKEN`` for
private repos, ``HF_HUB_OFFLINE=1`` to use only the cache, ``HF_HUB_CACHE`` / ``HF_HOME`` for the cache
location, ``HF_ENDPOINT`` for another Hub. Every Hub failure becomes a one-line ``PresetError``. What a preset
folder holds, the registry and the checks are ``keras_mtanet.presets``.

Every Hub request has connect and read timeouts: a Hub that accepts the connection and never answers fails
the call instead of hanging it. ``huggingface_hub`` sends some requests (repo info, tree listings) with none;
those get ``HF_HUB_DOWNLOAD_TIMEOUT`` seconds (its own download timeout, 10 by default; uploads and commits
at least ``MIN_UPLOAD_TIMEOUT``).
"""

import shutil
import tempfile
from pathlib import Path

from keras_mtanet import presets
from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.files import dump_json as dump_entry  # noqa: F401  (the CLI prints registry entries with it)
from keras_mtanet.presets import (  # noqa: F401  (old keras_mtanet.hub names)
    HF_SCHEME, model_card_text, parse_hf_uri, registry_entry)
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


def _bound_timeouts():
    """Add ``_default_timeouts`` to the shared HTTP client of ``huggingface_hub`` (once; it is made anew after
    a fork or a new client factory, so every Hub call checks)."""
    from huggingface_hub.utils import get_session

    hooks = get_session().event_hooks["request"]
    if _default_timeouts not in hooks:
        hooks.append(_default_timeouts)


def load_pretrained(name=None, revision=None, cache_dir=None, token=None, endpoint=None, compile=False):
    """Load a pretrained MTANet: a registry name, ``hf://org/repo[@revision]`` or a local preset folder.

    With no name, the embedded default preset (``presets.DEFAULT_PRESET``, ``mtanet_se_resnet18_ferplus_112``:
    trained on the real faces of FER+; see its model card) loads from the installed package, with no network.

    Registry presets download at their pinned commit and each file must match the registry's sha256; a
    file that does not is deleted from the cache and the error names it. ``hf://`` presets are checked
    against the sha256 list in their own ``metadata.json``.

    Args:
        name: preset name (see ``list_presets()``), ``hf://org/repo[@revision]``, or a folder path.
        revision: a commit sha, tag or branch; overrides the registry's pinned revision or an ``@revision``.
        cache_dir: Hugging Face cache folder (default: the usual HF cache).
        token: Hub token (default: ``HF_TOKEN`` / the saved login); never printed or stored.
        endpoint: Hub URL (default: ``HF_ENDPOINT`` or huggingface.co).
        compile: compile the model with ``MTANet.compile()`` defaults.

    Returns:
        An ``MTANet`` with the preset weights; ``model.metadata`` holds its ``metadata.json``.

    Example:
        >>> model = keras_mtanet.load_pretrained()
        >>> model.metadata["expression_names"][4]
        'Happiness'
    """
    return presets.load(name, compile=compile, revision=revision, cache_dir=cache_dir, token=token,
                        endpoint=endpoint)


def download(repo_id, revision, files=None, cache_dir=None, token=None, endpoint=None):
    """Download a preset's files at ``revision`` into the HF cache; returns the snapshot folder.

    ``snapshot_download`` resolves ``revision`` (a sha, tag or branch) to one commit and fetches every file at
    that commit, so a branch moving mid-download cannot mix two versions. Only the preset files are fetched:
    ``files`` (``{name: sha256}``, e.g. a registry entry's), or the preset format's file names. A failed
    download leaves no partial file in the cache.
    """
    from huggingface_hub import errors, snapshot_download

    where = f"{repo_id}@{revision}"
    _bound_timeouts()
    if files:
        names = required = list(presets.check_file_map(files, where))
    else:
        names, required = list(presets.PRESET_FILES + presets.OPTIONAL_FILES), list(presets.PRESET_FILES)
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


def _check_new_tag(api, repo_id, tag):
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


def publish(model_or_dir, repo_id, tag=None, private=None, token=None, endpoint=None, commit_message=None,
            training_data=None, metrics=None, model_card=None, branch="main"):
    """Publish a model or a preset folder to a Hub repo in one commit; returns the commit sha.

    The preset is written (for a model), reloaded and checked before anything is sent. The repo is created
    if missing; ``tag`` marks the commit. Pin the returned sha in a registry entry (``registry_entry``).

    Args:
        model_or_dir: an ``MTANet`` or a preset folder (e.g. a training run's output).
        repo_id: ``"org/name"``.
        tag: optional tag to create on the new commit.
        private: create the repo private.
        token: Hub token (default: ``HF_TOKEN`` / saved login); never printed or written to files.
        endpoint: Hub URL (default: ``HF_ENDPOINT`` or huggingface.co).
        training_data, metrics, model_card: for a model: what it was trained on (required), its metrics,
            and the model card (default: ``presets.make_model_card`` from the metadata).
    """
    from huggingface_hub import HfApi, errors

    presets.check_repo_id(str(repo_id), f"publish to {repo_id!r}")
    if isinstance(model_or_dir, (str, Path)):
        folder, cleanup = Path(model_or_dir), None
        if not folder.is_dir():
            raise PresetError(f"{folder}: no such preset folder")
    else:
        if not training_data:
            raise PresetError("publish: say what the model was trained on (training_data=...)")
        cleanup = tempfile.mkdtemp(prefix="keras_mtanet_publish_")
        folder = Path(cleanup) / "preset"
        meta = presets.preset_metadata(model_or_dir, training_data, metrics, name=repo_id)
        card = model_card or presets.make_model_card(meta, repo_id, spec=f"{HF_SCHEME}{repo_id}")
        presets.save_preset(model_or_dir, folder, meta, card)
    try:
        meta = presets.load_preset_folder(folder).metadata  # validates checksums, config and weights
        api = HfApi(endpoint=endpoint, token=token)
        _bound_timeouts()
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if tag:
                _check_new_tag(api, repo_id, tag)
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=branch,
                                     allow_patterns=[presets.METADATA_FILE, *meta["files"]],
                                     commit_message=commit_message or f"Upload keras_mtanet preset {repo_id}")
            if tag:
                try:
                    api.create_tag(repo_id, tag=tag, revision=info.oid)
                except errors.HfHubHTTPError as error:
                    if getattr(error.response, "status_code", None) != 409:
                        raise
                    raise PresetError(f"publish to {repo_id}: tag {tag!r} already exists (made meanwhile); the "
                                      f"preset is uploaded as commit {info.oid}, untagged") from None
        except PresetError:
            raise
        except (errors.HfHubHTTPError, ValueError) as error:  # ValueError: the Hub rejected the model card
            raise PresetError(f"publish to {repo_id} failed: {first_line(error)}") from None
        except Exception as error:  # connection refused, DNS, TLS, timeouts...
            raise PresetError(f"publish to {repo_id} failed: the Hub could not be reached ({first_line(error)})") \
                from None
        return info.oid
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
