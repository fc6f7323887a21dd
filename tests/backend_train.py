"""Run by tests/test_backends.py in a subprocess under ``KERAS_BACKEND=jax`` or ``torch``: ``keras-mtanet train``
as users run it, augmentation on, with the default recipe and with each shipped ``train.json``, shrunk to a
tiny network on tiny synthetic data (every training option of the recipe kept). Prints one JSON object on its
last line: per recipe, the exit code and the run's validation scores."""

import json
import sys
from pathlib import Path

import keras

from keras_mtanet import cli

# What makes a recipe tiny; everything else (augmentation, random erasing, mixed precision, optimizer, task
from keras_mtanet.presets import registry
from keras_mtanet.training import recipe

# weighting, colour mode, alignment template) stays as the recipe says.
SHRINK = {"backbone": "se_resnet18", "input_size": 32, "stack_blocks": [1, 1, 1, 1], "width": 0.25, "epochs": 1,
          "batch_size": 8, "synthetic": {"train_videos": 2, "val_videos": 1, "frames": 8, "size": 32}}

work = Path(sys.argv[1])
recipes = {"default": {**recipe.DEFAULTS, **SHRINK, "rand_augment": True, "random_erasing": True}}
for name, entry in registry.list_presets().items():
    shipped = Path(entry["folder"]) / "train.json"
    if shipped.is_file():
        recipes[name] = {**json.loads(shipped.read_text()), **SHRINK}
result = {"backend": keras.backend.backend(), "runs": {}}
seen = []
for name, config in recipes.items():
    settings = {k: v for k, v in config.items() if k not in recipe.CARD_KEYS}
    if settings in seen:  # the same recipe once shrunk (presets that differ only in input size)
        continue
    seen.append(settings)
    assert config["augment"], name
    path = work / f"{name}.json"
    path.write_text(json.dumps(config))
    code = cli.main(["train", "--config", str(path), "--format", "synthetic", "--data", str(work / "data"),
                     "--output", str(work / name), "--no-tensorboard"])
    record = work / name / "metadata.json"
    scores = json.loads(record.read_text())["metrics"] if record.is_file() else None
    result["runs"][name] = {"code": code, "scores": scores}
print(json.dumps(result))
