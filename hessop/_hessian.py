"""The Hessian of a model's loss over a whole dataset as a LinearOperator."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hessop._data import BatchSource, NumSamplesFn
from hessop._graph_cache import GraphCache, parse_budget
from hessop._layout import ParameterLayout
from hessop._model import (
    ParamsArg,
    select_parameters,
)
from hessop._mpi import (
    allreduce_int,
    get_rank,
    get_size,
    quiet_non_root_logging,
    run_collectively,
)
from hessop._operator_checks import (
    NUMPY_DTYPES,
    resolve_device,
    resolve_dtype,
    resolve_reduction,
)
from hessop._operator_state import OperatorState
from hessop._passes import ProductOptions, ProductPasses, check_block_size
from hessop._scipy_interface import ScipyInterface

__all__ = ["HessianOperator"]

logger = logging.getLogger(__name__)

# Default maximum number of columns per pass in matmat and hvp. It matches the
# default block of hessop.trace, so that each of its matmat calls is one pass
# over the data.
DEFAULT_BLOCK_SIZE = 16


class HessianOperator(ProductPasses, OperatorState, ScipyInterface):
    r"""Hessian of a model's loss over a whole dataset, as a LinearOperator.

    The operator is the Hessian, with respect to the selected parameters
    :math:`\theta`, of the dataset risk. With the loss reduction ``'mean'``
    and :math:`N` samples in all batches together,

    .. math::

        L(\theta) = \frac{1}{N} \sum_{i=1}^{N} \ell_i(\theta)
                  = \sum_{b} \frac{n_b}{N} \bar\ell_b(\theta),
        \qquad
        H v = \sum_{b} \frac{n_b}{N} \nabla^2_\theta \bar\ell_b(\theta)\, v,

    where batch :math:`b` contains :math:`n_b` samples and :math:`\bar\ell_b`
    is the mean loss that ``loss_fn`` returns for it. Weighting by
    :math:`n_b` makes a short last batch exact; a plain average of batch
    means would not be. With ``'sum'``, :math:`L(\theta) = \sum_i
    \ell_i(\theta)` and every batch has weight 1.

    Each product :math:`Hv` is a Hessian-vector product by double
    backpropagation (Pearlmutter 1994): one forward pass, one backward pass
    that keeps its graph, and one backward pass of :math:`\nabla L \cdot v`
    per batch. With a single batch the first-order graph is built once and
    reused, so each later product costs only the second backward pass; with
    several batches, ``cache_budget`` keeps their graphs the same way.
    ``backend='func'`` computes the same products by forward-over-reverse
    differentiation instead.

    Parameters
    ----------
    model : torch.nn.Module
        The network. It is evaluated as ``loss_fn(model(inputs), targets)``.
    loss_fn : callable
        Returns a scalar loss tensor from ``(model(inputs), targets)``, with
        reduction ``'mean'`` or ``'sum'`` over the batch, such as
        ``torch.nn.CrossEntropyLoss()``.
    data : tuple or iterable of tuples
        One batch ``(inputs, targets)`` given as a ``tuple``, or a
        re-iterable collection of batches: a list of tuples or a
        ``torch.utils.data.DataLoader``. ``inputs`` is a tensor, or a dict
        or tuple of tensors passed to ``model`` as one argument. Tensors are
        moved to ``device``; floating-point ones are also cast to ``dtype``.
    params : iterable of parameters or names, optional
        The parameter block. ``None`` (default) selects every parameter with
        ``requires_grad``. Otherwise parameters of ``model``, parameter names
        or submodule names (a submodule selects its parameters with
        ``requires_grad``). The operator is then the Hessian with respect to
        that block, the other parameters held fixed.
    reduction : {'mean', 'sum'}, optional
        The reduction of ``loss_fn``. ``None`` reads it from
        ``loss_fn.reduction`` and assumes ``'mean'`` when there is none.
    num_samples_fn : callable, optional
        ``num_samples_fn(inputs, targets)`` returns a batch's sample count,
        the :math:`n_b` above, for losses averaged over something other than
        ``len(targets)`` (tokens, dict inputs). Default ``len(targets)``.
    train_mode : bool, default False
        Evaluate the model in train mode (BatchNorm on batch statistics,
        Dropout active) instead of eval mode. Buffers are never updated
        either way.
    device : str or torch.device, optional
        Device of the products. Defaults to the selected parameters' device.
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``. Defaults to the selected
        parameters' dtype; float16 and bfloat16 parameters are upcast to
        float32 with a warning, because second derivatives in half precision
        are too inaccurate to be useful.
    check_deterministic : bool, default True
        At construction, multiply one random vector twice, each time over the
        full data, and raise if the two products differ by more than
        :math:`\sqrt{\epsilon}` relative (:math:`\epsilon` the machine
        epsilon of ``dtype``). This catches an operator that is not a fixed
        matrix. It costs two products; ``False`` skips it and costs one pass
        over the data without the model, to count the samples.
    progress : bool, default False
        Show a ``tqdm`` progress bar over the batches of each product (on
        rank 0 only under MPI).
    cache_budget : int, float or str, default 0
        Memory, in bytes or as a string such as ``'2GiB'`` or
        ``'unlimited'``, for the first-order graphs of batches kept between
        products. A kept graph makes each later product of that batch cost
        only its second backward pass. With a list of batches the leading
        batches that fit are kept; with another iterable (a ``DataLoader``)
        graphs are kept only when all batches fit, because a loader may
        reorder its batches between passes. A single batch given as a tuple
        always keeps its graph. The memory of a graph is estimated from the
        tensors autograd saves for it.
    backend : {'autograd', 'func'}, default 'autograd'
        How each batch's product is computed. 'autograd': double
        backpropagation with :func:`torch.autograd.grad`, as described
        above. 'func': forward over reverse with :mod:`torch.func`. A batch
        whose result may be cached (a single batch, or one within
        ``cache_budget``) is linearised once with
        :func:`torch.func.linearize`, and each later product runs only the
        tangent part of the traced graph. Any other batch runs
        :func:`torch.func.jvp` of :func:`torch.func.grad` for each vector,
        forward pass included. The first product of a linearised batch is
        checked against ``jvp``. torch.func cannot differentiate every
        operator this way (PyTorch 2.13: ``nn.MSELoss``, ``nn.HuberLoss``),
        and a failure raises a ``RuntimeError`` that names the batch. The
        default is the faster one in measurement (see Notes).
    layer_rules : bool, default True
        With backend 'autograd', evaluate convolutions, BatchNorm in eval
        mode and ReLU (not in place) through hessop's own second-derivative
        rules instead of PyTorch's. The products agree to rounding error;
        only their speed differs (see Notes). 'func' has no rules to replace
        and ignores the flag.
    compile : bool, default False
        With backend 'func', run every product through one
        :func:`torch.compile` of ``jvp(grad(loss))``, forward pass included,
        and keep no batch linearised. The first product of each batch shape
        pays the compilation. Backend 'autograd' rejects it, because
        ``torch.compile`` cannot compile double backward (PyTorch 2.13:
        "aot_autograd does not currently support double backward").
    block_size : int or None, default 16
        Most columns of ``matmat`` and ``hvp`` per pass over the data. A pass
        holds about four blocks of ``block_size`` vectors of length ``n`` on
        the device, besides the caller's arrays, so the block bounds the
        memory of a wide ``matmat``. Each further pass repeats the forward
        and first backward pass of every batch whose graph is not cached.
        ``None`` puts all columns in one pass.
    comm : mpi4py communicator, optional
        Distribute the products over MPI ranks. Each rank passes its own
        batches as ``data`` (see :func:`hessop.partition`); each product sums
        the rank's sample-weighted batch products, and one ``Allreduce``
        sums them over ranks before the division by the global :math:`N`.
        The result is the operator of all ranks' data together, identical on
        every rank. A rank with no batches takes part and contributes zero.
        Construction checks that every rank holds the same parameter layout
        and values. ``None`` (default) runs serially and needs no mpi4py.

    Attributes
    ----------
    layout : ParameterLayout
        Name, shape and offset of each selected parameter in a flat vector.
    num_samples : int
        :math:`N`, the total number of samples (over all ranks under MPI).
    num_local_samples : int
        The samples in this rank's batches; ``num_samples`` when serial.
    num_batches : int
        The number of this rank's batches.
    comm : mpi4py communicator or None
        The communicator given at construction.
    reduction : str
        ``'mean'`` or ``'sum'``.
    device : torch.device
        Where the products run.
    torch_dtype : torch.dtype
        Precision of the products; ``dtype`` is the matching numpy dtype.
    num_matvecs : int
        Hessian-vector products computed since construction (a ``matmat``
        with ``k`` columns counts ``k``); the check at construction is not
        counted.

    Raises
    ------
    TypeError
        For a ``model`` that is not a module, a ``loss_fn`` that is not
        callable, or ``data`` that is not a batch or a re-iterable collection.
    ValueError
        For no selected parameters, no samples, a loss that is not a finite
        scalar, non-finite products, or an operator that changes between two
        products (with ``check_deterministic``).

    Notes
    -----
    The caller's model comes back untouched: the mode of every submodule is
    restored, ``.grad`` is never written (products use
    :func:`torch.autograd.grad`), ``requires_grad`` flags are not changed,
    and buffers are not modified (in train mode the forward pass updates
    copies of them). The products differentiate detached aliases of the
    parameters, so they always see the parameters' current values.

    If the model's parameters or buffers change after construction (an
    optimiser step, ``load_state_dict``), the next product notices through
    the tensors' version counters and rebuilds what it cached.

    Under MPI, every public method is collective: all ranks must call it
    with the same vector. If any rank raises (a bad batch, a non-finite loss,
    running out of memory), the ranks exchange their outcomes before the
    ``Allreduce``, and every rank raises an error that names the failing
    rank and its message.

    Cost. A product on a cached graph costs about two gradients (forward
    and backward pass). Its second backward pass runs six convolutions per
    convolution layer, four to differentiate the two convolutions of the
    first backward pass and two to differentiate the forward one, against
    three in a gradient. ``layer_rules`` brings the rest of the pass close
    to that count; ``backend='func'`` costs about the same once a batch is
    linearised, and more without a cache, because each vector then repeats
    the forward pass. The benchmark page of the documentation lists the
    ratios measured by ``benchmarks/compare.py`` for every option and for
    PyHessian, curvlinops and hessian-eigenthings.

    .. warning::
       A ``device`` or ``dtype`` different from the model's makes the
       operator work on a converted deep copy of the model, which costs the
       memory of a second model. The copy is refreshed from the model when
       the model's state changes.

    References
    ----------
    B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural
    Computation 6(1), 1994. https://doi.org/10.1162/neco.1994.6.1.147

    Examples
    --------
    >>> import torch
    >>> from hessop import HessianOperator
    >>> model = torch.nn.Linear(2, 1, bias=False).double()
    >>> x = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> y = torch.zeros(2, 1, dtype=torch.float64)
    >>> H = HessianOperator(model, torch.nn.MSELoss(), (x, y))
    >>> H.to_dense()
    array([[4., 0.],
           [0., 1.]])
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        params: ParamsArg = None,
        *,
        reduction: str | None = None,
        num_samples_fn: NumSamplesFn | None = None,
        train_mode: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        check_deterministic: bool = True,
        progress: bool = False,
        comm: Any = None,
        cache_budget: int | float | str = 0,
        backend: str = "autograd",
        layer_rules: bool = True,
        compile: bool = False,
        block_size: int | None = DEFAULT_BLOCK_SIZE,
    ):
        self.comm = comm
        self._rank = get_rank(comm)
        quiet_non_root_logging(comm)
        run_collectively(
            comm,
            lambda: self._setup(
                model,
                loss_fn,
                data,
                params,
                reduction,
                num_samples_fn,
                train_mode,
                device,
                dtype,
                progress,
                cache_budget,
                ProductOptions(backend, layer_rules, compile, block_size),
            ),
            "constructing the HessianOperator",
        )
        self._check_ranks_agree()

        n = self.layout.size
        super().__init__(dtype=NUMPY_DTYPES[self.torch_dtype], shape=(n, n))
        self.num_matvecs = 0
        self.num_samples = 0
        self.num_local_samples = 0
        self.num_batches = 0

        if check_deterministic:
            self._check_deterministic()
        else:
            local_samples, self.num_batches = run_collectively(
                comm, self._count_samples, "counting the samples"
            )
            self.num_local_samples = local_samples
            self.num_samples = allreduce_int(comm, local_samples)
        if self.num_samples == 0:
            raise ValueError(
                "data has no samples: every batch is empty"
                + (" on every rank" if comm is not None else "")
                + "; pass at least one batch with samples"
            )
        if self._rank == 0:
            logger.info(
                "HessianOperator: %d parameters in %d tensors, %d samples, "
                "reduction %r, %s on %s, %d rank(s)",
                n,
                len(self.layout),
                self.num_samples,
                self.reduction,
                self.torch_dtype,
                self.device,
                get_size(comm),
            )

    def _setup(
        self,
        model,
        loss_fn,
        data,
        params,
        reduction,
        num_samples_fn,
        train_mode,
        device,
        dtype,
        progress,
        cache_budget,
        options,
    ) -> None:
        """Validate the arguments and build this rank's state, without collectives."""
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module, got {type(model).__name__}"
            )
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if num_samples_fn is not None and not callable(num_samples_fn):
            raise TypeError(
                "num_samples_fn must be callable or None, got "
                f"{type(num_samples_fn).__name__}"
            )

        self._source = BatchSource(data)
        self._loss_fn = loss_fn
        self._num_samples_fn = num_samples_fn
        self._train_mode = bool(train_mode)
        self._progress = bool(progress) and self._rank == 0
        self.reduction = resolve_reduction(loss_fn, reduction)

        names = select_parameters(model, params)
        if not names:
            raise ValueError(
                "no parameters selected: the model has no parameters with "
                "requires_grad=True; pass params=[...] to select some"
            )
        selected = [model.get_parameter(name) for name in names]
        self.torch_dtype = resolve_dtype(selected, dtype)
        self.device = resolve_device(selected, device)
        self.layout = ParameterLayout(names, [p.shape for p in selected])
        self._copy_model = any(
            p.dtype != self.torch_dtype or p.device != self.device for p in selected
        )

        self._caller_model = model
        self._model: nn.Module = model
        self._leaves: list[torch.Tensor] = []
        self._fixed: dict[str, torch.Tensor] = {}
        self._fingerprint: tuple[Any, ...] | None = None
        if self._source.single_batch:
            self._graph_cache = GraphCache(math.inf, indexable=True)
        else:
            self._graph_cache = GraphCache(
                parse_budget(cache_budget), indexable=isinstance(data, (list, tuple))
            )
        self._graphless_batches: set[int] = set()
        self._set_product_options(options)
        self._sync_with_model()

    # ------------------------------------------------------------------
    # The torch-native interface

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """Multiply the Hessian by a torch vector on the operator's device.

        Parameters
        ----------
        v : torch.Tensor
            Shape ``(n,)`` or ``(n, k)``, on ``self.device`` with dtype
            ``self.torch_dtype``. Nothing is copied to the host.

        Returns
        -------
        torch.Tensor
            :math:`Hv`, of the shape of ``v``.

        Notes
        -----
        Costs one Hessian-vector product per column. The columns go through
        the data in blocks of ``block_size``, and each pass shares the
        forward pass and first backward pass of every batch among the
        columns of its block.
        """
        n = self.shape[0]
        run_collectively(self.comm, lambda: self._check_tensor(v), "checking v")
        V = v.reshape(n, -1)
        result = torch.empty_like(V)

        def store(start: int, stop: int, block: torch.Tensor) -> None:
            result[:, start:stop] = block.T

        self._apply_blocks(
            V.shape[1], lambda start, stop: V[:, start:stop].T.contiguous(), store
        )
        return result.reshape(v.shape)

    def _check_tensor(self, v: Any) -> None:
        n = self.shape[0]
        if not isinstance(v, torch.Tensor):
            raise TypeError(
                f"v must be a torch.Tensor, got {type(v).__name__}; use "
                "matvec or the @ operator for numpy arrays"
            )
        if v.ndim not in (1, 2) or v.shape[0] != n:
            raise ValueError(
                f"dimension mismatch: the operator has shape ({n}, {n}), so v "
                f"must have shape ({n},) or ({n}, k); got {tuple(v.shape)}"
            )
        if v.device != self.device:
            raise ValueError(
                f"v is on {v.device} but the operator runs on {self.device}; "
                f"move it with v.to({str(self.device)!r})"
            )
        if v.dtype != self.torch_dtype:
            raise TypeError(
                f"v has dtype {v.dtype} but the operator uses {self.torch_dtype}; "
                f"convert it with v.to({self.torch_dtype})"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError("v contains NaN or inf; the product needs finite entries")

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into a name -> tensor dict, as in ``layout``."""
        return self.layout.unflatten(vector)

    def flatten(self, tensors: Any) -> torch.Tensor:
        """Concatenate name -> tensor values into a flat vector, as in ``layout``."""
        return self.layout.flatten(tensors)

    def to_dense(
        self, max_size: int = 5000, *, block_size: int | None = None
    ) -> np.ndarray:
        """Build the Hessian as a dense numpy array, column by column.

        Parameters
        ----------
        max_size : int, default 5000
            Largest ``n`` accepted. The matrix needs ``n * n`` entries and
            ``n`` Hessian-vector products.
        block_size : int, optional
            Columns computed per pass over the data. ``None`` (default) uses
            the operator's ``block_size``, or 64 when that is ``None``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, n)``, dtype ``self.dtype``. It is not symmetrised, so
            its asymmetry shows the rounding error of the products.
        """
        n = self.shape[0]
        if n > max_size:
            gib = n * n * self.dtype.itemsize / 2**30
            raise ValueError(
                f"the operator has n = {n} rows, more than max_size = {max_size}; "
                f"a dense matrix needs {gib:.2f} GiB and {n} Hessian-vector "
                f"products; pass max_size={n} to build it anyway"
            )
        block_size = check_block_size(block_size) or self._block_size or 64
        dense = np.empty((n, n), dtype=self.dtype)

        def basis(start: int, stop: int) -> torch.Tensor:
            rows = torch.zeros(
                stop - start, n, dtype=self.torch_dtype, device=self.device
            )
            rows[:, start:stop] = torch.eye(stop - start, dtype=self.torch_dtype)
            return rows

        def store(start: int, stop: int, result: torch.Tensor) -> None:
            dense[:, start:stop] = result.T.cpu().numpy()

        self._apply_blocks(n, basis, store, block_size)
        return dense

    def clear_cache(self) -> None:
        """Release the cached first-order graphs; later products rebuild them."""
        self._graph_cache.clear()

    def __repr__(self) -> str:
        n = self.shape[0]
        return (
            f"<HessianOperator {n}x{n} over {len(self.layout)} parameter tensors, "
            f"{self.num_samples} samples in {self.num_batches} batches, "
            f"reduction={self.reduction!r}, dtype={self.torch_dtype}, "
            f"device={self.device}>"
        )
