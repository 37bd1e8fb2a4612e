"""Hessian-vector products of one batch by double backpropagation."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from hessop._layout import ParameterLayout
from hessop._model import evaluation_mode, twice_differentiable
from hessop._operator_checks import check_loss
from hessop._rules import second_order_rules


def first_order(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    state: dict[str, torch.Tensor],
    leaves: list[torch.Tensor],
    inputs: Any,
    targets: Any,
    *,
    train_mode: bool,
    index: int,
    layer_rules: bool = True,
) -> tuple[list[torch.Tensor] | None, list[int]]:
    """Run one batch's forward pass and its first backward pass.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated through :func:`torch.func.functional_call` with ``state``,
        which maps parameter names to ``leaves`` (the differentiated
        parameters) or to detached constants.
    leaves : list of torch.Tensor
        The tensors the gradient is taken with respect to.
    train_mode : bool
        Evaluate in train mode; the forward pass then gets copies of the
        buffers, because train mode updates BatchNorm's running statistics in
        place and the model's buffers must stay as they are.
    index : int
        The batch's index, for error messages.
    layer_rules : bool, default True
        Build the graph of convolutions, eval-mode BatchNorm and ReLU with
        the second-derivative rules of :mod:`hessop._rules`, whose second
        backward pass is faster than PyTorch's own.

    Returns
    -------
    grads : list of torch.Tensor, or None
        The gradients that still depend on the parameters, with their graph
        kept for a second backward pass. ``None`` when the loss does not
        depend on any leaf.
    used : list of int
        The index in ``leaves`` of each entry of ``grads``.
    """
    if train_mode:
        state = dict(state)
        for name, buffer in model.named_buffers():
            state[name] = buffer.clone()

    rules = second_order_rules() if layer_rules else nullcontext()
    with evaluation_mode(model, train_mode), twice_differentiable(), rules:
        output = torch.func.functional_call(model, state, (inputs,))
        loss = loss_fn(output, targets)
    check_loss(loss, index)
    if not loss.requires_grad:
        return None, []

    grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    # A gradient without a graph is constant in the parameters, so its rows of
    # the Hessian are zero and it takes no part in the second backward pass.
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    return [grads[i] for i in used], used


def second_order(
    grads: list[torch.Tensor],
    used: list[int],
    leaves: list[torch.Tensor],
    layout: ParameterLayout,
    Vt: torch.Tensor,
    *,
    retain: bool,
) -> torch.Tensor:
    """Return the batch Hessian times each row of ``Vt``, shape ``(k, n)``.

    Row ``j`` is the gradient of :math:`\\nabla L \\cdot v_j`, one backward
    pass through the graph of ``grads`` per row (Pearlmutter 1994). The graph
    is kept after the last row when ``retain`` is true.
    """
    product = torch.zeros_like(Vt)
    if not grads:
        return product
    k = Vt.shape[0]
    for j in range(k):
        pieces = layout.unflatten(Vt[j])
        grad_outputs = [pieces[layout.names[i]] for i in used]
        columns = torch.autograd.grad(
            grads,
            leaves,
            grad_outputs=grad_outputs,
            retain_graph=retain or j < k - 1,
            allow_unused=True,
        )
        for entry, column in zip(layout, columns, strict=True):
            if column is not None:
                product[j, entry.slice] = column.reshape(-1)
    return product
