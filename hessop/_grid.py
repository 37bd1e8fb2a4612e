"""Loss of a model at points around its parameters, for the loss landscapes.

A point is a vector of coefficients :math:`c` for a few directions
:math:`d_k`. The loss there is the dataset risk at :math:`\\theta + \\sum_k
c_k d_k`, evaluated with :func:`torch.func.functional_call` on perturbed
copies of the parameters, so the model itself is never modified.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hessop._data import BatchSource, NumSamplesFn, count_samples, to_device
from hessop._model import evaluation_mode
from hessop._mpi import allreduce_int, allreduce_sum, get_rank, run_collectively
from hessop._operator_checks import check_loss, resolve_reduction

# The logger of the public module, whose warnings users configure.
logger = logging.getLogger("hessop.landscape")

Direction = Mapping[str, torch.Tensor]


def functional_state(
    model: nn.Module, replaced: Mapping[str, torch.Tensor], train_mode: bool
) -> dict[str, torch.Tensor]:
    """Return the tensors to pass to ``functional_call`` for one evaluation.

    They are ``replaced`` and, in train mode, copies of the buffers, which
    BatchNorm then updates instead of the model's own.
    """
    state = dict(replaced)
    if train_mode:
        for name, buffer in model.named_buffers():
            state[name] = buffer.clone()
    return state


def _check_directions(
    model: nn.Module, directions: Sequence[Direction]
) -> tuple[list[str], list[torch.Tensor], list[list[torch.Tensor]]]:
    """Return the perturbed names, their parameters and the direction tensors."""
    parameters = dict(model.named_parameters())
    names: list[str] = []
    for index, direction in enumerate(directions):
        if not isinstance(direction, Mapping) or not direction:
            raise TypeError(
                f"direction {index} must be a non-empty mapping of parameter name "
                f"to tensor, got {type(direction).__name__}"
            )
        for name, tensor in direction.items():
            if name not in parameters:
                raise ValueError(
                    f"direction {index} has an entry {name!r}, which is not a "
                    "parameter of the model (see model.named_parameters())"
                )
            if tuple(tensor.shape) != tuple(parameters[name].shape):
                raise ValueError(
                    f"direction {index} entry {name!r} has shape "
                    f"{tuple(tensor.shape)}, but the parameter has shape "
                    f"{tuple(parameters[name].shape)}"
                )
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"direction {index} entry {name!r} is not finite")
            if name not in names:
                names.append(name)

    bases = [parameters[name].detach() for name in names]
    vectors = []
    for direction in directions:
        column = []
        for name, base in zip(names, bases, strict=True):
            tensor = direction.get(name)
            if tensor is None:
                column.append(torch.zeros_like(base))
            else:
                column.append(tensor.detach().to(device=base.device, dtype=base.dtype))
        vectors.append(column)
    return names, bases, vectors


def evaluate_grid(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    directions: list[Direction],
    points: np.ndarray,
    reduction: str | None,
    num_samples_fn: NumSamplesFn | None,
    train_mode: bool,
    comm: Any,
    progress: bool,
    description: str,
) -> tuple[np.ndarray, float, int]:
    """Return the risk at each row of ``points``, the center risk and N.

    Row ``p`` of ``points`` contains the coefficients of the directions.
    Every rank sums its sample-weighted batch losses at all points, and one
    ``Allreduce`` then adds the ranks' sums.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    reduction = resolve_reduction(loss_fn, reduction)
    source = BatchSource(data)
    names, bases, vectors = _check_directions(model, directions)
    device, dtype = bases[0].device, bases[0].dtype
    show = progress and get_rank(comm) == 0

    def loss_sum(coefficients: np.ndarray) -> tuple[float, int]:
        replaced = {}
        for position, (name, base) in enumerate(zip(names, bases, strict=True)):
            value = base.clone()
            for coefficient, column in zip(coefficients, vectors, strict=True):
                if coefficient != 0.0:
                    value.add_(column[position], alpha=float(coefficient))
            replaced[name] = value
        state = functional_state(model, replaced, train_mode)
        total = 0.0
        num_samples = 0
        for index, (inputs, targets) in enumerate(source):
            count = count_samples(inputs, targets, index, num_samples_fn)
            if count == 0:
                continue
            num_samples += count
            output = torch.func.functional_call(
                model, state, (to_device(inputs, device, dtype),)
            )
            loss = loss_fn(output, to_device(targets, device, dtype))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                check_loss(loss, index)
            weight = count if reduction == "mean" else 1
            total += float(loss) * weight
        return total, num_samples

    def local() -> tuple[np.ndarray, float, int]:
        sums = np.empty(len(points))
        bar = tqdm(
            points,
            desc=description,
            unit="point",
            disable=not show,
            leave=False,
        )
        with evaluation_mode(model, train_mode), torch.no_grad():
            center, num_samples = loss_sum(np.zeros(len(directions)))
            for index, coefficients in enumerate(bar):
                sums[index], _ = loss_sum(coefficients)
        return sums, center, num_samples

    sums, center, local_samples = run_collectively(comm, local, description)
    num_samples = allreduce_int(comm, local_samples)
    if num_samples == 0:
        raise ValueError(
            "data has no samples: every batch is empty; pass at least one batch "
            "with samples"
        )
    totals = torch.from_numpy(np.append(sums, center))
    allreduce_sum(comm, totals)
    if reduction == "mean":
        totals /= num_samples
    totals = totals.numpy()

    losses, center_loss = totals[:-1], float(totals[-1])
    if not math.isfinite(center_loss):
        logger.warning("%s: the loss at the center is %s", description, center_loss)
    bad = int(np.count_nonzero(~np.isfinite(losses)))
    if bad:
        logger.warning(
            "%s: the loss is not finite at %d of %d grid points (NaN or inf); "
            "a smaller range keeps the grid where the model still computes",
            description,
            bad,
            len(losses),
        )
    return losses, center_loss, num_samples
