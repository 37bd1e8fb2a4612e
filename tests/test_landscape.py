"""Loss landscapes, filter-normalised directions and the dataset gradient."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from hessop import HessianOperator
from hessop.landscape import (
    filter_normalized_direction,
    loss_gradient,
    loss_landscape_1d,
    loss_landscape_2d,
)
from hessop.models import build_model


def least_squares(seed=0, num_samples=11):
    """Linear regression with a mean squared error: an exactly quadratic loss."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(3, 2, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=generator))
        model.bias.copy_(torch.randn(2, generator=generator))
    x = torch.randn(num_samples, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)
    return model, x, y


def random_direction(model, seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(p.shape, generator=generator, dtype=p.dtype)
        for name, p in model.named_parameters()
    }


def flat(direction, names):
    return np.concatenate([direction[name].reshape(-1).numpy() for name in names])


def quadratic_model(model, x, y):
    """Return L(theta), the gradient and the Hessian of the least-squares loss."""
    loss_fn = nn.MSELoss()
    H = HessianOperator(model, loss_fn, (x, y))
    dense = H.to_dense()
    gradient = loss_gradient(model, loss_fn, (x, y))
    with torch.no_grad():
        center = float(loss_fn(model(x), y))
    return center, flat(gradient, H.layout.names), dense, H.layout.names


def test_filter_norms_match_weight_norms():
    model = build_model("cnn", num_classes=10, in_channels=1, seed=0)
    direction = filter_normalized_direction(model, seed=3)
    for name, weight in model.named_parameters():
        d = direction[name]
        assert d.shape == weight.shape
        if weight.dim() > 1:
            d_norms = d.reshape(d.shape[0], -1).norm(dim=1)
            w_norms = weight.detach().reshape(d.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(d_norms, w_norms, rtol=1e-5, atol=0)
        else:
            assert torch.count_nonzero(d) == 0, name


def test_filter_direction_copies_bias_when_not_ignored():
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    direction = filter_normalized_direction(model, seed=0, ignore_bias_bn=False)
    for name, weight in model.named_parameters():
        if weight.dim() <= 1:
            assert torch.equal(direction[name], weight.detach()), name


def test_filter_direction_zero_filter_stays_zero():
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[1].zero_()
    direction = filter_normalized_direction(model, seed=1)
    assert torch.count_nonzero(direction["weight"][1]) == 0
    assert torch.count_nonzero(direction["weight"][0]) == 4


def test_filter_direction_seeded_and_typed():
    model = nn.Linear(5, 4).double()
    first = filter_normalized_direction(model, seed=7)
    second = filter_normalized_direction(model, seed=7)
    other = filter_normalized_direction(model, seed=8)
    assert torch.equal(first["weight"], second["weight"])
    assert not torch.equal(first["weight"], other["weight"])
    assert first["weight"].dtype == torch.float64


def test_filter_direction_selected_params():
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    direction = filter_normalized_direction(model, ["stage1"], seed=0)
    assert all(name.startswith("stage1.") for name in direction)


def test_line_matches_quadratic_model():
    model, x, y = least_squares()
    center, g, H, names = quadratic_model(model, x, y)
    direction = random_direction(model, seed=1)
    d = flat(direction, names)
    alphas = np.linspace(-2.0, 2.0, 9)

    line = loss_landscape_1d(model, nn.MSELoss(), (x, y), direction, alphas)

    expected = center + alphas * (g @ d) + 0.5 * alphas**2 * (d @ H @ d)
    np.testing.assert_allclose(line.losses, expected, rtol=1e-12, atol=1e-12)
    assert line.center_loss == pytest.approx(center, rel=1e-14)
    assert line.num_evaluations == alphas.size + 1
    assert line.num_samples == len(y)


def test_plane_matches_quadratic_model_and_index_order():
    model, x, y = least_squares(seed=2)
    center, g, H, names = quadratic_model(model, x, y)
    first, second = random_direction(model, 3), random_direction(model, 4)
    d1, d2 = flat(first, names), flat(second, names)
    alphas = np.array([-1.0, 0.0, 0.5, 2.0])
    betas = np.array([-0.5, 1.5, 3.0])

    plane = loss_landscape_2d(
        model, nn.MSELoss(), (x, y), [first, second], alphas, betas
    )

    assert plane.losses.shape == (4, 3)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            step = a * d1 + b * d2
            expected = center + g @ step + 0.5 * step @ H @ step
            assert plane.losses[i, j] == pytest.approx(expected, rel=1e-12), (i, j)
    assert plane.num_evaluations == 13


def test_uneven_batches_weighted_by_size():
    model, x, y = least_squares(num_samples=13)
    direction = random_direction(model, seed=5)
    alphas = [-1.0, 0.3, 1.0]
    batches = [(x[:5], y[:5]), (x[5:12], y[5:12]), (x[12:], y[12:])]

    whole = loss_landscape_1d(model, nn.MSELoss(), (x, y), direction, alphas)
    split = loss_landscape_1d(model, nn.MSELoss(), batches, direction, alphas)

    np.testing.assert_allclose(split.losses, whole.losses, rtol=1e-13)
    assert split.center_loss == pytest.approx(whole.center_loss, rel=1e-13)


def test_sum_reduction_adds_batches():
    model, x, y = least_squares(num_samples=10)
    direction = random_direction(model, seed=6)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    loss_fn = nn.MSELoss(reduction="sum")

    line = loss_landscape_1d(model, loss_fn, batches, direction, [0.5])

    with torch.no_grad():
        shifted = {
            name: p + 0.5 * direction[name] for name, p in model.named_parameters()
        }
        expected = float(loss_fn(torch.func.functional_call(model, shifted, (x,)), y))
    assert line.losses[0] == pytest.approx(expected, rel=1e-13)


def test_fixed_parameters_stay_fixed():
    model, x, y = least_squares()
    direction = {"bias": torch.ones(2, dtype=torch.float64)}
    line = loss_landscape_1d(model, nn.MSELoss(), (x, y), direction, [1.0])
    with torch.no_grad():
        expected = float(nn.MSELoss()(model(x) + 1.0, y))
    assert line.losses[0] == pytest.approx(expected, rel=1e-13)


def test_gradient_matches_autograd_with_uneven_batches():
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(13, 1, 8, 8, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (13,), generator=generator)
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]

    gradient = loss_gradient(model, nn.CrossEntropyLoss(), batches, ["stage2"])

    model.eval()
    loss = nn.functional.cross_entropy(model(x), y)
    names = list(gradient)
    expected = torch.autograd.grad(loss, [model.get_parameter(n) for n in names])
    for name, reference in zip(names, expected, strict=True):
        torch.testing.assert_close(gradient[name], reference, rtol=1e-10, atol=1e-12)
    assert all(name.startswith("stage2.") for name in names)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("train_mode", [False, True])
def test_model_left_untouched(train_mode):
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    model.train()
    model.stage2.eval()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    modes = {name: module.training for name, module in model.named_modules()}
    x = torch.randn(8, 1, 8, 8)
    y = torch.arange(8)
    direction = filter_normalized_direction(model, seed=0)

    loss_landscape_1d(
        model, nn.CrossEntropyLoss(), (x, y), direction, [-1, 1], train_mode=train_mode
    )
    loss_landscape_2d(
        model,
        nn.CrossEntropyLoss(),
        [(x[:3], y[:3]), (x[3:], y[3:])],
        [direction, direction],
        [0.5],
        [0.5],
        train_mode=train_mode,
    )
    loss_gradient(model, nn.CrossEntropyLoss(), (x, y), train_mode=train_mode)

    after = model.state_dict()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_center_loss_matches_forward():
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.arange(16) % 10
    direction = filter_normalized_direction(model, seed=0)
    line = loss_landscape_1d(model, nn.CrossEntropyLoss(), (x, y), direction, [0.0])
    model.eval()
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model(x), y))
    assert line.center_loss == pytest.approx(expected, rel=1e-6)
    assert line.losses[0] == pytest.approx(expected, rel=1e-6)


def test_overflowing_points_are_kept_and_logged(caplog):
    model, x, y = least_squares()
    direction = {"weight": torch.full((2, 3), 1e200, dtype=torch.float64)}
    with caplog.at_level(logging.WARNING, logger="hessop.landscape"):
        line = loss_landscape_1d(model, nn.MSELoss(), (x, y), direction, [0.0, 1e200])
    assert np.isfinite(line.losses[0])
    assert not np.isfinite(line.losses[1])
    assert "not finite at 1 of 2 grid points" in caplog.text


@pytest.mark.parametrize(
    ("direction", "message"),
    [
        ({"nope": torch.zeros(1)}, "not a parameter of the model"),
        ({"bias": torch.zeros(3)}, r"has shape \(3,\), but the parameter has shape"),
        ({"bias": torch.tensor([np.nan, 0.0])}, "is not finite"),
    ],
)
def test_invalid_direction(direction, message):
    model, x, y = least_squares()
    direction = {k: v.double() for k, v in direction.items()}
    with pytest.raises(ValueError, match=message):
        loss_landscape_1d(model, nn.MSELoss(), (x, y), direction, [1.0])


def test_direction_must_be_a_mapping():
    model, x, y = least_squares()
    with pytest.raises(TypeError, match="non-empty mapping"):
        loss_landscape_1d(model, nn.MSELoss(), (x, y), {}, [1.0])


@pytest.mark.parametrize("alphas", [[], [[1.0]], [np.inf]])
def test_invalid_grid(alphas):
    model, x, y = least_squares()
    direction = random_direction(model, 0)
    with pytest.raises(ValueError, match="alphas"):
        loss_landscape_1d(model, nn.MSELoss(), (x, y), direction, alphas)


def test_plane_needs_two_directions():
    model, x, y = least_squares()
    direction = random_direction(model, 0)
    with pytest.raises(ValueError, match="two direction mappings"):
        loss_landscape_2d(model, nn.MSELoss(), (x, y), direction, [0.0], [0.0])


def test_docstring_examples():
    import doctest

    import hessop.landscape

    result = doctest.testmod(hessop.landscape)
    assert result.attempted > 0
    assert result.failed == 0
