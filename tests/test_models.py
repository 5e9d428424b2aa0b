"""Issue 2: model registry, exact parameter counts, eager argument checks."""

import pytest
import torch

from amp_fl.models import available_models, build_model, count_parameters, register_model


@pytest.mark.parametrize(
    ("name", "expected"),
    # resnet8: stem 144 + 32; stage 1 2 x (2,304 + 32); stage 2 4,608 + 9,216 + 512 + 3 x 64;
    # stage 3 18,432 + 36,864 + 2,048 + 3 x 128; class layer 650.
    [("cnn", 36_758), ("vgg11", 9_287_434), ("resnet18", 11_173_962), ("resnet8", 77_754)],
)
def test_paper_parameter_counts(name, expected):
    assert count_parameters(build_model(name, num_classes=10)) == expected


@pytest.mark.parametrize(
    ("name", "shape", "class_layer_in"),
    [
        ("cnn", (1, 28, 28), 128),
        ("vgg11", (3, 32, 32), 128),
        ("resnet18", (3, 32, 32), 512),
        ("resnet8", (1, 28, 28), 64),
    ],
)
def test_non_default_class_count_changes_only_the_class_layer(name, shape, class_layer_in):
    # 50 classes: a hard-coded 10 anywhere would fail this.
    base = count_parameters(build_model(name, num_classes=10, input_shape=shape))
    model = build_model(name, num_classes=50, input_shape=shape)
    assert count_parameters(model) == base + 40 * (class_layer_in + 1)
    out = model.eval()(torch.zeros(2, *shape))
    assert out.shape == (2, 50)


def test_cnn_on_other_input_shape():
    # 3x32x32 -> conv5: 28 -> pool 14 -> conv5: 10 -> pool 5: FC input 16*5*5 = 400.
    model = build_model("cnn", num_classes=10, input_shape=(3, 32, 32))
    expected = (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (400 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(model) == expected
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_vgg11_larger_input_scales_first_fc():
    model = build_model("vgg11", num_classes=10, input_shape=(3, 64, 64))
    assert count_parameters(model) == 9_287_434 + 512 * 3 * 128  # flatten 512*2*2 instead of 512
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("cnn", {"input_shape": (1, 8, 8)}, "at least 16x16"),
        ("vgg11", {"input_shape": (3, 48, 48)}, "multiples of 32"),
        ("resnet18", {"input_shape": (3, 4, 4)}, "at least 8x8"),
        ("cnn", {"input_shape": (1, 28)}, "channels, height, width"),
        ("cnn", {"num_classes": 1}, "num_classes"),
        ("alexnet", {}, "unknown model 'alexnet'"),
    ],
)
def test_bad_arguments_fail_eagerly(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, **kwargs)


def test_registry_rejects_duplicates_and_lists_models():
    assert available_models() == ["cnn", "resnet18", "resnet8", "vgg11"]
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn", default_input_shape=(1, 28, 28))(lambda **_: None)
