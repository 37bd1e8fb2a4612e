"""The passes over the data that compute Hessian-vector products."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from hessop._data import count_samples, to_device
from hessop._forward_over_reverse import (
    LinearizedBatch,
    compiled_product,
    compiled_products,
    gradient_function,
    jvp_products,
    linearization_bytes,
    linearize_checked,
    linearized_products,
)
from hessop._graph_cache import CachedBatch, measure_saved_bytes
from hessop._mpi import allreduce_sum, run_collectively
from hessop._products import first_order, second_order

BACKENDS = ("autograd", "func")


@dataclass(frozen=True)
class ProductOptions:
    """The product options of :class:`hessop.HessianOperator`, as given."""

    backend: str
    layer_rules: bool
    compile: bool
    block_size: int | None


def check_block_size(block_size: Any) -> int | None:
    """Return ``block_size`` as an int, or None, after checking it."""
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"block_size must be an int or None, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1 or None, got {block_size}")
    return int(block_size)


class ProductPasses:
    """The product half of :class:`hessop.HessianOperator`.

    The operator sets the attributes these methods read: the data source,
    model, parameter aliases, layout, graph cache and product options.
    """

    def _set_product_options(self, options: ProductOptions) -> None:
        """Validate the product options and store them."""
        if options.backend not in BACKENDS:
            raise ValueError(
                f"backend must be one of {BACKENDS}, got {options.backend!r}"
            )
        for name in ("layer_rules", "compile"):
            if not isinstance(getattr(options, name), bool):
                raise TypeError(
                    f"{name} must be a bool, got {getattr(options, name)!r}"
                )
        if options.compile and options.backend != "func":
            raise ValueError(
                "compile=True needs backend='func': torch.compile cannot compile "
                "the double backward pass of backend='autograd' (PyTorch 2.13 "
                "raises 'aot_autograd does not currently support double "
                "backward'); pass backend='func', compile=True"
            )

        block_size = check_block_size(options.block_size)

        self._backend = options.backend
        self._layer_rules = options.layer_rules
        self._compile = options.compile
        self._block_size = block_size
        # Batches whose linearisation did not fit in the cache (backend 'func').
        self._unlinearized: set[int] = set()
        self._compiled_product: Callable[..., Any] | None = None

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

    def _apply_blocks(
        self,
        num_columns: int,
        block: Callable[[int, int], torch.Tensor],
        store: Callable[[int, int, torch.Tensor], None],
        block_size: int | None = None,
    ) -> None:
        """Multiply ``num_columns`` vectors, at most ``block_size`` per pass.

        ``block(start, stop)`` returns rows ``start:stop`` of ``Vt`` and
        ``store(start, stop, result)`` receives their products, so that only
        one block of vectors is held on the operator's device at a time.
        ``block_size`` defaults to the operator's.
        """
        step = block_size or self._block_size or num_columns
        for start in range(0, num_columns, step):
            stop = min(start + step, num_columns)
            store(start, stop, self._apply(block(start, stop)))

    def _normalise(self, total: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return total / self.num_samples
        return total

    def _pass(
        self, Vt: torch.Tensor, *, use_cache: bool
    ) -> tuple[torch.Tensor, int, int]:
        """Return the sample-weighted sum of batch products, N and the batch count.

        ``use_cache`` reuses the cached first-order graphs and offers new ones
        to the cache; without it every batch is recomputed and nothing is cached.
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
                product = self._batch_product(
                    inputs, targets, index, count, Vt, use_cache=use_cache
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
                product = self._cached_product(entry, Vt)
                self._accumulate(total, product, entry.count, entry.index)
        return total, num_samples, len(entries) + self._graph_cache.empty_batches

    def _batch_product(
        self,
        inputs: Any,
        targets: Any,
        index: int,
        count: int,
        Vt: torch.Tensor,
        *,
        use_cache: bool,
    ) -> torch.Tensor:
        """Return one batch's Hessian times each row of ``Vt``, unnormalised."""
        if self._backend == "func":
            return self._func_product(inputs, targets, index, count, Vt, use_cache)
        cache = self._graph_cache
        entry = cache.entries.get(index) if use_cache else None
        if entry is None and use_cache and cache.accepting:
            with measure_saved_bytes(self._leaves) as saved:
                grads, used = self._first_order(inputs, targets, index)
            nbytes = saved[0] + sum(g.numel() * g.element_size() for g in grads)
            entry = CachedBatch(index, count, grads, used, nbytes)
            cached = cache.offer(entry)
        elif entry is None:
            grads, used = self._first_order(inputs, targets, index)
            cached = False
        else:
            grads, used, cached = entry.grads, entry.used, True
        return second_order(grads, used, self._leaves, self.layout, Vt, retain=cached)

    def _cached_product(self, entry: CachedBatch, Vt: torch.Tensor) -> torch.Tensor:
        if isinstance(entry, LinearizedBatch):
            return linearized_products(entry.jvp, self.layout, Vt)
        return second_order(
            entry.grads, entry.used, self._leaves, self.layout, Vt, retain=True
        )

    def _func_product(
        self,
        inputs: Any,
        targets: Any,
        index: int,
        count: int,
        Vt: torch.Tensor,
        use_cache: bool,
    ) -> torch.Tensor:
        """Return one batch's product by forward over reverse (``backend='func'``).

        A batch is linearised when the cache may keep it, and products then
        reuse the linearisation. Other batches run one ``jvp`` per row, which
        repeats the forward and backward passes for every row.
        """
        cache = self._graph_cache
        entry = cache.entries.get(index) if use_cache else None
        if entry is not None:
            return self._cached_product(entry, Vt)

        inputs = to_device(inputs, self.device, self.torch_dtype)
        targets = to_device(targets, self.device, self.torch_dtype)
        primals = [leaf.detach() for leaf in self._leaves]
        if self._compile:
            if self._compiled_product is None:
                self._compiled_product = compiled_product(
                    self._model,
                    self._loss_fn,
                    self._fixed,
                    self.layout.names,
                    train_mode=self._train_mode,
                )
            return compiled_products(
                self._compiled_product, primals, inputs, targets, self.layout, Vt, index
            )

        gradient = gradient_function(
            self._model,
            self._loss_fn,
            self._fixed,
            self.layout.names,
            inputs,
            targets,
            train_mode=self._train_mode,
        )
        linearizable = index not in self._unlinearized or not cache.indexable
        if use_cache and cache.accepting and linearizable:
            jvp, product = linearize_checked(gradient, primals, self.layout, Vt, index)
            nbytes = linearization_bytes(jvp, primals)
            cached = cache.offer(LinearizedBatch(index, count, [], [], nbytes, jvp=jvp))
            if not cached:
                # A batch that did not fit runs jvp from now on, instead of
                # paying for a linearisation on every pass.
                self._unlinearized.add(index)
            return product
        return jvp_products(gradient, primals, self.layout, Vt, index)

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
            layer_rules=self._layer_rules,
        )
        if grads is None:
            self._graphless_batches.add(index)
            return [], []
        return grads, used
