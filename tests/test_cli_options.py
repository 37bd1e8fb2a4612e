"""Option parsing of ``hessop analyze``: model switches, labels and settings."""

import math

import pytest

from hessop.cli import build_parser
from hessop.cli._analyze import settings_of
from hessop.cli._errors import CommandError
from hessop.cli._setup import milestones, model_label, model_options


def parse(*arguments):
    parser, commands = build_parser()
    args = parser.parse_args(["analyze", *arguments])
    args.validate(commands["analyze"], args)
    return args


def test_defaults():
    args = parse()
    assert args.model == "resnet20"
    assert args.data == "digits"
    assert args.num_samples == 512
    assert args.metrics == ["eigenvalues", "trace", "density", "blocks", "landscape"]
    assert args.blocks is None


def test_metrics_in_canonical_order():
    assert parse("--metrics", "landscape", "trace").metrics == ["trace", "landscape"]


def test_all_samples():
    assert parse("--num-samples", "all").num_samples is None


def test_switches_for_all_stages():
    options = model_options(parse("--no-batch-norm", "--no-residual"))
    assert options == {
        "batch_norm": [False, False, False],
        "residual": [False, False, False],
    }
    assert model_label("resnet20", options) == "ResNet-20 (no BN; no residual)"


def test_switch_for_one_stage():
    options = model_options(parse("--model", "resnet32", "--no-batch-norm", "stage3"))
    assert options == {"batch_norm": [True, True, False]}
    assert model_label("resnet32", options) == "ResNet-32 (no BN in stage3)"


def test_model_option_literals():
    args = parse("--model", "mlp", "--model-option", "hidden=(32, 16)")
    args.model_option.append("activation=tanh")
    assert model_options(args) == {"hidden": (32, 16), "activation": "tanh"}


def test_model_option_needs_key_value():
    with pytest.raises(CommandError, match="not KEY=VALUE"):
        model_options(parse("--model-option", "hidden"))


def test_switch_conflicts_with_model_option():
    args = parse("--no-residual", "--model-option", "residual=True")
    with pytest.raises(CommandError, match="conflict"):
        model_options(args)


@pytest.mark.parametrize(
    ("epochs", "given", "expected"),
    [(10, None, (5, 8)), (1, None, ()), (3, None, (2,)), (10, [3, 6], (3, 6))],
)
def test_milestones(epochs, given, expected):
    assert milestones(epochs, given) == expected


def test_settings_leave_out_run_options():
    settings = settings_of(parse("--quiet", "--resume", "--metrics", "trace"))
    assert "quiet" not in settings
    assert "resume" not in settings
    assert "metrics" not in settings
    assert "handler" not in settings
    assert settings["trace_matvecs"] == 50
    assert settings["seed"] == 0


@pytest.mark.parametrize(
    ("given", "expected"),
    [("0", 0.0), ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("unlimited", math.inf)],
)
def test_cache_budget_sizes(given, expected):
    assert parse("--cache-budget", given).cache_budget == expected


def test_cache_budget_rejects_bad_size(capsys):
    with pytest.raises(SystemExit):
        parse("--cache-budget", "lots")
    assert "cache_budget='lots' is not a memory size" in capsys.readouterr().err
