"""Publish and pull presets with the real huggingface_hub client against a Hub-protocol server on 127.0.0.1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_preset, refused_without_blocking, tiny_model

from keras_mtanet import PresetError, files, load_pretrained, publish
from keras_mtanet.cli import main
from keras_mtanet.presets import card, checks, hub
from keras_mtanet.presets import folder as preset_folder
from keras_mtanet.presets import registry as preset_registry

TOKEN = "hf_test_Secret_token_0123456789"


@pytest.fixture(scope="module")
def published(server, tmp_path_factory):
    """A tiny trained-looking model published once: (model, commit sha, repo id, reference images)."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    # Perturb the weights so a model that silently kept its fresh initialisation would not match.
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    sha = publish(model, "org/tiny", tag="v1", token=TOKEN, endpoint=server.endpoint,
                  training_data="random perturbation of an untrained model (test only)", metrics={"va_score": 0.1})
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype("float32")
    return model, sha, "org/tiny", images


def predictions_equal(a, b, images):
    pa, pb = a.predict(images, verbose=0), b.predict(images, verbose=0)
    return all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_publish_creates_one_commit_with_the_preset_files(server, published):
    _, sha, repo_id, _ = published
    repo = server.repos[repo_id]
    assert len(sha) == 40 and repo.refs["main"] == sha and repo.refs["v1"] == sha
    tree = repo.commits[sha]["tree"]
    assert set(tree) == {".gitattributes", *checks.PRESET_FILES, checks.CONVERTER_FILE}
    assert tree["model.weights.h5"]["lfs"] and not tree["config.json"]["lfs"]
    assert repo.commits[repo.commits[sha]["parent"]]["message"] == "initial commit"
    card = tree["README.md"]["data"].decode()
    assert card.startswith("---\nlibrary_name: keras\n") and "## Trained on" in card
    meta = json.loads(tree["metadata.json"]["data"])
    assert meta["expression_names"][4] == "Happiness" and meta["input_size"] == [32, 32]
    assert meta["files"]["model.weights.h5"] == tree["model.weights.h5"]["sha256"]


def test_token_is_sent_but_never_stored(server, published, tmp_path):
    auth = [h.get("Authorization") or h.get("authorization") for m, p, h in server.requests if m == "POST"]
    assert f"Bearer {TOKEN}" in auth
    cache = tmp_path / "cache"
    load_pretrained("hf://org/tiny@v1", cache_dir=cache, endpoint=server.endpoint, token=TOKEN)
    for path in cache.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("ref", ["sha", "v1", "main"])
def test_pull_by_commit_tag_and_branch_gives_the_published_predictions(server, published, tmp_path, ref):
    model, sha, repo_id, images = published
    revision = sha if ref == "sha" else ref
    loaded = load_pretrained(f"hf://{repo_id}@{revision}", cache_dir=tmp_path, endpoint=server.endpoint)
    assert predictions_equal(model, loaded, images)
    assert not predictions_equal(tiny_model(), loaded, images)  # the downloaded weights are in use
    assert loaded.metadata["metrics"] == {"va_score": 0.1}
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / sha
    assert sorted(p.name for p in snapshot.iterdir()) == sorted([*checks.PRESET_FILES, checks.CONVERTER_FILE])


def test_resolve_pins_a_branch_to_one_commit(server, published, tmp_path):
    _, sha, repo_id, _ = published
    folder = preset_registry.resolve(f"hf://{repo_id}@main", cache_dir=tmp_path, endpoint=server.endpoint)
    assert folder == tmp_path / "models--org--tiny" / "snapshots" / sha  # every file from the one commit
    assert (tmp_path / "models--org--tiny" / "refs" / "main").read_text() == sha
    assert checks.read_metadata(folder)["name"] == repo_id


@pytest.fixture
def registry(published, tmp_path, monkeypatch, server):
    """A registry folder with one hub preset pinned to the published commit."""
    model, sha, repo_id, images = published
    hub.download(repo_id, sha, cache_dir=tmp_path / "scratch", endpoint=server.endpoint)
    folder = next((tmp_path / "scratch").glob("models--org--tiny/snapshots/*"))
    entry = preset_registry.registry_entry(folder, repo_id, sha, "tiny test preset")
    (tmp_path / "zoo" / "tiny_test").mkdir(parents=True)
    (tmp_path / "zoo" / "tiny_test" / "preset.json").write_text(json.dumps(entry))
    monkeypatch.setenv(preset_registry.ZOO_PATH_VARIABLE, str(tmp_path / "zoo"))
    return entry


def test_registry_name_loads_the_pinned_revision(server, published, registry, tmp_path):
    model, sha, _, images = published
    assert "tiny_test" in preset_registry.list_presets()
    loaded = load_pretrained("tiny_test", cache_dir=tmp_path / "cache", endpoint=server.endpoint)
    assert predictions_equal(model, loaded, images)


def test_corrupt_cached_blob_is_detected_deleted_and_refetched(server, published, registry, tmp_path):
    model, sha, _, images = published
    cache = tmp_path / "cache"
    load_pretrained("tiny_test", cache_dir=cache, endpoint=server.endpoint)
    weights = cache / "models--org--tiny" / "snapshots" / sha / "model.weights.h5"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(PresetError, match=r"model\.weights\.h5: sha256 .* does not match .* deleted"):
        load_pretrained("tiny_test", cache_dir=cache, endpoint=server.endpoint)
    assert not weights.exists() and not blob.exists()
    assert predictions_equal(model, load_pretrained("tiny_test", cache_dir=cache, endpoint=server.endpoint),
                             images)


def test_hub_failures_become_one_line_errors(server, published, tmp_path):
    def error(name, **kwargs):
        with pytest.raises(PresetError) as info:
            load_pretrained(name, cache_dir=tmp_path, endpoint=server.endpoint, **kwargs)
        message = str(info.value)
        assert "\n" not in message
        return message

    assert "no such repo" in error("hf://org/nothing")
    assert "revision 'v9' not found" in error("hf://org/tiny@v9")
    assert "revision '" + "0" * 40 + "' not found" in error("hf://org/tiny", revision="0" * 40)
    server.repos.setdefault("org/empty", __import__("hub_server").Repo("org/empty"))
    assert "file 'config.json' is missing" in error("hf://org/empty")
    assert "not a preset name" in error("no_such_preset")
    assert "expected hf://ORG/REPO" in error("hf://just-a-name")


def test_interrupted_download_leaves_nothing_partial(server, published, tmp_path):
    model, sha, repo_id, images = published
    server.truncate["model.weights.h5"] = 1000
    try:
        with pytest.raises(PresetError, match="download of model.weights.h5 failed"):
            load_pretrained(f"hf://{repo_id}@{sha}", cache_dir=tmp_path, endpoint=server.endpoint)
    finally:
        del server.truncate["model.weights.h5"]
    blobs = tmp_path / "models--org--tiny" / "blobs"
    assert not list(blobs.glob("*.incomplete"))
    assert not (tmp_path / "models--org--tiny" / "snapshots" / sha / "model.weights.h5").exists()
    assert predictions_equal(model, load_pretrained(f"hf://{repo_id}@{sha}", cache_dir=tmp_path,
                                                    endpoint=server.endpoint), images)


OFFLINE_SCRIPT = """
import sys, numpy as np, keras_mtanet
try:
    model = keras_mtanet.load_pretrained(sys.argv[1], cache_dir=sys.argv[2])
except keras_mtanet.PresetError as error:
    print("ERROR", error)
else:
    out = model.predict(np.load(sys.argv[3]), verbose=0)
    print("VA", repr(out["va"].round(6).tolist()))
"""


def test_offline_reload_from_cache_in_a_fresh_process(server, published, tmp_path):
    model, sha, repo_id, images = published
    cache = tmp_path / "cache"
    load_pretrained(f"hf://{repo_id}@{sha}", cache_dir=cache, endpoint=server.endpoint)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}

    def run(name):
        result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, name, str(cache), str(tmp_path / "images.npy")],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()[-1]

    expected = model.predict(images, verbose=0)["va"].round(6).tolist()
    assert run(f"hf://{repo_id}@{sha}") == f"VA {expected!r}"
    message = run("hf://org/never-cached")
    assert message.startswith("ERROR") and "offline" in message


def test_local_folder_round_trip_and_tampering(tmp_path):
    model = tiny_model()
    meta = preset_folder.preset_metadata(model, "nothing (test)")
    folder = preset_folder.save_preset(model, tmp_path / "preset", meta, card.model_card_text(meta, "t"))
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    assert predictions_equal(model, load_pretrained(str(folder)), images)
    config = json.loads((folder / "config.json").read_text())
    config["dropout"] = 0.1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PresetError, match=r"config\.json: sha256 .* modified"):
        load_pretrained(str(folder))
    assert (folder / "config.json").exists()  # local files are never deleted
    with pytest.raises(PresetError, match="not a keras_mtanet preset folder"):
        load_pretrained(str(tmp_path))


def test_registry_entries_must_pin_a_commit_sha(tmp_path):
    with pytest.raises(PresetError, match="full commit sha"):
        preset_registry.registry_entry(tmp_path, "org/x", "main", "x")


def test_cli_publish_prints_the_commit_and_a_pinned_registry_entry(server, tmp_path, capsys):
    from keras_mtanet.cli import main

    model = tiny_model()
    meta = preset_folder.preset_metadata(model, "nothing (test)")
    folder = preset_folder.save_preset(model, tmp_path / "run", meta, card.model_card_text(meta, "cli"))
    assert main(["publish", str(folder), "--repo-id", "org/cli", "--tag", "v2", "--endpoint", server.endpoint,
                 "--description", "from the CLI"]) == 0
    out = capsys.readouterr().out
    sha = server.repos["org/cli"].refs["v2"]
    assert out.splitlines()[0] == f"published {folder} to org/cli at commit {sha}"
    entry = json.loads(out.split("preset.json):\n", 1)[1])
    assert entry["revision"] == sha and entry["repo_id"] == "org/cli" and entry["description"] == "from the CLI"
    assert entry["files"]["model.weights.h5"] == files.sha256_file(folder / "model.weights.h5")


def test_embedded_synthetic_preset_loads_without_network_and_is_trained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = preset_registry.list_presets()[preset_registry.SYNTHETIC_PRESET]
    assert entry["embedded"] and set(entry["files"]) == set(checks.PRESET_FILES)
    model = load_pretrained(preset_registry.SYNTHETIC_PRESET)
    meta = model.metadata
    assert meta["name"] == preset_registry.SYNTHETIC_PRESET and "synthetic" in meta["training_data"]
    assert meta["metrics"]["va_score"] > 0.5 and meta["metrics"]["au_f1"] > 0.6 and meta["metrics"]["expr_f1"] > 0.5
    card = (Path(entry["folder"]) / "README.md").read_text()
    assert "not meant for real-world affect" in card
    # The shipped weights are in use: on fresh synthetic faces they beat an untrained network of the same shape.
    from keras_mtanet import MTANet, abaw_scores
    from keras_mtanet.data import synthetic

    size = meta["input_size"][0]
    images, labels = synthetic.generate(90, size=size, seed=99, frames_per_video=45)
    trained = abaw_scores(labels, model.predict(images.astype("float32"), verbose=0))
    fresh = MTANet.from_config(model.get_config())
    untrained = abaw_scores(labels, fresh.predict(images.astype("float32"), verbose=0))
    assert trained["expr_f1"] > untrained["expr_f1"] + 0.3 and trained["va_score"] > 0.4


def test_default_preset_is_published_and_pinned_in_a_registry(server, tmp_path, monkeypatch):
    """The embedded default goes to the Hub as it is, a registry entry pins the commit, and loading it by name
    through the Hub gives the embedded preset's predictions."""
    default = preset_registry.list_presets()[preset_registry.DEFAULT_PRESET]
    folder = Path(default["folder"])
    repo_id = f"keras-mtanet/{preset_registry.DEFAULT_PRESET}"
    sha = publish(str(folder), repo_id, tag="v1", token=TOKEN, endpoint=server.endpoint)
    entry = preset_registry.registry_entry(folder, repo_id, sha, default["description"])
    assert entry["files"] == default["files"]  # the published files are the embedded ones, byte for byte
    (tmp_path / "zoo" / "hub_default").mkdir(parents=True)
    (tmp_path / "zoo" / "hub_default" / "preset.json").write_text(json.dumps(entry))
    monkeypatch.setenv(preset_registry.ZOO_PATH_VARIABLE, str(tmp_path / "zoo"))
    pulled = load_pretrained("hub_default", cache_dir=tmp_path / "cache", endpoint=server.endpoint)
    embedded = load_pretrained()
    size = embedded.input_shape[1]
    images = np.random.default_rng(5).integers(0, 256, (4, size, size, 3)).astype("float32")
    assert predictions_equal(embedded, pulled, images)


def test_publish_to_an_existing_tag_says_so_before_uploading(server, published, tmp_path, capsys, monkeypatch):
    from keras_mtanet.cli import main

    model = tiny_model()
    meta = preset_folder.preset_metadata(model, "nothing (test)")
    folder = preset_folder.save_preset(model, tmp_path / "run", meta, card.model_card_text(meta, "tag"))
    repo = server.repos["org/tiny"]
    commits = len(repo.commits)
    assert main(["publish", str(folder), "--repo-id", "org/tiny", "--tag", "v1", "--endpoint", server.endpoint]) == 2
    assert capsys.readouterr().err == "keras-mtanet: error: publish to org/tiny: tag 'v1' already exists (or is a " \
                                      "branch); choose another --tag; nothing was uploaded\n"
    assert len(repo.commits) == commits and repo.refs["v1"] == published[1]
    # A tag made between the check and the tag itself: the Hub's 409 becomes this line, not "409 Conflict for url".
    monkeypatch.setattr(hub, "check_new_tag", lambda *args: None)
    with pytest.raises(PresetError) as info:
        publish(str(folder), "org/tiny", tag="v1", endpoint=server.endpoint)
    sha = repo.refs["main"]
    assert str(info.value) == f"publish to org/tiny: tag 'v1' already exists (made meanwhile); the preset is " \
                              f"uploaded as commit {sha}, untagged"
    assert repo.refs["v1"] == published[1]


@pytest.mark.parametrize("spec", ["hf://../..", "hf://org/re..po", "hf://-org/x", "hf://org/x--y"])
def test_an_invalid_repo_id_is_named_not_retried(spec, tmp_path):
    repo_id = spec[len("hf://"):]
    expected = f"{spec!r}: {repo_id!r} is not a valid Hub repo id (ORG/NAME: letters, digits, '-', '_' and '.', " \
               "no '--' or '..', at most 96 characters)"
    with pytest.raises(PresetError) as info:
        load_pretrained(spec, cache_dir=tmp_path, endpoint="http://127.0.0.1:9")
    assert str(info.value) == expected
    with pytest.raises(PresetError) as info:
        publish(str(tmp_path), repo_id, endpoint="http://127.0.0.1:9")
    assert str(info.value) == expected.replace(repr(spec), f"publish to {repo_id!r}")


@pytest.mark.safety
def test_publish_to_an_unreachable_hub_is_one_line(tmp_path, capsys):
    folder = make_preset(tmp_path / "p")
    assert main(["publish", str(folder), "--repo-id", "org/x", "--endpoint", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-mtanet: error: publish to org/x failed") and "\n" not in err


@pytest.mark.safety
def test_a_hub_that_accepts_and_never_answers_times_out(tmp_path, monkeypatch):
    import socket
    import threading
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    silent = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(silent.accept()[0])  # kept open, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    started = time.monotonic()
    try:
        error = refused_without_blocking(
            tmp_path / "none", lambda: load_pretrained("hf://org/silent@main", cache_dir=tmp_path / "cache",
                                                       endpoint=endpoint))
    finally:
        silent.close()
        for connection in held:
            connection.close()
    assert isinstance(error, PresetError) and "the Hub cannot be reached" in str(error)
    assert time.monotonic() - started < 15
