"""Properties of HessianOperator on random small networks (hypothesis)."""

import numpy as np
import torch
from hessian_reference import dense_hessian, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hessop import HessianOperator

ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


@st.composite
def problems(draw):
    """Draw a small MLP, a loss and data split into batches of uneven sizes."""
    seed = draw(st.integers(0, 2**16))
    widths = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    activation = ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))]
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    classify = draw(st.booleans())
    reduction = draw(st.sampled_from(["mean", "sum"]))

    torch.manual_seed(seed)
    layers = []
    for i in range(len(widths) - 1):
        layers += [nn.Linear(widths[i], widths[i + 1]), activation()]
    out_features = 3 if classify else 2
    layers.append(nn.Linear(widths[-1], out_features))
    model = nn.Sequential(*layers).double()

    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(sum(sizes), widths[0], generator=generator, dtype=torch.float64)
    if classify:
        y = torch.randint(0, out_features, (sum(sizes),), generator=generator)
        loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    else:
        y = torch.randn(
            sum(sizes), out_features, generator=generator, dtype=torch.float64
        )
        loss_fn = nn.MSELoss(reduction=reduction)
    batches, start = [], 0
    for size in sizes:
        batches.append((x[start : start + size], y[start : start + size]))
        start += size
    return model, loss_fn, batches, seed


@settings(max_examples=15, deadline=None)
@given(problems())
def test_linear_in_vector(problem):
    model, loss_fn, batches, seed = problem
    H = HessianOperator(model, loss_fn, batches)
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, H.shape[0]))
    a, b = rng.standard_normal(2)
    combined = H.matvec(a * u + b * v)
    separate = a * H.matvec(u) + b * H.matvec(v)
    scale = np.abs(a * H.matvec(u)).max() + np.abs(b * H.matvec(v)).max() + 1e-300
    assert np.abs(combined - separate).max() <= 1e-12 * scale


@settings(max_examples=15, deadline=None)
@given(problems())
def test_symmetric_bilinear_form(problem):
    model, loss_fn, batches, seed = problem
    H = HessianOperator(model, loss_fn, batches)
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, H.shape[0]))
    uHv = u @ H.matvec(v)
    vHu = v @ H.matvec(u)
    scale = np.linalg.norm(u) * np.linalg.norm(H.matvec(v)) + 1e-300
    assert abs(uHv - vHu) <= 1e-12 * scale


@settings(max_examples=10, deadline=None)
@given(problems())
def test_matches_dense_reference(problem):
    model, loss_fn, batches, _ = problem
    H = HessianOperator(model, loss_fn, batches)
    expected = dense_hessian(model, loss_fn, batches)
    assert relative_error(H.to_dense(), expected) <= 1e-11  # float64 roundoff
