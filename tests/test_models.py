"""Model zoo: CIFAR ResNets with their switches, the MLP, the CNN and build_model."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hessop.models import (
    MLP,
    MODEL_NAMES,
    BasicBlock,
    CifarResNet,
    SmallCNN,
    build_model,
)


def count_parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


def batch_norm_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


# ResNet structure


@pytest.mark.parametrize(
    ("depth", "blocks"), [(8, 1), (14, 2), (20, 3), (32, 5), (38, 6), (56, 9)]
)
def test_resnet_blocks_per_stage(depth, blocks):
    model = CifarResNet(depth, in_channels=1)
    for stage in CifarResNet.STAGE_NAMES:
        assert len(getattr(model, stage)) == blocks
    conv_layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linear_layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(conv_layers) + len(linear_layers) == depth


def test_resnet20_parameter_count():
    # He et al. (2016), Table 6: ResNet-20 has 0.27M parameters on CIFAR-10.
    model = CifarResNet(20, num_classes=10, in_channels=3)
    assert count_parameters(model) == 269_722


def test_resnet_stage_widths_and_strides():
    model = CifarResNet(8, in_channels=1)
    for stage, width, stride in (
        ("stage1", 16, 1),
        ("stage2", 32, 2),
        ("stage3", 64, 2),
    ):
        block = getattr(model, stage)[0]
        assert block.conv1.out_channels == width
        assert block.conv1.stride == (stride, stride)
        assert block.conv2.stride == (1, 1)
    assert model.stem.conv.out_channels == 16
    assert model.classifier.in_features == 64


def test_resnet_parameter_names_select_stages():
    model = CifarResNet(8, in_channels=1)
    prefixes = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert prefixes == {"stem", "stage1", "stage2", "stage3", "classifier"}
    stage2 = [
        name for name, _ in model.named_parameters() if name.startswith("stage2.")
    ]
    assert stage2
    assert all(name.startswith("stage2.0.") for name in stage2)


@pytest.mark.parametrize(
    "size", [(8, 8), (32, 32), (7, 7), (5, 9), (2, 2), (1, 1), (16, 3)]
)
def test_resnet_any_input_size(size):
    model = CifarResNet(8, num_classes=7, in_channels=2)
    output = model(torch.randn(3, 2, *size))
    assert output.shape == (3, 7)
    assert torch.isfinite(output).all()


def test_resnet_stage_resolutions_on_digits():
    model = CifarResNet(8, in_channels=1)
    sizes = {}

    def record_size(stage):
        def hook(module, args, output):
            sizes[stage] = tuple(output.shape[1:])

        return hook

    for stage in CifarResNet.STAGE_NAMES:
        getattr(model, stage).register_forward_hook(record_size(stage))
    model(torch.randn(2, 1, 8, 8))
    assert sizes == {"stage1": (16, 8, 8), "stage2": (32, 4, 4), "stage3": (64, 2, 2)}


def test_resnet_backward_reaches_every_parameter():
    model = CifarResNet(8, in_channels=1)
    loss = model(torch.randn(4, 1, 8, 8)).square().sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_resnet_runs_in_float64():
    model = CifarResNet(8, in_channels=1).double()
    assert model(torch.randn(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@settings(max_examples=10, deadline=None)
@given(
    n=st.integers(1, 2),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    batch_norm=st.lists(st.booleans(), min_size=3, max_size=3),
    residual=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_resnet_output_shape_property(n, height, width, batch_norm, residual):
    model = CifarResNet(
        6 * n + 2,
        num_classes=4,
        in_channels=1,
        batch_norm=tuple(batch_norm),
        residual=tuple(residual),
    ).eval()
    output = model(torch.randn(2, 1, height, width))
    assert output.shape == (2, 4)


# Shortcuts (option A)


def identity_block_output(block, x):
    """Zero the residual branch, so the block returns relu(shortcut(x))."""
    with torch.no_grad():
        block.conv2.weight.zero_()
        if block.conv2.bias is not None:
            block.conv2.bias.zero_()
    return block.eval()(x)


def test_identity_shortcut_passes_input():
    block = BasicBlock(16, 16, 1)
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(identity_block_output(block, x), torch.relu(x))


def test_downsampling_shortcut_subsamples_and_pads_zeros():
    block = BasicBlock(16, 32, 2)
    x = torch.randn(2, 16, 5, 5)
    output = identity_block_output(block, x)
    assert output.shape == (2, 32, 3, 3)
    torch.testing.assert_close(output[:, :16], torch.relu(x[:, :, ::2, ::2]))
    assert torch.equal(output[:, 16:], torch.zeros(2, 16, 3, 3))


def test_shortcut_has_no_parameters():
    model = CifarResNet(8, in_channels=1)
    for stage in CifarResNet.STAGE_NAMES:
        shortcut = getattr(model, stage)[0].shortcut
        assert shortcut is not None
        assert list(shortcut.parameters()) == []


def test_no_residual_block_drops_shortcut():
    block = BasicBlock(16, 16, 1, residual=False)
    assert block.shortcut is None
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(identity_block_output(block, x), torch.zeros_like(x))


def test_residual_switch_keeps_parameter_shapes():
    with_residual = CifarResNet(8, in_channels=1)
    without_residual = CifarResNet(8, in_channels=1, residual=False)
    shapes = {name: p.shape for name, p in with_residual.named_parameters()}
    other = {name: p.shape for name, p in without_residual.named_parameters()}
    assert shapes == other


def test_residual_switch_changes_output():
    torch.manual_seed(0)
    with_residual = CifarResNet(8, in_channels=1).eval()
    without_residual = CifarResNet(8, in_channels=1, residual=False).eval()
    without_residual.load_state_dict(with_residual.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(with_residual(x), without_residual(x))


# Switches per stage


def test_batch_norm_false_removes_all_batch_norm():
    model = CifarResNet(8, in_channels=1, batch_norm=False)
    assert batch_norm_layers(model) == []
    assert model.stem_batch_norm is False
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert module.bias is not None


def test_batch_norm_default_everywhere():
    model = CifarResNet(8, in_channels=1)
    # The stem has one BatchNorm layer, each block two.
    assert len(batch_norm_layers(model)) == 1 + 3 * 2
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert module.bias is None


@pytest.mark.parametrize("stage_index", [0, 1, 2])
def test_batch_norm_removed_from_one_stage(stage_index):
    switch = [True, True, True]
    switch[stage_index] = False
    model = CifarResNet(14, in_channels=1, batch_norm=tuple(switch))
    assert model.batch_norm == tuple(switch)
    assert model.stem_batch_norm is True
    for index, stage in enumerate(CifarResNet.STAGE_NAMES):
        count = len(batch_norm_layers(getattr(model, stage)))
        assert count == (0 if index == stage_index else 2 * 2)


@pytest.mark.parametrize("stage_index", [0, 1, 2])
def test_residual_removed_from_one_stage(stage_index):
    switch = [True, True, True]
    switch[stage_index] = False
    model = CifarResNet(14, in_channels=1, residual=switch)
    assert model.residual == tuple(switch)
    for index, stage in enumerate(CifarResNet.STAGE_NAMES):
        for block in getattr(model, stage):
            assert block.residual is (index != stage_index)
            assert (block.shortcut is None) is (index == stage_index)


def test_stem_batch_norm_override():
    model = CifarResNet(8, in_channels=1, batch_norm=False, stem_batch_norm=True)
    assert isinstance(model.stem.bn, nn.BatchNorm2d)
    assert len(batch_norm_layers(model)) == 1


@pytest.mark.parametrize(
    ("switch", "message"),
    [
        ((True, False), "one entry per stage"),
        ([True, True, True, True], "one entry per stage"),
        ((True, 1, True), "entries must be bools"),
        ("yes", "bool or a sequence"),
        (1, "bool or a sequence"),
    ],
)
def test_invalid_stage_switch(switch, message):
    with pytest.raises(ValueError, match=message):
        CifarResNet(8, batch_norm=switch)
    with pytest.raises(ValueError, match=message):
        CifarResNet(8, residual=switch)


@pytest.mark.parametrize("depth", [0, 2, 7, 9, 21, -4])
def test_invalid_resnet_depth(depth):
    with pytest.raises(ValueError, match=r"6n \+ 2"):
        CifarResNet(depth)


def test_resnet_depth_not_int():
    with pytest.raises(ValueError, match="must be an int"):
        CifarResNet(20.0)


# Small models


def test_mlp_layers_and_output():
    model = MLP(64, num_classes=10, hidden=(32, 16))
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (64, 32),
        (32, 16),
        (16, 10),
    ]
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_mlp_without_hidden_layers_is_linear():
    model = MLP(12, num_classes=3, hidden=())
    x = torch.randn(5, 3, 2, 2)
    expected = x.flatten(1) @ model.layers[0].weight.T + model.layers[0].bias
    torch.testing.assert_close(model(x), expected)


def test_mlp_wrong_input_size():
    model = MLP(64, num_classes=10)
    with pytest.raises(ValueError, match="expects 64 input values"):
        model(torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_small_models_activations(activation):
    x = torch.randn(2, 3, 9, 9)
    assert SmallCNN(3, num_classes=5, activation=activation)(x).shape == (2, 5)
    assert MLP(243, num_classes=5, activation=activation)(x).shape == (2, 5)


def test_small_models_unknown_activation():
    with pytest.raises(ValueError, match="known activations: gelu, relu, tanh"):
        MLP(4, activation="sigmoid")
    with pytest.raises(ValueError, match="unknown activation"):
        SmallCNN(1, activation="swish")


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (8, 8), (32, 32), (4, 11)])
def test_cnn_any_input_size(size):
    model = SmallCNN(1, num_classes=10)
    assert model(torch.randn(2, 1, *size)).shape == (2, 10)


def test_cnn_channels_length():
    with pytest.raises(ValueError, match="2 entries"):
        SmallCNN(1, channels=(8, 16, 32))


# build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_model_known_names(name):
    model = build_model(name, num_classes=10, in_channels=1, image_size=8, seed=0)
    assert model.training
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "depth"),
    [("resnet20", 20), ("resnet32", 32), ("resnet38", 38), ("resnet56", 56)],
)
def test_build_model_resnet_depths(name, depth):
    model = build_model(name, num_classes=10, in_channels=3)
    assert isinstance(model, CifarResNet)
    assert model.depth == depth


def test_build_model_any_valid_resnet_depth():
    model = build_model("resnet8", num_classes=10, in_channels=1)
    assert isinstance(model, CifarResNet)
    assert model.num_blocks == 1


def test_build_model_passes_options():
    model = build_model(
        "resnet8",
        num_classes=10,
        in_channels=1,
        batch_norm=(True, True, False),
        residual=False,
    )
    assert model.batch_norm == (True, True, False)
    assert model.residual == (False, False, False)
    mlp = build_model("mlp", num_classes=3, in_channels=2, image_size=(4, 5), hidden=())
    assert mlp.layers[0].in_features == 40
    cnn = build_model("cnn", num_classes=3, in_channels=2, channels=(4, 8))
    assert cnn.conv2.out_channels == 8


def test_build_model_seed_is_reproducible():
    torch.manual_seed(123)
    state_before = torch.get_rng_state()
    first = build_model("resnet8", num_classes=10, in_channels=1, seed=5)
    second = build_model("resnet8", num_classes=10, in_channels=1, seed=5)
    other = build_model("resnet8", num_classes=10, in_channels=1, seed=6)
    assert torch.equal(torch.get_rng_state(), state_before)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.stem.conv.weight, other.stem.conv.weight)


def test_build_model_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown model 'vgg16'") as error:
        build_model("vgg16", num_classes=10, in_channels=3)
    for name in MODEL_NAMES:
        assert name in str(error.value)


@pytest.mark.parametrize("name", ["resnet21", "resnet2", "resnet0"])
def test_build_model_bad_resnet_depth(name):
    with pytest.raises(ValueError, match="invalid CIFAR ResNet depth"):
        build_model(name, num_classes=10, in_channels=3)


def test_build_model_unknown_option():
    with pytest.raises(ValueError, match=r"does not take the option.*batchnorm"):
        build_model("resnet8", num_classes=10, in_channels=1, batchnorm=False)
    with pytest.raises(ValueError, match="its options are: activation, channels"):
        build_model("cnn", num_classes=10, in_channels=1, hidden=(3,))


def test_build_model_mlp_needs_image_size():
    with pytest.raises(ValueError, match="needs image_size"):
        build_model("mlp", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="image_size must be"):
        build_model("mlp", num_classes=10, in_channels=1, image_size=(8, 8, 8))


@pytest.mark.parametrize(
    "arguments",
    [
        {"num_classes": 0, "in_channels": 1},
        {"num_classes": 10, "in_channels": 0},
        {"num_classes": 2.5, "in_channels": 1},
    ],
)
def test_build_model_invalid_sizes(arguments):
    with pytest.raises(ValueError, match="must be a positive int"):
        build_model("resnet8", **arguments)
