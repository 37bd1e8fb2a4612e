"""Parameter blocks from stage names, parameter names, globs and regexes."""

import pytest
import torch
from torch import nn

from hessop.models import build_model
from hessop.stages import default_blocks, parameter_blocks, select_block, split_label


@pytest.fixture(scope="module")
def resnet8():
    return build_model("resnet8", num_classes=10, in_channels=1, seed=0)


def names_under(model, prefix):
    return [name for name, _ in model.named_parameters() if name.startswith(prefix)]


def test_default_blocks_are_resnet_stages(resnet8):
    blocks = default_blocks(resnet8)
    assert list(blocks) == ["stage1", "stage2", "stage3"]
    for stage, names in blocks.items():
        assert names == names_under(resnet8, stage + ".")


def test_default_blocks_of_cnn_are_children():
    model = build_model("cnn", num_classes=10, in_channels=1, seed=0)
    blocks = default_blocks(model)
    assert list(blocks) == ["conv1", "conv2", "classifier"]
    assert blocks["conv1"] == ["conv1.weight", "conv1.bias"]


def test_default_blocks_of_mlp_enter_container():
    model = build_model(
        "mlp", num_classes=10, in_channels=1, image_size=8, hidden=(16, 8), seed=0
    )
    blocks = default_blocks(model)
    assert list(blocks) == ["layers.0", "layers.2", "layers.4"]
    assert blocks["layers.2"] == ["layers.2.weight", "layers.2.bias"]


def test_default_blocks_need_parameters():
    with pytest.raises(ValueError, match="no submodule with trainable parameters"):
        default_blocks(nn.Sequential(nn.ReLU()))


def test_select_submodule(resnet8):
    assert select_block(resnet8, "stage2.0.conv1") == ["stage2.0.conv1.weight"]


def test_select_parameter_name(resnet8):
    assert select_block(resnet8, "classifier.bias") == ["classifier.bias"]


def test_select_glob_crosses_dots(resnet8):
    selected = select_block(resnet8, "stage*.conv2.weight")
    assert selected == [
        "stage1.0.conv2.weight",
        "stage2.0.conv2.weight",
        "stage3.0.conv2.weight",
    ]


def test_select_regex_must_match_whole_name(resnet8):
    assert select_block(resnet8, "re:stage[12]\\..*bn1\\.weight") == [
        "stage1.0.bn1.weight",
        "stage2.0.bn1.weight",
    ]
    with pytest.raises(ValueError, match="selects no trainable parameter"):
        select_block(resnet8, "re:stage1")


def test_select_skips_frozen_parameters():
    model = build_model("cnn", num_classes=10, in_channels=1, seed=0)
    model.conv1.bias.requires_grad_(False)
    assert select_block(model, "conv1") == ["conv1.weight"]
    assert select_block(model, "*.bias") == ["conv2.bias", "classifier.bias"]


def test_select_unknown_name_suggests_close_names(resnet8):
    with pytest.raises(ValueError, match="close names: stage3, stage2"):
        select_block(resnet8, "stage4")


def test_select_invalid_regex(resnet8):
    with pytest.raises(ValueError, match="not a valid regular expression"):
        select_block(resnet8, "re:stage[")


def test_select_empty_pattern(resnet8):
    with pytest.raises(ValueError, match="non-empty string"):
        select_block(resnet8, "  ")


def test_parameter_blocks_with_labels(resnet8):
    blocks = parameter_blocks(resnet8, ["stage1", "head=classifier.*", "re:stem\\..*"])
    assert list(blocks) == ["stage1", "head", "re:stem\\..*"]
    assert blocks["head"] == ["classifier.weight", "classifier.bias"]
    assert blocks["re:stem\\..*"] == names_under(resnet8, "stem.")


def test_parameter_blocks_default_and_single_string(resnet8):
    assert parameter_blocks(resnet8) == default_blocks(resnet8)
    assert list(parameter_blocks(resnet8, "stage3")) == ["stage3"]


def test_parameter_blocks_duplicate_label(resnet8):
    with pytest.raises(ValueError, match="used twice"):
        parameter_blocks(resnet8, ["a=stage1", "a=stage2"])


def test_parameter_blocks_empty_list(resnet8):
    with pytest.raises(ValueError, match="patterns is empty"):
        parameter_blocks(resnet8, [])


@pytest.mark.parametrize(
    ("specification", "expected"),
    [
        ("stage1", ("stage1", "stage1")),
        ("head = classifier.*", ("head", "classifier.*")),
        ("re:a=b", ("re:a=b", "re:a=b")),
        ("x=re:a=b", ("x", "re:a=b")),
        ("*.w=1", ("*.w=1", "*.w=1")),
    ],
)
def test_split_label(specification, expected):
    assert split_label(specification) == expected


def test_split_label_rejects_empty_label():
    with pytest.raises(ValueError, match="empty label"):
        split_label("=stage1")


def test_blocks_work_as_operator_params(resnet8):
    from hessop import HessianOperator

    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    names = parameter_blocks(resnet8)["stage2"]
    H = HessianOperator(
        resnet8, nn.CrossEntropyLoss(), (x, y), params=names, check_deterministic=False
    )
    assert H.layout.names == names


def test_docstring_examples():
    import doctest

    import hessop.stages

    result = doctest.testmod(hessop.stages)
    assert result.attempted > 0
    assert result.failed == 0
