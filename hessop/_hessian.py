"""The Hessian of a model's loss over a whole dataset as a LinearOperator."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn
from tqdm.auto import tqdm

from hessop._data import BatchSource, NumSamplesFn, count_samples, to_device
from hessop._graph_cache import (
    CachedBatch,
    GraphCache,
    measure_saved_bytes,
    parse_budget,
)
from hessop._layout import ParameterLayout
from hessop._model import (
    ParamsArg,
    select_parameters,
    state_fingerprint,
)
from hessop._mpi import (
    allreduce_int,
    allreduce_sum,
    check_same_everywhere,
    get_rank,
    get_size,
    quiet_non_root_logging,
    run_collectively,
    state_checksum,
)
from hessop._operator_checks import (
    NUMPY_DTYPES,
    check_numeric,
    nondeterminism_message,
    resolve_device,
    resolve_dtype,
    resolve_reduction,
)
from hessop._products import first_order, second_order

__all__ = ["HessianOperator"]

logger = logging.getLogger(__name__)

# Seed of the probe vector that the determinism check multiplies twice.
_CHECK_SEED = 0


class HessianOperator(LinearOperator):
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
        self._sync_with_model()

    def _check_ranks_agree(self) -> None:
        """Raise on every rank unless all ranks hold the same parameters."""
        if self.comm is None:
            return
        check_same_everywhere(
            self.comm,
            (self.layout.names, self.layout.shapes, str(self.torch_dtype)),
            "the parameter layout (names, shapes and dtype)",
            "build the same model and pass the same params on every rank",
        )
        state = [(name, p) for name, p in self._model.named_parameters()]
        state += [(name, b) for name, b in self._model.named_buffers()]
        check_same_everywhere(
            self.comm,
            state_checksum(state),
            "the parameter and buffer values (SHA-256 of their bytes)",
            "load the same weights on every rank, for instance by broadcasting "
            "rank 0's state_dict",
        )

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
        Costs one Hessian-vector product per column: one pass over the data
        that shares the forward pass and first backward pass of each batch
        among the columns.
        """
        n = self.shape[0]
        run_collectively(self.comm, lambda: self._check_tensor(v), "checking v")
        result = self._apply(v.reshape(n, -1).T.contiguous())
        return result.T.reshape(v.shape)

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

    def to_dense(self, max_size: int = 5000, *, block_size: int = 64) -> np.ndarray:
        """Build the Hessian as a dense numpy array, column by column.

        Parameters
        ----------
        max_size : int, default 5000
            Largest ``n`` accepted. The matrix needs ``n * n`` entries and
            ``n`` Hessian-vector products.
        block_size : int, default 64
            Columns computed per pass over the data.

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
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        dense = np.empty((n, n), dtype=self.dtype)
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            basis = torch.zeros(
                stop - start, n, dtype=self.torch_dtype, device=self.device
            )
            basis[:, start:stop] = torch.eye(stop - start, dtype=self.torch_dtype)
            dense[:, start:stop] = self._apply(basis).T.cpu().numpy()
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

    # ------------------------------------------------------------------
    # scipy's LinearOperator interface

    def dot(self, x):
        """Multiply by a vector, a matrix, a scalar or another LinearOperator."""
        if not isinstance(x, LinearOperator) and not np.isscalar(x):
            x = np.asanyarray(x)
            run_collectively(
                self.comm, lambda: self._check_array(x, "x", (1, 2)), "checking x"
            )
        return super().dot(x)

    def matvec(self, x):
        """Multiply by a vector of shape ``(n,)`` or ``(n, 1)``."""
        x = np.asanyarray(x)
        run_collectively(
            self.comm, lambda: self._check_array(x, "x", (1,)), "checking x"
        )
        return super().matvec(x)

    def matmat(self, X):
        """Multiply by a matrix of shape ``(n, k)``."""
        X = np.asanyarray(X)
        run_collectively(
            self.comm, lambda: self._check_array(X, "X", (2,)), "checking X"
        )
        return super().matmat(X)

    def _check_array(self, x: np.ndarray, name: str, ndims: tuple[int, ...]) -> None:
        n = self.shape[0]
        if ndims == (1,):
            valid = x.shape in ((n,), (n, 1))
            expected = f"({n},) or ({n}, 1)"
        else:
            valid = x.ndim in ndims and x.shape[0] == n
            expected = f"({n},) or ({n}, k)" if 1 in ndims else f"({n}, k)"
        if not valid:
            raise ValueError(
                f"dimension mismatch: the operator has shape ({n}, {n}), so {name} "
                f"must have shape {expected}; got {x.shape}"
            )
        check_numeric(x, name)

    def rmatvec(self, x):
        """Multiply by a vector from the left, the same as ``matvec``."""
        return self.matvec(x)

    def rmatmat(self, X):
        """Multiply by a matrix from the left, the same as ``matmat``."""
        return self.matmat(X)

    def _matvec(self, x):
        return self._matmat(np.asarray(x).reshape(-1, 1)).reshape(-1)

    def _matmat(self, X):
        X = np.asarray(X)
        out_dtype = np.result_type(X.dtype, self.dtype)
        if np.iscomplexobj(X):
            k = X.shape[1]
            Y = self._matmat_real(np.concatenate([X.real, X.imag], axis=1))
            return (Y[:, :k] + 1j * Y[:, k:]).astype(out_dtype, copy=False)
        return self._matmat_real(X).astype(out_dtype, copy=False)

    def _matmat_real(self, X: np.ndarray) -> np.ndarray:
        Vt = torch.as_tensor(
            np.ascontiguousarray(X.T), dtype=self.torch_dtype, device=self.device
        )
        return self._apply(Vt).T.cpu().numpy()

    def _rmatvec(self, x):
        return self._matvec(x)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self

    def _transpose(self):
        return self

    # ------------------------------------------------------------------
    # Products

    def _apply(self, Vt: torch.Tensor) -> torch.Tensor:
        """Return ``(H @ Vt.T).T`` for ``Vt`` of shape ``(k, n)``.

        Under MPI each rank sums its own batches, the ranks agree that none
        failed, and one ``Allreduce`` sums the results.
        """

        def local() -> torch.Tensor:
            self._sync_with_model()
            total, num_samples, _ = self._pass(Vt, use_cache=True)
            if num_samples != self.num_local_samples:
                raise ValueError(
                    f"the data changed size: the operator was built on "
                    f"{self.num_local_samples} samples but this pass saw "
                    f"{num_samples}; a collection of batches must give the same "
                    "samples on every pass"
                )
            return total

        total = run_collectively(self.comm, local, "the Hessian-vector product")
        allreduce_sum(self.comm, total)
        self.num_matvecs += Vt.shape[0]
        return self._normalise(total)

    def _normalise(self, total: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return total / self.num_samples
        return total

    def _pass(
        self, Vt: torch.Tensor, *, use_cache: bool
    ) -> tuple[torch.Tensor, int, int]:
        """Return the sample-weighted sum of batch products, N and the batch count.

        ``use_cache`` reuses the cached first-order graphs and offers new ones
        to the cache; without it every batch is recomputed and nothing is kept.
        """
        cache = self._graph_cache
        if use_cache and cache.complete:
            return self._pass_from_cache(Vt)
        if use_cache and not cache.indexable:
            cache.entries.clear()

        total = torch.zeros_like(Vt)
        num_samples = 0
        num_batches = 0
        empty_batches = 0
        batches = tqdm(
            self._source,
            total=self.num_batches or None,
            desc="Hessian-vector product",
            disable=not self._progress,
            leave=False,
        )
        with torch.enable_grad():
            for index, (inputs, targets) in enumerate(batches):
                num_batches += 1
                count = count_samples(inputs, targets, index, self._num_samples_fn)
                if count == 0:
                    empty_batches += 1
                    continue
                num_samples += count
                entry = cache.entries.get(index) if use_cache else None
                if entry is None and use_cache and not cache.gave_up:
                    with measure_saved_bytes(self._leaves) as saved:
                        grads, used = self._first_order(inputs, targets, index)
                    nbytes = saved[0] + sum(g.numel() * g.element_size() for g in grads)
                    entry = CachedBatch(index, count, grads, used, nbytes)
                    kept = cache.offer(entry)
                elif entry is None:
                    grads, used = self._first_order(inputs, targets, index)
                    kept = False
                else:
                    grads, used, kept = entry.grads, entry.used, True
                product = second_order(
                    grads, used, self._leaves, self.layout, Vt, retain=kept
                )
                self._accumulate(total, product, count, index)
        if use_cache:
            cache.finish_pass(num_batches, empty_batches)
        return total, num_samples, num_batches

    def _pass_from_cache(self, Vt: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Run a pass on cached graphs alone, without touching the data."""
        total = torch.zeros_like(Vt)
        num_samples = 0
        entries = sorted(self._graph_cache.entries.values(), key=lambda e: e.index)
        with torch.enable_grad():
            for entry in entries:
                num_samples += entry.count
                product = second_order(
                    entry.grads, entry.used, self._leaves, self.layout, Vt, retain=True
                )
                self._accumulate(total, product, entry.count, entry.index)
        return total, num_samples, len(entries) + self._graph_cache.empty_batches

    def _accumulate(
        self, total: torch.Tensor, product: torch.Tensor, count: int, index: int
    ) -> None:
        if not bool(torch.isfinite(product).all()):
            raise ValueError(
                f"the Hessian-vector product of batch {index} is not "
                "finite (NaN or inf); check the model and data of that "
                "batch, or use dtype=torch.float64"
            )
        weight = count if self.reduction == "mean" else 1
        total.add_(product, alpha=weight)

    def _first_order(
        self, inputs: Any, targets: Any, index: int
    ) -> tuple[list[torch.Tensor], list[int]]:
        """Run the forward pass and the first backward pass of one batch."""
        state = dict(self._fixed)
        for name, leaf in zip(self.layout.names, self._leaves, strict=True):
            state[name] = leaf
        grads, used = first_order(
            self._model,
            self._loss_fn,
            state,
            self._leaves,
            to_device(inputs, self.device, self.torch_dtype),
            to_device(targets, self.device, self.torch_dtype),
            train_mode=self._train_mode,
            index=index,
        )
        if grads is None:
            self._graphless_batches.add(index)
            return [], []
        return grads, used

    # ------------------------------------------------------------------
    # Construction helpers

    def _sync_with_model(self) -> None:
        """Rebuild the working model and parameter aliases if the model changed."""
        fingerprint = state_fingerprint(self._caller_model)
        if fingerprint == self._fingerprint:
            return
        if self._fingerprint is not None:
            logger.debug("model state changed; rebuilding the Hessian operator's cache")
        self._graph_cache.clear()

        if self._copy_model:
            try:
                model = copy.deepcopy(self._caller_model)
            except Exception as error:
                raise TypeError(
                    f"cannot copy the model to convert it to {self.torch_dtype} on "
                    f"{self.device}: {error}; convert the model yourself and pass "
                    "dtype=None, device=None"
                ) from error
            self._model = model.to(device=self.device, dtype=self.torch_dtype)
        else:
            self._model = self._caller_model

        selected = set(self.layout.names)
        leaves = []
        for entry in self.layout:
            try:
                parameter = self._model.get_parameter(entry.name)
            except AttributeError:
                raise ValueError(
                    f"parameter {entry.name!r} is no longer part of the model; "
                    "build a new HessianOperator after changing the model's structure"
                ) from None
            if tuple(parameter.shape) != entry.shape:
                raise ValueError(
                    f"parameter {entry.name!r} changed shape from {entry.shape} to "
                    f"{tuple(parameter.shape)}; build a new HessianOperator"
                )
            leaves.append(parameter.detach().requires_grad_(True))
        self._leaves = leaves
        # The other parameters enter as constants, so autograd builds no graph
        # for them. Tied aliases of selected parameters are left out: the
        # functional call ties them to the value given under the first name.
        self._fixed = {
            name: parameter.detach()
            for name, parameter in self._model.named_parameters()
            if name not in selected
        }
        self._fingerprint = fingerprint

    def _count_samples(self) -> tuple[int, int]:
        num_samples = 0
        num_batches = 0
        for index, (inputs, targets) in enumerate(self._source):
            num_batches += 1
            num_samples += count_samples(inputs, targets, index, self._num_samples_fn)
        return num_samples, num_batches

    def _check_deterministic(self) -> None:
        """Multiply one vector twice and raise if the results differ."""
        n = self.shape[0]
        generator = torch.Generator().manual_seed(_CHECK_SEED)
        v = torch.randn(1, n, generator=generator, dtype=torch.float64)
        v = v.to(device=self.device, dtype=self.torch_dtype)

        first, samples_first, batches_first = run_collectively(
            self.comm,
            lambda: self._pass(v, use_cache=False),
            "the first product of the determinism check",
        )
        self.num_local_samples, self.num_batches = samples_first, batches_first
        self.num_samples = allreduce_int(self.comm, samples_first)
        if self.num_samples == 0:
            return
        allreduce_sum(self.comm, first)

        def second_pass() -> torch.Tensor:
            second, samples_second, _ = self._pass(v, use_cache=True)
            if samples_second != samples_first:
                raise ValueError(
                    "the data changed size between two passes "
                    f"({samples_first} then {samples_second} samples); the "
                    "operator needs the same samples on every pass"
                )
            return second

        second = run_collectively(
            self.comm, second_pass, "the second product of the determinism check"
        )
        allreduce_sum(self.comm, second)
        graphless = allreduce_int(self.comm, len(self._graphless_batches))
        if graphless == allreduce_int(self.comm, batches_first):
            warnings.warn(
                "the loss does not depend on the selected parameters in any batch "
                "(no gradient graph), so the Hessian is zero; check params and "
                "that loss_fn is not computed under torch.no_grad()",
                UserWarning,
                stacklevel=3,
            )

        difference = float(torch.linalg.vector_norm(first - second))
        scale = max(
            float(torch.linalg.vector_norm(first)),
            float(torch.linalg.vector_norm(second)),
        )
        tolerance = math.sqrt(torch.finfo(self.torch_dtype).eps)
        if difference > tolerance * scale:
            raise ValueError(
                nondeterminism_message(
                    self._model, self._train_mode, difference / scale, tolerance
                )
            )
