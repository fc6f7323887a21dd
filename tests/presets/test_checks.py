"""Presets are untrusted input (keras_mtanet.presets.checks): nothing outside what the user handed over is read,
deleted or replaced, and every problem is one line."""

import json
import shutil
import warnings

import numpy as np
import pytest
from conftest import make_preset, one_line, tiny_model

from keras_mtanet import PresetError, files, load_pretrained
from keras_mtanet.model import config as model_config
from keras_mtanet.presets import checks, registry
from keras_mtanet.presets import folder as preset_folder


def rewrite(folder, name, content, rehash=True):
    """Replace a preset file (text or JSON-able) and, with ``rehash``, list its new sha256 in metadata.json, as
    a hostile publisher would."""
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    if rehash and name != checks.METADATA_FILE:
        meta = json.loads((folder / checks.METADATA_FILE).read_text())
        meta["files"][name] = files.sha256_file(path)
        (folder / checks.METADATA_FILE).write_text(json.dumps(meta))


HOSTILE_NAMES = ["../../../../victim.txt", "/abs/victim.txt", "/dev/zero", ".", "..", "sub/config.json", ""]


@pytest.mark.safety
@pytest.mark.parametrize("key", HOSTILE_NAMES)
def test_a_hub_preset_cannot_name_files_outside_its_folder(server, tmp_path, key):
    from huggingface_hub import HfApi

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data")
    folder = make_preset(tmp_path / "upload")
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    target = str(victim) if key == "/abs/victim.txt" else key
    meta["files"][target] = "0" * 64  # a mismatch: the old loader deleted the file it named as "corrupt"
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    repo = f"evil/preset{abs(hash(key)) % 10**6}"
    api = HfApi(endpoint=server.endpoint, token="hf_x")
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo)
    cache = tmp_path / "c"  # four "../" from a snapshot folder climb to tmp_path
    with pytest.raises(PresetError) as info:
        load_pretrained(f"hf://{repo}", cache_dir=cache, endpoint=server.endpoint)
    assert "not a plain file name" in one_line(info)
    assert victim.read_text() == "the user's data"
    snapshot = next(cache.glob("models--*/snapshots/*"))
    # none deleted:
    assert sorted(p.name for p in snapshot.iterdir()) == sorted([*checks.PRESET_FILES, checks.CONVERTER_FILE])


@pytest.mark.safety
def test_links_out_of_a_preset_and_non_regular_files_are_refused(tmp_path):
    folder = make_preset(tmp_path / "p")
    outside = tmp_path / "outside.json"
    shutil.copy(folder / checks.CONFIG_FILE, outside)
    (folder / checks.CONFIG_FILE).unlink()
    (folder / checks.CONFIG_FILE).symlink_to(outside)
    with pytest.raises(PresetError) as info:
        load_pretrained(str(folder))
    assert "links outside the preset folder" in one_line(info)
    assert outside.exists()
    (folder / checks.CONFIG_FILE).unlink()
    (folder / checks.CONFIG_FILE).mkdir()
    with pytest.raises(PresetError) as info:
        load_pretrained(str(folder))
    assert "not a regular file" in one_line(info)


@pytest.mark.safety
def test_a_corrupt_local_file_is_reported_never_deleted(tmp_path):
    folder = make_preset(tmp_path / "p")
    data = bytearray((folder / checks.WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / checks.WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(PresetError, match=r"model\.weights\.h5: sha256 .* modified"):
        load_pretrained(str(folder))
    assert (folder / checks.WEIGHTS_FILE).read_bytes() == bytes(data)


@pytest.mark.safety
@pytest.mark.parametrize("change, expected", [
    ({"width": 3.0}, "describes a model of .* weights but model.weights.h5 holds"),
    ({"width": 8.0}, "width must be a number from 0.01 to 4.0"),
    ({"width": 4.0, "backbone": "se_resnet101", "stack_blocks": None},
     "more than the 300,000,000"),
    # 290 M weights, inside that limit, but 6.8 GB resident for one photo: bounded by its activations too.
    ({"width": 3.3, "backbone": "se_resnet50", "stack_blocks": None, "input_shape": [1024, 1024, 3]},
     r"1024 x 1024 px input, width 3.3, needs about 4.2 GiB of activations per image, more than the 1 GiB a "
     "preset may need; refused"),
    ({"head_filters": 33}, "do not belong together"),
    ({"width": "wide"}, "width must be a number"),
    ({"input_shape": [-32, 32, 3]}, "input_shape must be"),
    ({"stack_blocks": [1, 1, 1]}, "stack_blocks must be"),
    ({"backbone": "resnet9000"}, "backbone must be one of"),
    ({"extra_key": 1}, "unknown model config key"),
    ({"num_aus": 5}, "num_aus must be a whole number from 8 to 8"),
    ({"backbone": {"class_name": "SEResNetBackbone", "config": {}}}, "backbone must be one of"),
    ({"alignment_template": [[0.5, 0.5]] * 3}, "alignment_template must be null or five"),
])
def test_config_is_checked_against_the_weights_before_a_model_is_built(tmp_path, monkeypatch, change, expected):
    from keras_mtanet.model.task import MTANet

    folder = make_preset(tmp_path / "p")
    config = json.loads((folder / checks.CONFIG_FILE).read_text())
    rewrite(folder, checks.CONFIG_FILE, {**config, **change})

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked config")

    monkeypatch.setattr(MTANet, "from_config", classmethod(no_build))
    with pytest.raises(PresetError, match=expected) as info:
        load_pretrained(str(folder))
    assert one_line(info).startswith(str(folder / checks.CONFIG_FILE))


@pytest.mark.safety
@pytest.mark.parametrize("trick, expected", [
    ("external", "keeps its values outside the file"),
    ("softlink", "is a link to elsewhere"),
    ("integers", "not float32 weights"),
])
def test_a_weights_file_cannot_read_other_files(tmp_path, trick, expected):
    import h5py

    folder = make_preset(tmp_path / "p")
    secret = tmp_path / "secret.bin"
    with h5py.File(folder / checks.WEIGHTS_FILE, "r+") as f:
        names = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        name = names[0]
        shape, dtype = f[name].shape, f[name].dtype
        secret.write_bytes(np.arange(int(np.prod(shape)), dtype=dtype).tobytes())
        del f[name]
        if trick == "external":  # HDF5 external storage: the values are read from another file
            f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, secret.stat().st_size)])
        elif trick == "softlink":
            f[name] = h5py.SoftLink("/" + names[1])
        else:
            f.create_dataset(name, data=np.zeros(shape, np.int32))
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    meta["files"][checks.WEIGHTS_FILE] = files.sha256_file(folder / checks.WEIGHTS_FILE)
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(PresetError, match=expected) as info:
        load_pretrained(str(folder))
    assert one_line(info).startswith(str(folder / checks.WEIGHTS_FILE))


@pytest.mark.safety
def test_weights_that_do_not_fit_the_config_give_one_short_line(tmp_path):
    import h5py

    folder = make_preset(tmp_path / "p")
    # The same number of weights, in other shapes: only loading can tell.
    with h5py.File(folder / checks.WEIGHTS_FILE, "r+") as f:
        kernels = []
        f.visititems(lambda name, item: kernels.append(name) if isinstance(item, h5py.Dataset)
                     and item.ndim == 4 and item.shape[2] != item.shape[3] else None)
        values = f[kernels[0]][()]
        del f[kernels[0]]
        f.create_dataset(kernels[0], data=values.reshape(values.shape[:2] + values.shape[:1:-1]))
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    meta["files"][checks.WEIGHTS_FILE] = files.sha256_file(folder / checks.WEIGHTS_FILE)
    (folder / checks.METADATA_FILE).write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as said, pytest.raises(PresetError) as info:
        warnings.simplefilter("always")
        load_pretrained(str(folder))
    shape = values.shape
    assert one_line(info) == (f"{folder / checks.WEIGHTS_FILE}: does not fit the model in config.json (layer "
                              f"stem_conv (Conv2D): weights of shape "
                              f"{shape[:2] + shape[:1:-1]}, the model's are {shape})")
    assert [str(w.message) for w in said] == []  # Keras's multi-line notes on the layers it skipped are dropped


@pytest.mark.safety
@pytest.mark.parametrize("metadata, expected", [
    ([1, 2], "expected a JSON object, got list"),
    ('"text"', "expected a JSON object, got str"),
    ("drop files", "no \"files\" map"),
    ({"alignment_template": "abc"}, "alignment_template must be null or five"),
    ({"alignment_template": [[0.3, 0.4]] * 4}, "alignment_template must be null or five"),
    ({"input_size": [32, 48]}, "differs from config.json"),
    ({"files": {"config.json": "0" * 64}}, "lacks the sha256 of model.weights.h5"),
])
def test_malformed_metadata_is_one_line(tmp_path, metadata, expected):
    folder = make_preset(tmp_path / "p")
    meta = json.loads((folder / checks.METADATA_FILE).read_text())
    if metadata == "drop files":
        del meta["files"]
        metadata = meta
    elif isinstance(metadata, dict):
        metadata = {**meta, **metadata}
    rewrite(folder, checks.METADATA_FILE, metadata)
    with pytest.raises(PresetError, match=expected) as info:
        load_pretrained(str(folder))
    one_line(info)


@pytest.mark.safety
def test_an_oversized_metadata_file_is_not_read_whole(tmp_path):
    folder = make_preset(tmp_path / "p")
    with open(folder / checks.METADATA_FILE, "w") as f:
        f.write("[" + "0," * (checks.MAX_JSON_BYTES // 2) + "0]")
    with pytest.raises(PresetError, match="larger than 1024 KiB"):
        load_pretrained(str(folder))


@pytest.mark.safety
def test_config_parameters_match_built_models():
    for overrides in ({}, {"backbone": "se_resnet50"}, {"se_ratio": 0}, {"fold_batchnorm": True},
                      {"width": 0.5, "head_filters": 7},
                      {"backbone": "se_resnet34", "stack_blocks": (1, 2, 1, 1)}):
        model = tiny_model(**overrides)
        assert model_config.parameters(model.get_config()) == model.count_params(), overrides


@pytest.mark.safety
def test_a_broken_registry_entry_fails_alone(tmp_path, monkeypatch):
    zoo_dir = tmp_path / "zoo"
    for name, content in (("as_list", "[1, 2]"), ("no_repo", '{"description": "x", "revision": "' + "a" * 40 + '"}'),
                          ("unreadable", "{"), ("branch_pin", json.dumps({"repo_id": "o/r", "revision": "main"}))):
        (zoo_dir / name).mkdir(parents=True)
        (zoo_dir / name / registry.REGISTRY_FILE).write_text(content)
    monkeypatch.setenv(registry.ZOO_PATH_VARIABLE, str(zoo_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_pretrained().metadata["name"] == registry.DEFAULT_PRESET  # the embedded default is unaffected
    expected = {"as_list": "expected a JSON object, got list", "no_repo": "needs \"repo_id\"",
                "unreadable": "unreadable registry entry", "branch_pin": "full commit sha"}
    for name, message in expected.items():
        with pytest.raises(PresetError, match=message) as info:
            load_pretrained(name)
        assert one_line(info).startswith(str(zoo_dir / name / registry.REGISTRY_FILE))


@pytest.mark.safety
def test_update_preset_rewrites_the_card_and_keeps_the_preset_verifiable(tmp_path):
    folder = make_preset(tmp_path / "p")
    meta = preset_folder.update_preset(folder, "---\nlibrary_name: keras\n---\n# New card\n",
                                       training_data="FER+ (test)")
    assert (folder / checks.CARD_FILE).read_text().endswith("# New card\n")
    assert meta["files"][checks.CARD_FILE] == files.sha256_file(folder / checks.CARD_FILE)
    assert load_pretrained(str(folder)).metadata["training_data"] == "FER+ (test)"
