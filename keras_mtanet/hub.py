"""Pull presets from and publish them to the Hugging Face Hub, with pinned revisions and checksums.

Uses ``huggingface_hub`` directly (``hf_hub_download``, ``HfApi``); its settings apply: ``HF_TOKEN`` for
private repos, ``HF_HUB_OFFLINE=1`` to use only the cache, ``HF_HUB_CACHE`` / ``HF_HOME`` for the cache
location, ``HF_ENDPOINT`` for another Hub. Every Hub failure becomes a one-line ``PresetError``.
"""

import json
import re
import shutil
import tempfile
from pathlib import Path

from keras_mtanet import zoo
from keras_mtanet.zoo import PresetError

HF_SCHEME = "hf://"
_SHA = re.compile(r"[0-9a-f]{40}")


def parse_hf_uri(uri):
    """``"hf://org/repo@rev"`` -> ``("org/repo", "rev")`` (revision ``None`` when absent)."""
    rest = uri[len(HF_SCHEME):]
    repo_id, _, revision = rest.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PresetError(f"{uri!r}: expected hf://ORG/REPO or hf://ORG/REPO@REVISION")
    return repo_id, revision or None


def load_pretrained(name=None, revision=None, cache_dir=None, token=None, endpoint=None, compile=False):
    """Load a pretrained MTANet: a registry name, ``hf://org/repo[@revision]`` or a local preset folder.

    With no name, the embedded default preset (``zoo.DEFAULT_PRESET``, ``mtanet_se_resnet18_ferplus_112``: trained
    on the real faces of FER+; see its model card) loads from the installed package, with no network.

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
    name = zoo.DEFAULT_PRESET if name is None else str(name)
    presets = zoo.list_presets()
    if name in presets:
        entry = presets[name]
        if "error" in entry:
            raise PresetError(entry["error"])
        if entry.get("embedded"):
            if revision is not None:
                raise PresetError(f"preset {name!r} is embedded in the package and has no revisions")
            return zoo.load_preset_folder(entry["folder"], expected_files=entry.get("files"), compile=compile)
        folder = download(entry["repo_id"], revision or entry["revision"], entry["files"], cache_dir, token,
                          endpoint)
        expected = entry["files"] if revision is None or revision == entry["revision"] else None
        return zoo.load_preset_folder(folder, expected_files=expected, cache_root=folder.parents[1],
                                      compile=compile)
    if name.startswith(HF_SCHEME):
        repo_id, uri_revision = parse_hf_uri(name)
        folder = download(repo_id, revision or uri_revision or "main", None, cache_dir, token, endpoint)
        return zoo.load_preset_folder(folder, cache_root=folder.parents[1], compile=compile)
    path = Path(name).expanduser()
    if path.is_dir():
        return zoo.load_preset_folder(path, compile=compile)
    known = ", ".join(sorted(presets)) or "none"
    raise PresetError(f"{name!r} is not a preset name ({known}), an hf://ORG/REPO address or a preset folder")


def download(repo_id, revision, files=None, cache_dir=None, token=None, endpoint=None):
    """Download a preset's files at ``revision`` into the HF cache; returns the snapshot folder.

    Only the preset files are fetched. A failed download leaves no partial file in the cache.
    """
    import huggingface_hub
    from huggingface_hub import errors

    names = list(zoo.check_file_map(files, f"{repo_id}@{revision}")) if files else list(zoo.PRESET_FILES)
    where = f"{repo_id}@{revision}"
    folder = None
    try:
        for filename in names:
            path = huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                                   token=token, endpoint=endpoint)
            folder = Path(path).parent
    except errors.GatedRepoError:
        raise PresetError(f"{repo_id}: gated repo; accept its conditions on the Hub and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise PresetError(f"{repo_id}: no such repo on the Hub (check the name; private repos need HF_TOKEN)") \
            from None
    except errors.RevisionNotFoundError:
        raise PresetError(f"{where}: revision {revision!r} not found (use a commit sha, tag or branch that "
                          "exists)") from None
    except errors.RemoteEntryNotFoundError:
        raise PresetError(f"{where}: file {filename!r} is missing: not a keras_mtanet preset at this revision") \
            from None
    except errors.LocalEntryNotFoundError:
        _remove_partial_downloads(repo_id, cache_dir)
        raise PresetError(f"{where}: {filename} is not in the cache and the Hub cannot be reached (offline mode "
                          "or no network); connect once, or load a local preset folder") from None
    except Exception as error:  # other HTTP errors, connection and transport errors, a full disk...
        _remove_partial_downloads(repo_id, cache_dir)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PresetError(f"{where}: download of {filename} failed ({message}); nothing partial was kept, "
                          "try again") from None
    return folder


def _remove_partial_downloads(repo_id, cache_dir):
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "blobs"
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
            and the model card text (default: generated from the metadata).
    """
    from huggingface_hub import HfApi, errors

    if isinstance(model_or_dir, (str, Path)):
        folder, cleanup = Path(model_or_dir), None
        if not folder.is_dir():
            raise PresetError(f"{folder}: no such preset folder")
    else:
        if not training_data:
            raise PresetError("publish: say what the model was trained on (training_data=...)")
        cleanup = tempfile.mkdtemp(prefix="keras_mtanet_publish_")
        folder = Path(cleanup) / "preset"
        meta = zoo.preset_metadata(model_or_dir, training_data, metrics, name=repo_id)
        zoo.save_preset(model_or_dir, folder, meta, model_card or model_card_text(meta, repo_id))
    try:
        zoo.load_preset_folder(folder)  # validates checksums, config and weights
        api = HfApi(endpoint=endpoint, token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=branch,
                                     allow_patterns=list(zoo.PRESET_FILES),
                                     commit_message=commit_message or f"Upload keras_mtanet preset {repo_id}")
            if tag:
                api.create_tag(repo_id, tag=tag, revision=info.oid)
        except (errors.HfHubHTTPError, ValueError) as error:  # ValueError: the Hub rejected the model card
            raise PresetError(f"publish to {repo_id} failed: {str(error).splitlines()[0]}") from None
        except Exception as error:  # connection refused, DNS, TLS, timeouts...
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PresetError(f"publish to {repo_id} failed: the Hub could not be reached ({message[:200]})") \
                from None
        return info.oid
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)


def registry_entry(folder, repo_id, revision, description):
    """A registry ``preset.json`` entry pinning ``repo_id`` at commit ``revision`` with the folder's hashes."""
    if not _SHA.fullmatch(revision):
        raise PresetError(f"pin registry entries to a full commit sha, not {revision!r}")
    folder = Path(folder)
    meta = zoo.read_metadata(folder)
    files = {name: zoo.sha256_file(folder / name) for name in zoo.PRESET_FILES}
    return {"description": description, "repo_id": repo_id, "revision": revision, "files": files,
            "training_data": meta.get("training_data"), "metrics": meta.get("metrics", {}),
            "backbone": meta.get("backbone"), "input_size": meta.get("input_size")}


def model_card_text(meta, title, intended_use=None, limitations=None):
    """A model card (README.md with Hub YAML front matter) from preset metadata."""
    metrics = meta.get("metrics") or {}
    front = ["---", "library_name: keras", "license: apache-2.0", "pipeline_tag: image-classification",
             "tags:", "  - keras", "  - keras-mtanet", "  - facial-affect", "  - action-units",
             "  - valence-arousal", "  - facial-expression-recognition"]
    datasets = meta.get("datasets") or []
    if datasets:
        front += ["datasets:"] + [f"  - {d}" for d in datasets]
    if metrics:
        front += ["metrics:", "  - ccc", "  - f1", "  - accuracy"]
    front.append("---")
    lines = front + ["", f"# {title}", "", meta.get("description") or "A keras_mtanet MTANet preset.", "",
                     "## Model", "",
                     f"MTANet (Zhang & Gu, arXiv:2002.00606) with a {meta.get('backbone')} backbone, input "
                     f"{meta['input_size'][0]}x{meta['input_size'][1]} RGB in [0, 255]; outputs valence/arousal "
                     f"({', '.join(meta['va_names'])}), {len(meta['au_names'])} AU probabilities "
                     f"({', '.join(meta['au_names'])}) and {len(meta['expression_names'])} expression "
                     f"probabilities ({', '.join(meta['expression_names'])}). {meta.get('parameters', 0):,} "
                     "parameters.", "",
                     "## Trained on", "", str(meta.get("training_data")), "",
                     "## Intended use", "", intended_use or "Research on facial affect estimation.", "",
                     "## Limitations", "", limitations or "Not validated for decisions about people.", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Use", "", "```python", "import keras_mtanet", "",
              f"model = keras_mtanet.load_pretrained({title!r})", "```", ""]
    return "\n".join(lines)


def dump_entry(entry):
    return json.dumps(entry, indent=2) + "\n"
