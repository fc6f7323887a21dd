
import keras
import numpy as np
import pytest
from conftest import TINY, assert_round_trip, partial_labels, tiny_model

from keras_mtanet import MTANet


def images(rng, n, size=32):
    return rng.integers(0, 256, (n, size, size, 3)).astype("float32")


@pytest.mark.slow
def test_full_se_resnet50_mtanet_shapes_and_parameters(rng):
    model = MTANet("se_resnet50", input_shape=(112, 112, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Backbone 26.04M + two 1x1 head convs 2 * (2048*512 + 512) + task layers 1024 * 17 + 17.
    assert trainable == 26_039_024 + 2 * (2048 * 512 + 512) + 1024 * 17 + 17
    assert abs(trainable / 28.2e6 - 1) < 0.01
    out = model.predict(images(rng, 2, 112), verbose=0)
    assert {k: v.shape for k, v in out.items()} == {"va": (2, 2), "au": (2, 8), "expr": (2, 7)}


def test_outputs_have_the_documented_ranges(rng):
    out = tiny_model().predict(images(rng, 8), verbose=0)
    assert set(out) == {"va", "au", "expr"}
    assert np.all(np.abs(out["va"]) <= 1)
    assert np.all((out["au"] >= 0) & (out["au"] <= 1))
    np.testing.assert_allclose(out["expr"].sum(axis=1), 1.0, rtol=1e-5)


def test_normalisation_to_minus_one_one_is_inside_the_model():
    model = tiny_model()
    converter = model.preprocessor
    np.testing.assert_allclose(keras.ops.convert_to_numpy(converter(np.array([[[[0.0, 127.5, 255.0]]]]))),
                               [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)
    assert model.layers[1] is converter
    assert converter.image_size == (32, 32) and converter.color_mode == "rgb"


def test_grayscale_converter_uses_bt601_luma():
    converter = tiny_model(color_mode="grayscale").preprocessor
    pixel = np.array([[[[200.0, 100.0, 50.0]]]], "float32")
    grey = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # 124.2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(converter(pixel)), np.full((1, 1, 1, 3), grey / 127.5 - 1),
                               atol=1e-6)


def test_task_holds_the_backbone_and_its_layers_are_the_tasks(rng):
    from keras_mtanet import SEResNetBackbone

    model = tiny_model()
    assert isinstance(model.backbone, SEResNetBackbone)
    task_layers = {id(layer) for layer in model.layers}
    assert all(id(layer) in task_layers for layer in model.backbone.layers[1:])
    # The backbone alone gives the feature map the head sees: compare with the task's own intermediate tensor.
    x = images(rng, 3)
    normalised = keras.ops.convert_to_numpy(model.preprocessor(x))
    probe = keras.Model(model.input, model.get_layer("head_gap_dropout").input)  # the head's input
    np.testing.assert_allclose(model.backbone.predict(normalised, verbose=0), probe.predict(x, verbose=0),
                               atol=1e-5)


def test_freezing_the_backbone_trains_only_the_head(rng):
    model = tiny_model()
    model.backbone.trainable = False
    backbone_ids = {id(w) for w in model.backbone.weights}
    assert model.trainable_weights and not any(id(w) in backbone_ids for w in model.trainable_weights)
    before = [w.numpy().copy() for w in model.backbone.weights]
    head = model.get_layer("va").get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(images(rng, 16), partial_labels(16, rng), batch_size=8, epochs=1, verbose=0)
    for a, w in zip(before, model.backbone.weights):
        np.testing.assert_array_equal(a, w.numpy())  # batch-norm statistics too: frozen layers run in inference mode
    assert not np.array_equal(head, model.get_layer("va").get_weights()[0])


def test_backbone_config_round_trip(rng):
    from keras_mtanet import SEResNetBackbone

    backbone = SEResNetBackbone("se_resnet50", image_shape=(32, 32, 3), stack_blocks=(1, 2, 1, 1), se_ratio=8,
                                width=0.25, name="features")
    assert backbone.get_config() == {"variant": "se_resnet50", "image_shape": [32, 32, 3], "stack_blocks": [1, 2, 1, 1],
                                     "se_ratio": 8, "width": 0.25, "folded": False, "name": "features",
                                     "trainable": True}
    assert_round_trip(backbone, rng.normal(size=(2, 32, 32, 3)).astype("float32"))


def test_task_built_on_a_given_backbone(rng):
    from keras_mtanet import SEResNetBackbone

    backbone = SEResNetBackbone("se_resnet18", image_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1), width=0.25)
    model = MTANet(backbone, input_shape=(32, 32, 3), head_filters=32)
    assert model.backbone is backbone
    assert model.get_config() == tiny_model().get_config()


@pytest.mark.parametrize("fmt,color_mode", [(".keras", "rgb"), (".weights.h5", "grayscale")])
def test_files_saved_before_the_backbone_split_load_and_predict_the_same(fmt, color_mode):
    """tests/data/legacy holds a tiny MTANet saved by the code before SEResNetBackbone (see make_legacy.py)."""
    from pathlib import Path

    folder = Path(__file__).parents[1] / "data" / "legacy"
    x = np.load(folder / "inputs.npy").astype("float32")
    expected = np.load(folder / f"{color_mode}_outputs.npz")
    if fmt == ".keras":
        model = keras.saving.load_model(folder / f"{color_mode}.keras")
        assert model.optimizer.iterations.numpy() == 2  # the compile state came back too
    else:
        model = MTANet("se_resnet18", input_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1), width=0.125,
                       head_filters=8, color_mode=color_mode)
        model.load_weights(folder / f"{color_mode}.weights.h5")
    out = model.predict(x, verbose=0)
    for key in ("va", "au", "expr"):
        np.testing.assert_allclose(out[key], expected[key], atol=1e-6)


def test_output_sizes_are_fixed_to_the_label_sets():
    config = {**tiny_model().get_config(), "num_aus": 8, "num_expressions": 7}  # as earlier versions saved it
    assert MTANet.from_config(config).get_config() == tiny_model().get_config()
    with pytest.raises(ValueError, match="num_aus is fixed to 8"):
        MTANet(**TINY, num_aus=5)


def test_config_and_preset_round_trips_give_same_config_and_outputs(rng, tmp_path):
    model = tiny_model(dropout=0.25, negative_slope=0.1, color_mode="grayscale",
                       alignment_template=[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    assert_round_trip(model, images(rng, 4), folder=tmp_path / "preset")
    assert_round_trip(model.preprocessor)


@pytest.mark.parametrize("task_weighting", ["fixed", "uncertainty"])
def test_keras_file_round_trip_gives_identical_predictions(tmp_path, rng, task_weighting):
    model = tiny_model()
    model.compile(task_weighting=task_weighting)
    x, y = images(rng, 16), partial_labels(16, rng)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MTANet)
    assert loaded.task_weighting == task_weighting
    a, b = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert model.evaluate(x, y, verbose=0) == pytest.approx(loaded.evaluate(x, y, verbose=0), rel=1e-5)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # the restored compile state can train


def test_weights_file_round_trip(tmp_path, rng):
    model = tiny_model()
    model.save_weights(tmp_path / "model.weights.h5")
    other = tiny_model()
    other.load_weights(tmp_path / "model.weights.h5")
    x = images(rng, 4)
    np.testing.assert_array_equal(model.predict(x, verbose=0)["va"], other.predict(x, verbose=0)["va"])


def test_fit_on_partial_labels_reduces_every_task_loss(rng):
    import keras_mtanet

    keras.utils.set_random_seed(1)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x, y = images(rng, 64), partial_labels(64, rng)
    # A batch where one task has no annotated row at all must still give finite losses.
    y["expr"][:16] = -1
    history = model.fit(x, y, batch_size=16, epochs=8, shuffle=False, verbose=0).history
    for key in ("loss", "va_loss", "au_loss", "expr_loss"):
        assert np.all(np.isfinite(history[key])), key
        assert history[key][-1] < history[key][0], (key, history[key])
    assert "va_ccc_valence" in history and "au_f1" in history and "expr_f1" in history
    assert keras_mtanet.MTANet is MTANet


def test_uncertainty_weighting_learns_task_weights_and_fixed_does_not(rng):
    x, y = images(rng, 32), partial_labels(32, rng)
    fixed = tiny_model()
    fixed.compile()
    fixed.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert fixed.task_uncertainty.weights_dict() == {"va": 1.0, "au": 1.0, "expr": 1.0}

    learned = tiny_model()
    learned.compile(optimizer=keras.optimizers.SGD(0.1), task_weighting="uncertainty")
    assert len(learned.trainable_weights) == len(fixed.trainable_weights) + 3
    history = learned.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    weights = learned.task_uncertainty.weights_dict()
    assert all(w != 1.0 for w in weights.values()), weights
    assert {"va_loss", "au_loss", "expr_loss"} <= set(history)


def test_uncertainty_total_loss_is_the_kendall_combination(rng):
    model = tiny_model()
    model.compile(task_weighting="uncertainty")
    for task, value in {"va": 0.5, "au": -0.25, "expr": 1.0}.items():
        model.task_uncertainty.log_vars[task].assign(value)
    x, y = images(rng, 16), partial_labels(16, rng)
    pred = model(x, training=False)
    total = float(model.compute_loss(x, y, pred))
    parts = {task: float(model._task_losses[task](y[task], pred[task])) for task in ("va", "au", "expr")}
    expected = sum(np.exp(-s) * parts[t] + s for t, s in {"va": 0.5, "au": -0.25, "expr": 1.0}.items())
    assert total == pytest.approx(expected, rel=1e-5)


def test_compile_rejects_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="task_weighting"):
        model.compile(task_weighting="magic")
    with pytest.raises(ValueError, match="loss_weights"):
        model.compile(task_weighting="uncertainty", loss_weights={"va": 1.0, "au": 1.0, "expr": 1.0})
    with pytest.raises(ValueError, match="input_shape"):
        MTANet(**{**TINY, "input_shape": (32, 32)})


def test_fixed_loss_weights_scale_the_total(rng):
    x, y = images(rng, 16), partial_labels(16, rng)
    model = tiny_model()
    model.compile(metrics=None)
    base = model.evaluate(x, y, verbose=0, return_dict=True)
    model.compile(metrics=None, loss_weights={"va": 2.0, "au": 0.0, "expr": 1.0})
    weighted = model.evaluate(x, y, verbose=0, return_dict=True)
    assert weighted["loss"] == pytest.approx(2 * base["va_loss"] + base["expr_loss"], rel=1e-5)


def test_from_preset_loads_the_embedded_default_and_its_backbone(rng):
    from keras_mtanet import SEResNetBackbone, load_pretrained
    from keras_mtanet.presets import registry

    model = MTANet.from_preset(registry.DEFAULT_PRESET)
    reference = load_pretrained(registry.DEFAULT_PRESET)
    x = rng.integers(0, 256, (2,) + tuple(model.input_shape[1:])).astype("float32")
    a, b = model.predict(x, verbose=0), reference.predict(x, verbose=0)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # The FER+ preset's grey input and alignment template travel with it, in the converter.
    assert model.preprocessor.color_mode == "grayscale"
    np.testing.assert_allclose(model.preprocessor.template, model.metadata["alignment_template"])
    backbone = SEResNetBackbone.from_preset(registry.DEFAULT_PRESET)
    assert isinstance(backbone, SEResNetBackbone)
    for w, v in zip(backbone.weights, model.backbone.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy())


@pytest.mark.parametrize("width", [-1, 0, float("nan"), float("inf"), "wide"])
def test_model_refuses_a_width_that_is_not_positive(width):
    with pytest.raises(ValueError, match="width must be a number from 0.01 to 4.0"):
        tiny_model(width=width)


def test_compile_refuses_unknown_loss_weight_keys():
    model = tiny_model()
    with pytest.raises(ValueError, match="loss_weights has unknown key\\(s\\) 'foo'; the outputs are va, au, expr"):
        model.compile(loss_weights={"va": 1.0, "foo": 1})
    with pytest.raises(ValueError, match="loss_weights\\['au'\\] must be a finite number at least 0"):
        model.compile(loss_weights={"au": float("nan")})
    model.compile(loss_weights={"va": 2.0, "au": 1.0, "expr": 0.5})  # the documented form still works


def test_predict_on_an_empty_batch_gives_empty_outputs():
    model = tiny_model()
    for predict in (lambda x: model.predict(x, verbose=0), model.predict_on_batch):
        out = predict(np.zeros((0, 32, 32, 3), np.float32))  # once UnboundLocalError 'batch_outputs'
        assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
            "va": ((0, 2), np.float32), "au": ((0, 8), np.float32), "expr": ((0, 7), np.float32)}
    with pytest.raises(ValueError, match="expected images of shape \\(N, 32, 32, 3\\), got \\(0, 16, 16, 3\\)"):
        model.predict(np.zeros((0, 16, 16, 3), np.float32))
