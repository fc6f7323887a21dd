import numpy as np
import pytest

from keras_mtanet import SEResNetBackbone
from keras_mtanet.model.config import BACKBONES, backbone_spec

# Trainable parameters of the reference SE-ResNets without their 1000-way classifier
# (e.g. timm's seresnet50 has 28.09M of which 2.05M are the ImageNet classifier).
REFERENCE_PARAMS = {"se_resnet18": 11.27e6, "se_resnet34": 21.45e6, "se_resnet50": 26.04e6,
                    "se_resnet101": 47.28e6}


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(name):
    model = SEResNetBackbone(name, image_shape=(64, 64, 3))
    count = trainable_count(model)
    assert abs(count / REFERENCE_PARAMS[name] - 1) < 0.01, (name, count)


@pytest.mark.parametrize("name,channels", [("se_resnet18", 512), ("se_resnet50", 2048)])
def test_feature_map_is_stride_32(name, channels):
    model = SEResNetBackbone(name, image_shape=(64, 64, 3), stack_blocks=(1, 1, 1, 1))
    assert tuple(model.output.shape) == (None, 2, 2, channels)


def test_se_ratio_zero_gives_plain_resnet():
    se = SEResNetBackbone("se_resnet18", image_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1))
    plain = SEResNetBackbone("se_resnet18", image_shape=(32, 32, 3), stack_blocks=(1, 1, 1, 1), se_ratio=0)
    # One SE block per residual block: 2*C*C/16 + C + C/16 parameters for C = 64, 128, 256, 512.
    expected = sum(2 * c * (c // 16) + c + c // 16 for c in (64, 128, 256, 512))
    assert trainable_count(se) - trainable_count(plain) == expected
    assert not any("_se_" in layer.name for layer in plain.layers)


def test_block_layer_names_are_stable():
    model = SEResNetBackbone("se_resnet50", image_shape=(32, 32, 3), stack_blocks=(1, 2, 1, 1))
    names = {layer.name for layer in model.layers}
    for expected in ("stem_conv", "stack1_block1_proj_conv", "stack2_block2_se_reduce", "stack4_block1_3_bn"):
        assert expected in names


def test_unknown_backbone_and_bad_stack_blocks_raise():
    with pytest.raises(ValueError, match="se_resnet18"):
        backbone_spec("resnet9000")
    with pytest.raises(ValueError, match="stack_blocks must be null or four block counts from 1 to 64"):
        backbone_spec("se_resnet18", stack_blocks=(1, 1, 1))
    assert backbone_spec("se_resnet34") == BACKBONES["se_resnet34"]
