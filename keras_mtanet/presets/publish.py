"""Publish a model or a preset folder to a Hugging Face Hub repo in one commit, after checking it."""

import shutil
import tempfile
from pathlib import Path

from keras_mtanet.errors import PresetError, first_line
from keras_mtanet.presets import card, checks, hub, registry
from keras_mtanet.presets import folder as preset_folder


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
            and the model card (default: ``card.make_model_card`` from the metadata).
    """
    from huggingface_hub import HfApi, errors

    registry.check_repo_id(str(repo_id), f"publish to {repo_id!r}")
    if isinstance(model_or_dir, (str, Path)):
        folder, cleanup = Path(model_or_dir), None
        if not folder.is_dir():
            raise PresetError(f"{folder}: no such preset folder")
    else:
        if not training_data:
            raise PresetError("publish: say what the model was trained on (training_data=...)")
        cleanup = tempfile.mkdtemp(prefix="keras_mtanet_publish_")
        folder = Path(cleanup) / "preset"
        meta = preset_folder.preset_metadata(model_or_dir, training_data, metrics, name=repo_id)
        text = model_card or card.make_model_card(meta, repo_id, spec=f"{registry.HF_SCHEME}{repo_id}")
        preset_folder.save_preset(model_or_dir, folder, meta, text)
    try:
        meta = preset_folder.load_preset_folder(folder).metadata  # validates checksums, config and weights
        api = HfApi(endpoint=endpoint, token=token)
        hub.bound_timeouts()
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if tag:
                hub.check_new_tag(api, repo_id, tag)
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=branch,
                                     allow_patterns=[checks.METADATA_FILE, *meta["files"]],
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
