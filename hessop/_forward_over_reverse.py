"""Hessian-vector products of one batch by forward-over-reverse differentiation.

The product :math:`Hv` is the directional derivative of the gradient,
computed with :func:`torch.func.jvp` of :func:`torch.func.grad`. A batch
can instead be linearised once with :func:`torch.func.linearize`. It traces
the forward-mode pass into a graph and folds the values at the current
parameters into it as constants, so each later product runs only the
tangent part of that graph.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hessop._graph_cache import CachedBatch
from hessop._layout import ParameterLayout
from hessop._model import evaluation_mode, twice_differentiable
from hessop._operator_checks import check_loss

# torch.func.linearize folds constants with torch.fx, which warns about every
# folded attribute (torch 2.13). The warning is not about the caller's code.
_FOLD_WARNING = "Attempted to insert a get_attr Node"

GradientFn = Callable[..., tuple[tuple[torch.Tensor, ...], torch.Tensor]]


@dataclass
class LinearizedBatch(CachedBatch):
    """A batch's gradient linearised at the current parameters.

    ``grads`` and ``used`` are empty; ``jvp`` maps a tuple of tangents, one
    per parameter, to ``((Hv pieces), directional derivative of the loss)``.
    """

    jvp: Callable[..., Any] | None = None


def gradient_function(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    fixed: dict[str, torch.Tensor],
    names: Sequence[str],
    inputs: Any,
    targets: Any,
    *,
    train_mode: bool,
) -> GradientFn:
    """Return the function ``parameters -> (gradient, loss)`` of one batch.

    The parameters are passed as separate positional tensors in the order of
    ``names``. In train mode each call evaluates the model on copies of its
    buffers, made inside the function, because torch.func rejects in-place
    updates of tensors created outside a transform.
    """

    def loss_of(*parameters: torch.Tensor) -> torch.Tensor:
        state = dict(fixed)
        state.update(zip(names, parameters, strict=True))
        if train_mode:
            for name, buffer in model.named_buffers():
                state[name] = buffer.clone()
        with evaluation_mode(model, train_mode), twice_differentiable():
            output = torch.func.functional_call(model, state, (inputs,))
            return loss_fn(output, targets)

    return torch.func.grad_and_value(loss_of, argnums=tuple(range(len(names))))


def linearize_checked(
    gradient: GradientFn,
    primals: Sequence[torch.Tensor],
    layout: ParameterLayout,
    Vt: torch.Tensor,
    index: int,
) -> tuple[Callable[..., Any], torch.Tensor]:
    r"""Linearise ``gradient`` at ``primals`` and multiply each row of ``Vt``.

    The first row is also multiplied by :func:`torch.func.jvp`, and the two
    results must agree to :math:`\sqrt{\epsilon}` relative. In PyTorch 2.13
    :func:`torch.func.linearize` returned wrong values for convolutions with
    ``padding_mode='circular'`` where ``jvp`` was right, and it crashed the
    interpreter for :class:`torch.nn.MSELoss`, where ``jvp`` raises first.

    Returns
    -------
    jvp : callable
        Maps tangents (one per primal) to the tangents of ``(gradient, loss)``.
    product : torch.Tensor
        The batch Hessian times each row of ``Vt``, shape ``(k, n)``.

    Raises
    ------
    RuntimeError
        If torch.func fails on the model, or the two products disagree.
    """
    expected = jvp_products(gradient, primals, layout, Vt[:1], index)
    with _func_errors(index), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FOLD_WARNING)
        (_, loss), jvp = torch.func.linearize(gradient, *primals)
        check_loss(loss, index)
        product = linearized_products(jvp, layout, Vt)
    difference = float(torch.linalg.vector_norm(product[0] - expected[0]))
    scale = float(torch.linalg.vector_norm(expected[0]))
    tolerance = math.sqrt(torch.finfo(Vt.dtype).eps)
    if not difference <= tolerance * scale:
        relative = difference / max(scale, torch.finfo(Vt.dtype).tiny)
        raise RuntimeError(
            f"torch.func.linearize gave a Hessian-vector product of batch {index} "
            f"that differs from torch.func.jvp's by {relative:.2e} relative "
            f"(tolerance {tolerance:.1e}), a defect of PyTorch {torch.__version__}; "
            "use backend='autograd', the default"
        )
    return jvp, product


def linearized_products(
    jvp: Callable[..., Any], layout: ParameterLayout, Vt: torch.Tensor
) -> torch.Tensor:
    """Return the batch Hessian times each row of ``Vt`` from a linearisation."""
    product = torch.empty_like(Vt)
    for j in range(Vt.shape[0]):
        tangents = _tangents(layout, Vt[j])
        pieces, _ = jvp(*tangents)
        _write_row(product, j, layout, pieces)
    return product


def jvp_products(
    gradient: GradientFn,
    primals: Sequence[torch.Tensor],
    layout: ParameterLayout,
    Vt: torch.Tensor,
    index: int,
) -> torch.Tensor:
    """Return the batch Hessian times each row of ``Vt``, one ``jvp`` per row.

    Each row repeats the forward pass and the backward pass, because
    :func:`torch.func.jvp` computes the primal values with the tangents.
    """
    product = torch.empty_like(Vt)
    for j in range(Vt.shape[0]):
        tangents = _tangents(layout, Vt[j])
        with _func_errors(index):
            (_, loss), (pieces, _) = torch.func.jvp(gradient, tuple(primals), tangents)
        check_loss(loss, index)
        _write_row(product, j, layout, pieces)
    return product


@contextmanager
def _func_errors(index: int) -> Iterator[None]:
    """Re-raise a torch.func failure with the batch and the way around it."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as error:
        # NOTE: PyTorch 2.13 fails here for nn.MSELoss ('ZeroTensors are
        # immutable') and nn.HuberLoss (no forward derivative of its backward).
        raise RuntimeError(
            f"backend='func' failed on batch {index}, because torch.func cannot "
            "differentiate every operator in forward mode over reverse mode; use "
            f"backend='autograd', the default. PyTorch's error: {error}"
        ) from error


def compiled_product(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    fixed: dict[str, torch.Tensor],
    names: Sequence[str],
    *,
    train_mode: bool,
) -> Callable[..., Any]:
    """Return a compiled Hessian-vector product of any batch.

    The function maps ``(primals, tangents, inputs, targets)`` to
    ``(loss, Hv pieces)`` by :func:`torch.func.jvp`, under
    :func:`torch.compile`. One compiled function serves every batch, and a
    batch of another shape (a short last batch) compiles it once more.
    """

    def product(primals, tangents, inputs, targets):
        gradient = gradient_function(
            model, loss_fn, fixed, names, inputs, targets, train_mode=train_mode
        )
        (_, loss), (pieces, _) = torch.func.jvp(gradient, primals, tangents)
        return loss, pieces

    return torch.compile(product)


def compiled_products(
    product: Callable[..., Any],
    primals: Sequence[torch.Tensor],
    inputs: Any,
    targets: Any,
    layout: ParameterLayout,
    Vt: torch.Tensor,
    index: int,
) -> torch.Tensor:
    """Return the batch Hessian times each row of ``Vt`` with a compiled product."""
    result = torch.empty_like(Vt)
    for j in range(Vt.shape[0]):
        try:
            loss, pieces = product(
                tuple(primals), _tangents(layout, Vt[j]), inputs, targets
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"compile=True failed on batch {index}, because torch.compile "
                "could not compile this model's forward-over-reverse product; "
                f"use compile=False. PyTorch's error: {error}"
            ) from error
        check_loss(loss, index)
        _write_row(result, j, layout, pieces)
    return result


def _tangents(layout: ParameterLayout, row: torch.Tensor) -> tuple[torch.Tensor, ...]:
    pieces = layout.unflatten(row)
    return tuple(pieces[name] for name in layout.names)


def _write_row(
    product: torch.Tensor,
    j: int,
    layout: ParameterLayout,
    pieces: Sequence[torch.Tensor],
) -> None:
    for entry, piece in zip(layout, pieces, strict=True):
        product[j, entry.slice] = piece.reshape(-1)


def linearization_bytes(
    jvp: Callable[..., Any], primals: Sequence[torch.Tensor]
) -> float:
    """Return the bytes of tensors held by the graph inside ``jvp``, primals excluded.

    ``torch.func.linearize`` keeps its folded graph, an ``nn.Module``, in the
    closure of the function it returns (torch 2.2 to 2.13).
    """
    # NOTE: this reads a private detail of torch.func.linearize. If a later
    # PyTorch stores the graph elsewhere, no module is found and the estimate
    # is infinite, so a cache budget keeps no linearised batch.
    seen = {p.untyped_storage().data_ptr() for p in primals}
    modules = [
        cell.cell_contents
        for cell in jvp.__closure__ or ()
        if isinstance(cell.cell_contents, nn.Module)
    ]
    if not modules:
        return math.inf
    total = 0
    for root in modules:
        for module in root.modules():
            tensors = [*module._parameters.values(), *module._buffers.values()]
            tensors += [v for v in vars(module).values() if isinstance(v, torch.Tensor)]
            for tensor in tensors:
                if tensor is None:
                    continue
                try:
                    storage = tensor.untyped_storage()
                    pointer, nbytes = storage.data_ptr(), storage.nbytes()
                except RuntimeError:
                    # Some folded constants (seen with BatchNorm buffers
                    # outside the parameter block) have no accessible storage;
                    # count the tensor's own size.
                    total += tensor.numel() * tensor.element_size()
                    continue
                if pointer not in seen:
                    seen.add(pointer)
                    total += nbytes
    return total
