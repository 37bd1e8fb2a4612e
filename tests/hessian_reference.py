"""Dense Hessians of the dataset risk by torch.func.hessian, the tests' reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def concatenate(values: Sequence[Any]) -> Any:
    """Concatenate batch inputs or targets along the sample dimension."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(values))
    if isinstance(first, dict):
        return {key: torch.cat([value[key] for value in values]) for key in first}
    if isinstance(first, tuple):
        return tuple(
            torch.cat([value[i] for value in values]) for i in range(len(first))
        )
    raise TypeError(f"cannot concatenate {type(first).__name__}")


def dense_hessian(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    batches: Sequence[tuple[Any, Any]],
    names: Sequence[str] | None = None,
    method: str = "func",
) -> torch.Tensor:
    """Return the Hessian of ``loss_fn`` over all batches concatenated.

    The loss is evaluated once on the concatenated data, in eval mode, so a
    mean-reduced loss gives the mean over all samples. That is the definition
    the operator must match, computed by a different route. ``method`` is
    ``'func'`` for ``torch.func.hessian`` (forward over reverse mode),
    ``'autograd'`` for ``torch.autograd.functional.hessian`` (reverse over
    reverse mode), or ``'differences'`` for central differences of the
    gradient (step 1e-5, so accurate to about 1e-9 relative in float64).
    """
    inputs = concatenate([batch[0] for batch in batches])
    targets = concatenate([batch[1] for batch in batches])
    named = dict(model.named_parameters())
    if names is None:
        names = [name for name, p in named.items() if p.requires_grad]
    shapes = [named[name].shape for name in names]
    sizes = [named[name].numel() for name in names]
    theta = torch.cat([named[name].detach().reshape(-1) for name in names])
    fixed = {
        name: p.detach() for name, p in model.named_parameters() if name not in names
    }

    def risk(flat: torch.Tensor) -> torch.Tensor:
        state = dict(fixed)
        for name, piece, shape in zip(
            names, torch.split(flat, sizes), shapes, strict=True
        ):
            state[name] = piece.reshape(shape)
        return loss_fn(torch.func.functional_call(model, state, (inputs,)), targets)

    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            if method == "func":
                return torch.func.hessian(risk)(theta).detach()
            if method == "autograd":
                return torch.autograd.functional.hessian(risk, theta).detach()
            if method == "differences":
                return central_differences(risk, theta)
            raise ValueError(f"unknown method {method!r}")
    finally:
        model.train(was_training)


def central_differences(risk: Callable, theta: torch.Tensor, step: float = 1e-5):
    """Return the Hessian by central differences of the gradient, column by column."""

    def gradient(point: torch.Tensor) -> torch.Tensor:
        point = point.detach().requires_grad_(True)
        return torch.autograd.grad(risk(point), point)[0]

    columns = []
    for j in range(theta.numel()):
        offset = torch.zeros_like(theta)
        offset[j] = step
        columns.append(
            (gradient(theta + offset) - gradient(theta - offset)) / (2 * step)
        )
    return torch.stack(columns, dim=1)


def relative_error(actual: Any, expected: Any) -> float:
    """Return max |actual - expected| / max |expected|."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    scale = float(expected.abs().max())
    return float((actual - expected).abs().max()) / max(scale, 1e-300)
