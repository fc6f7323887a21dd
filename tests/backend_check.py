"""Run by tests/test_backends.py in a subprocess under ``KERAS_BACKEND=jax`` or ``torch``: the tiny MTANet through
build, compile and two fit steps on masked labels, evaluate, predict, a .keras round trip, a preset written
under TensorFlow loaded here, and a preset saved here. Prints one JSON object on its last line."""

import json
import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY, partial_labels  # noqa: E402

from keras_mtanet import MTANet, load_pretrained  # noqa: E402
from keras_mtanet.presets import folder as preset_folder

work = Path(sys.argv[1])
result = {"backend": keras.backend.backend(), "tensorflow_loaded": "tensorflow" in sys.modules}

rng = np.random.default_rng(0)
keras.utils.set_random_seed(0)
model = MTANet(**TINY)
model.compile(optimizer=keras.optimizers.SGD(0.05))
x = rng.integers(0, 256, (16, 32, 32, 3)).astype("float32")
y = partial_labels(16, rng)
history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
result["fit_loss"] = [float(v) for v in history["loss"]]
result["steps"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
result["evaluate"] = {k: float(v) for k, v in model.evaluate(x, y, verbose=0, return_dict=True).items()}
out = model.predict(x, verbose=0)
result["shapes"] = {k: list(v.shape) for k, v in out.items()}
model.save(work / "model.keras")
loaded = keras.saving.load_model(work / "model.keras")
again = loaded.predict(x, verbose=0)
result["keras_file_max_diff"] = max(float(np.abs(out[k] - again[k]).max()) for k in out)

# A preset the parent wrote under TensorFlow, with the outputs TensorFlow predicted on the same inputs.
tf_preset = load_pretrained(str(work / "tf_preset"))
tf_inputs = np.load(work / "tf_inputs.npy")
tf_expected = np.load(work / "tf_outputs.npz")
tf_out = tf_preset.predict(tf_inputs, verbose=0)
result["tf_preset_max_diff"] = max(float(np.abs(tf_out[k] - tf_expected[k]).max()) for k in tf_out)
fast = tf_preset.inference_model().predict(tf_inputs, verbose=0)
result["folded_max_diff"] = max(float(np.abs(fast[k] - tf_expected[k]).max()) for k in fast)

# A preset saved on this backend, for the parent to load under TensorFlow.
meta = preset_folder.preset_metadata(model, training_data="random test images", name="backend-check")
preset_folder.save_preset(model, work / "backend_preset", meta, "# backend check\n")
np.savez(work / "backend_outputs.npz", **out)
np.save(work / "backend_inputs.npy", x)
print(json.dumps(result))
