r"""The loss along lines and planes through a model's parameters.

The loss landscape around the parameters :math:`\theta` is the dataset risk
:math:`L` along one direction or over a plane spanned by two directions,

.. math::

    f(\alpha) = L(\theta + \alpha\, d_1), \qquad
    g(\alpha, \beta) = L(\theta + \alpha\, d_1 + \beta\, d_2).

PyHessian (Yao et al. 2020, Figure 1) takes the top two Hessian eigenvectors
as :math:`d_1, d_2`, which shows the curvature the eigenvalues measure. Li et
al. (2018) take random directions rescaled filter by filter to the norm of
the weights (:func:`filter_normalized_direction`), so that plots of networks
with different weight scales compare.

Every function here evaluates the model through
:func:`torch.func.functional_call` with perturbed copies of the parameters,
so the caller's model is never modified: its parameters, buffers, ``.grad``
and the train/eval mode of every submodule are the same afterwards, bit for
bit.

References
----------
H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the loss
landscape of neural nets", NeurIPS 2018. https://arxiv.org/abs/1712.09913

Z. Yao, A. Gholami, K. Keutzer and M. W. Mahoney, "PyHessian: Neural
networks through the lens of the Hessian", IEEE BigData 2020.
https://arxiv.org/abs/1912.07145
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hessop._data import BatchSource, NumSamplesFn, count_samples, to_device
from hessop._grid import Direction, evaluate_grid, functional_state
from hessop._model import ParamsArg, evaluation_mode, select_parameters
from hessop._mpi import allreduce_int, allreduce_sum, run_collectively
from hessop._operator_checks import check_loss, resolve_reduction

__all__ = [
    "LossLandscape",
    "filter_normalized_direction",
    "loss_gradient",
    "loss_landscape_1d",
    "loss_landscape_2d",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LossLandscape:
    """The dataset risk on a line or a grid around the parameters.

    Attributes
    ----------
    coordinates : tuple of numpy.ndarray
        ``(alphas,)`` for a line, ``(alphas, betas)`` for a plane: the step
        along each direction, in units of that direction's length.
    losses : numpy.ndarray
        Shape ``(len(alphas),)`` or ``(len(alphas), len(betas))``;
        ``losses[i, j]`` is :math:`L(\\theta + \\alpha_i d_1 + \\beta_j d_2)`.
        A point where the loss overflows contains ``inf`` or ``nan``.
    center_loss : float
        :math:`L(\\theta)`, evaluated separately.
    num_evaluations : int
        Passes over the data: one per grid point plus one for the center.
    num_samples : int
        :math:`N`, the samples in each pass (over all ranks under MPI).
    """

    coordinates: tuple[np.ndarray, ...]
    losses: np.ndarray
    center_loss: float
    num_evaluations: int
    num_samples: int

    def __repr__(self) -> str:
        shape = "x".join(str(c.size) for c in self.coordinates)
        return (
            f"LossLandscape(grid={shape}, center_loss={self.center_loss!r}, "
            f"num_evaluations={self.num_evaluations}, num_samples={self.num_samples})"
        )


def filter_normalized_direction(
    model: nn.Module,
    params: ParamsArg = None,
    *,
    seed: int | None = None,
    ignore_bias_bn: bool = True,
) -> dict[str, torch.Tensor]:
    r"""Draw a random direction normalised filter by filter (Li et al. 2018).

    Each entry is first drawn from a standard normal distribution. A filter
    :math:`d_{i,j}` is slice ``j`` along the first dimension of a parameter
    with two or more dimensions, such as an output channel of a convolution
    or a row of a linear layer. Every filter is rescaled to the norm of the
    same filter of the weights,

    .. math::

        d_{i,j} \leftarrow \frac{d_{i,j}}{\lVert d_{i,j} \rVert}
        \lVert \theta_{i,j} \rVert,

    so a step :math:`\alpha = 1` moves every filter by its own size. A filter
    of zero weights gets a zero direction.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    params : iterable of parameters or names, optional
        The parameters to perturb, as in :class:`hessop.HessianOperator`;
        ``None`` selects every parameter with ``requires_grad``.
    seed : int, optional
        Seed of the Gaussian draws. The entries are drawn in float64 on the
        CPU, parameter by parameter in the order of ``params``, so a seed
        gives the same direction on every device and every MPI rank.
        ``None`` draws from fresh entropy.
    ignore_bias_bn : bool, default True
        Give the parameters with fewer than two dimensions (biases,
        BatchNorm scales and shifts) a zero direction, as Li et al. do by
        default. With ``False`` their direction is the parameter itself,
        the one-entry-per-filter case of the rule above with the sign of
        the weight.

    Returns
    -------
    dict of str to torch.Tensor
        Parameter name to direction, each of the parameter's shape, dtype
        and device.

    Examples
    --------
    >>> import torch
    >>> from hessop.landscape import filter_normalized_direction
    >>> model = torch.nn.Linear(3, 2)
    >>> d = filter_normalized_direction(model, seed=0)
    >>> torch.allclose(d["weight"].norm(dim=1), model.weight.detach().norm(dim=1))
    True
    >>> d["bias"].abs().sum().item()
    0.0
    """
    names = select_parameters(model, params)
    if not names:
        raise ValueError(
            "no parameters selected: the model has no parameters with "
            "requires_grad=True; pass params=[...] to select some"
        )
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))

    direction = {}
    for name in names:
        weight = model.get_parameter(name).detach()
        draw = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
        reference = weight.to(device="cpu", dtype=torch.float64)
        if weight.dim() <= 1:
            draw = torch.zeros_like(draw) if ignore_bias_bn else reference.clone()
        else:
            filters = draw.reshape(weight.shape[0], -1)
            draw_norms = torch.linalg.vector_norm(filters, dim=1, keepdim=True)
            weight_norms = torch.linalg.vector_norm(
                reference.reshape(weight.shape[0], -1), dim=1, keepdim=True
            )
            # A Gaussian filter has zero norm with probability zero, but the
            # where() still gives a filter of zero weights a zero direction.
            scale = torch.where(
                draw_norms > 0, weight_norms / draw_norms, torch.zeros_like(draw_norms)
            )
            draw = (filters * scale).reshape(weight.shape)
        direction[name] = draw.to(device=weight.device, dtype=weight.dtype)
    return direction


def loss_landscape_1d(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    direction: Direction,
    alphas: Sequence[float] | np.ndarray,
    *,
    reduction: str | None = None,
    num_samples_fn: NumSamplesFn | None = None,
    train_mode: bool = False,
    comm: Any = None,
    progress: bool = False,
) -> LossLandscape:
    r"""Evaluate the loss along one direction, :math:`L(\theta + \alpha d)`.

    Parameters
    ----------
    model : torch.nn.Module
        The network, evaluated as ``loss_fn(model(inputs), targets)``.
    loss_fn : callable
        Scalar loss with reduction ``'mean'`` or ``'sum'``.
    data : tuple or iterable of tuples
        One batch ``(inputs, targets)`` or a re-iterable collection of
        batches, as for :class:`hessop.HessianOperator`. Under MPI, this
        rank's batches.
    direction : mapping of str to torch.Tensor
        Parameter name to direction tensor of the parameter's shape, such as
        ``H.unflatten(torch.from_numpy(v))`` for an eigenvector ``v`` of
        ``H`` or the output of :func:`filter_normalized_direction`.
        Parameters not in the mapping stay fixed.
    alphas : array_like
        Steps along ``direction``, in units of its length.
    reduction : {'mean', 'sum'}, optional
        As for :class:`hessop.HessianOperator`: ``'mean'`` weights each
        batch mean by its sample count, so the result is the mean over all
        samples whatever the batch sizes.
    num_samples_fn : callable, optional
        Sample count of a batch, default ``len(targets)``.
    train_mode : bool, default False
        Evaluate in train mode (BatchNorm on batch statistics). The model's
        buffers are not updated either way.
    comm : mpi4py communicator, optional
        Sum the rank-local losses over the ranks, so every rank returns the
        landscape of all ranks' data. The grid must be the same on all ranks.
    progress : bool, default False
        Show a ``tqdm`` bar over the grid points (on rank 0 only).

    Returns
    -------
    LossLandscape

    Notes
    -----
    Cost: ``len(alphas) + 1`` forward passes over the data, no backward
    pass. The center :math:`L(\theta)` is always evaluated, so it is exact
    even when ``alphas`` does not contain 0.
    """
    alphas = _check_grid(alphas, "alphas")
    points = alphas[:, None]
    losses, center, num_samples = evaluate_grid(
        model,
        loss_fn,
        data,
        [direction],
        points,
        reduction,
        num_samples_fn,
        train_mode,
        comm,
        progress,
        "loss landscape 1D",
    )
    return LossLandscape((alphas,), losses, center, len(points) + 1, num_samples)


def loss_landscape_2d(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    directions: Sequence[Direction],
    alphas: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray,
    *,
    reduction: str | None = None,
    num_samples_fn: NumSamplesFn | None = None,
    train_mode: bool = False,
    comm: Any = None,
    progress: bool = False,
) -> LossLandscape:
    r"""Evaluate the loss on a plane, :math:`L(\theta + \alpha d_1 + \beta d_2)`.

    Parameters
    ----------
    model, loss_fn, data
        As for :func:`loss_landscape_1d`.
    directions : sequence of two mappings of str to torch.Tensor
        :math:`d_1` and :math:`d_2`, as the ``direction`` of
        :func:`loss_landscape_1d`. They need not be orthogonal, but a plot of
        the plane is distorted unless they are orthogonal and of equal
        length. Two Hessian eigenvectors are, and two random directions in
        many dimensions nearly are.
    alphas, betas : array_like
        Steps along :math:`d_1` and :math:`d_2`.
    reduction, num_samples_fn, train_mode, comm, progress
        As for :func:`loss_landscape_1d`.

    Returns
    -------
    LossLandscape
        ``losses[i, j]`` at ``(alphas[i], betas[j])``.

    Notes
    -----
    Cost: ``len(alphas) * len(betas) + 1`` forward passes over the data.
    """
    if isinstance(directions, Mapping) or len(directions) != 2:
        raise ValueError(
            "directions must be a sequence of two direction mappings (d1, d2)"
        )
    alphas = _check_grid(alphas, "alphas")
    betas = _check_grid(betas, "betas")
    grid_alpha, grid_beta = np.meshgrid(alphas, betas, indexing="ij")
    points = np.stack([grid_alpha.ravel(), grid_beta.ravel()], axis=1)
    losses, center, num_samples = evaluate_grid(
        model,
        loss_fn,
        data,
        list(directions),
        points,
        reduction,
        num_samples_fn,
        train_mode,
        comm,
        progress,
        "loss landscape 2D",
    )
    return LossLandscape(
        (alphas, betas),
        losses.reshape(alphas.size, betas.size),
        center,
        len(points) + 1,
        num_samples,
    )


def loss_gradient(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Any,
    params: ParamsArg = None,
    *,
    reduction: str | None = None,
    num_samples_fn: NumSamplesFn | None = None,
    train_mode: bool = False,
    comm: Any = None,
) -> dict[str, torch.Tensor]:
    r"""Compute the gradient :math:`\nabla L(\theta)` of the dataset risk.

    The risk and its weighting are those of :class:`hessop.HessianOperator`,
    so with the Hessian :math:`H` the second-order Taylor model along a unit
    direction :math:`v` is :math:`L(\theta) + \alpha \nabla L^\top v +
    \tfrac{1}{2} \alpha^2 v^\top H v`.

    Parameters
    ----------
    model, loss_fn, data
        As for :func:`loss_landscape_1d`.
    params : iterable of parameters or names, optional
        The parameters to differentiate, as in :class:`hessop.HessianOperator`.
    reduction, num_samples_fn, train_mode, comm
        As for :func:`loss_landscape_1d`.

    Returns
    -------
    dict of str to torch.Tensor
        Parameter name to gradient, on the parameter's device and dtype.
        Under MPI the sum over all ranks' data, the same on every rank.

    Notes
    -----
    Cost: one forward and one backward pass over the data. ``.grad`` of the
    model's parameters is not touched.
    """
    names = select_parameters(model, params)
    if not names:
        raise ValueError(
            "no parameters selected: the model has no parameters with "
            "requires_grad=True; pass params=[...] to select some"
        )
    reduction = resolve_reduction(loss_fn, reduction)
    source = BatchSource(data)
    leaves = [model.get_parameter(name).detach().requires_grad_(True) for name in names]
    device, dtype = leaves[0].device, leaves[0].dtype

    def local() -> tuple[list[torch.Tensor], int]:
        totals = [torch.zeros_like(leaf, dtype=torch.float64) for leaf in leaves]
        num_samples = 0
        state = functional_state(
            model, dict(zip(names, leaves, strict=True)), train_mode
        )
        with evaluation_mode(model, train_mode), torch.enable_grad():
            for index, (inputs, targets) in enumerate(source):
                count = count_samples(inputs, targets, index, num_samples_fn)
                if count == 0:
                    continue
                num_samples += count
                output = torch.func.functional_call(
                    model, state, (to_device(inputs, device, dtype),)
                )
                loss = loss_fn(output, to_device(targets, device, dtype))
                check_loss(loss, index)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                weight = count if reduction == "mean" else 1
                for total, grad in zip(totals, grads, strict=True):
                    if grad is not None:
                        total.add_(grad.to(torch.float64), alpha=weight)
        return totals, num_samples

    totals, local_samples = run_collectively(comm, local, "the loss gradient")
    num_samples = allreduce_int(comm, local_samples)
    if num_samples == 0:
        raise ValueError(
            "data has no samples: every batch is empty; pass at least one batch "
            "with samples"
        )
    flat = torch.cat([total.reshape(-1) for total in totals])
    allreduce_sum(comm, flat)
    if reduction == "mean":
        flat /= num_samples

    gradient = {}
    offset = 0
    for name, leaf in zip(names, leaves, strict=True):
        piece = flat[offset : offset + leaf.numel()].reshape(leaf.shape)
        gradient[name] = piece.to(dtype=leaf.dtype)
        offset += leaf.numel()
    return gradient


def _check_grid(values: Any, name: str) -> np.ndarray:
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of steps, got shape {grid.shape}"
        )
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"{name} must be finite, got {values!r}")
    return grid
