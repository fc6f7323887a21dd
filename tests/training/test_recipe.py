"""Training configs (keras_mtanet.training.recipe): every problem is one line naming the file and key."""

import pytest
from conftest import one_line

from keras_mtanet.errors import UsageError
from keras_mtanet.training import recipe


@pytest.mark.safety
@pytest.mark.parametrize("text, expected", [
    ("5", "expected a JSON object of config keys, got int"),
    ('"config"', "expected a JSON object of config keys, got str"),
    ("[1, 2]", "expected a JSON object of config keys, got list"),
    ('{"epochs": 0}', "epochs must be a whole number from 1"),
    ('{"epochs": -3}', "epochs must be a whole number from 1"),
    ('{"batch_size": 0}', "batch_size must be a whole number from 1"),
    ('{"epochs": "10"}', "epochs must be a whole number"),
    ('{"learning_rate": "fast"}', "learning_rate must be a number above 0"),
    ('{"stack_blocks": [1, 1]}', "stack_blocks must be null or four block counts from 1 to 64"),
    ('{"input_size": -64}', "input_size must be a whole number from 16"),
    ('{"task_weighting": "magic"}', "task_weighting must be one of fixed, uncertainty"),
    ('{"augment": "yes"}', "augment must be true or false"),
    ('{"synthetic": {"frames": "many"}}', "synthetic.frames must be a whole number"),
    ('{"synthetic": {"videos": 3}}', "unknown key\\(s\\) in \"synthetic\": videos"),
    ('{"synthetic": 3}', "synthetic must be an object"),
])
def test_training_config_errors_are_one_line_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "recipe.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=expected) as info:
        recipe.load_config(path)
    assert one_line(info).startswith(str(path))


@pytest.mark.safety
def test_a_partial_synthetic_block_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text('{"synthetic": {"frames": 12}}')
    assert recipe.load_config(path)["synthetic"] == {**recipe.DEFAULTS["synthetic"], "frames": 12}
