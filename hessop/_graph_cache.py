"""First-order graphs of batches kept between Hessian-vector products."""

from __future__ import annotations

import logging
import math
import numbers
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_budget(budget: int | float | str) -> float:
    """Return a memory budget in bytes from a number or a string like ``'2GiB'``.

    ``'unlimited'`` and ``math.inf`` mean no limit.
    """
    if isinstance(budget, bool):
        raise TypeError(
            f"cache_budget must be a number of bytes or a string, got {budget!r}"
        )
    if isinstance(budget, numbers.Real):
        value = float(budget)
    elif isinstance(budget, str):
        text = budget.strip().upper()
        if text in ("UNLIMITED", "INF"):
            return math.inf
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([KMGT]I?B|B)?", text)
        if match is None:
            raise ValueError(
                f"cache_budget={budget!r} is not a memory size; use bytes or a "
                "string such as '512MiB', '2GB' or 'unlimited'"
            )
        value = float(match.group(1)) * _UNITS[match.group(2) or ""]
    else:
        raise TypeError(
            "cache_budget must be a number of bytes or a string such as '2GiB', "
            f"got {type(budget).__name__}"
        )
    if not value >= 0:
        raise ValueError(f"cache_budget must be non-negative, got {budget!r}")
    return value


@dataclass
class CachedBatch:
    """The first-order graph of one batch."""

    index: int
    count: int
    grads: list[torch.Tensor]
    used: list[int]
    nbytes: int


class GraphCache:
    """Graphs of the first backward pass of each batch, within a memory budget.

    A cached batch costs only its second backward passes in later products.
    With an indexable list of batches the cache keeps the leading batches
    that fit and recomputes the rest. With any other iterable, such as a
    ``DataLoader``, it keeps graphs only when every batch fits, because the
    loader may give its batches in another order on the next pass.

    Parameters
    ----------
    budget : float
        Bytes the cached graphs may take, as estimated by
        :func:`measure_saved_bytes`.
    indexable : bool
        Whether batch ``i`` is the same batch on every pass.
    """

    def __init__(self, budget: float, indexable: bool):
        self.budget = budget
        self.indexable = indexable
        self.entries: dict[int, CachedBatch] = {}
        self.empty_batches = 0
        self.complete = False
        self.gave_up = False

    @property
    def nbytes(self) -> int:
        """Estimated bytes held by the cached graphs."""
        return sum(entry.nbytes for entry in self.entries.values())

    @property
    def accepting(self) -> bool:
        """Whether a batch offered now could be kept: a budget above 0, not given up."""
        return self.budget > 0 and not self.gave_up

    def clear(self) -> None:
        """Drop every cached graph, for instance after the parameters changed."""
        self.entries.clear()
        self.empty_batches = 0
        self.complete = False
        self.gave_up = False

    def offer(self, entry: CachedBatch) -> bool:
        """Keep ``entry`` if it fits in the budget; return whether it was kept."""
        if self.gave_up:
            return False
        if self.nbytes + entry.nbytes > self.budget:
            if not self.indexable:
                # Some batch will not fit, so the cache can never be complete.
                if self.budget > 0:
                    logger.info(
                        "first-order graphs need more than cache_budget=%.3g "
                        "bytes; products recompute them",
                        self.budget,
                    )
                self.entries.clear()
                self.gave_up = True
            return False
        self.entries[entry.index] = entry
        return True

    def finish_pass(self, num_batches: int, empty_batches: int) -> None:
        """Record the end of a pass that saw ``num_batches`` batches."""
        if self.gave_up:
            return
        self.empty_batches = empty_batches
        self.complete = len(self.entries) + empty_batches == num_batches


@contextmanager
def measure_saved_bytes(exclude: list[torch.Tensor]) -> Iterator[list[int]]:
    """Count the bytes of tensors autograd saves inside the block.

    Yields a one-element list whose entry grows with each distinct storage
    saved for the backward pass, leaving out the storages of ``exclude``
    (the parameters, which exist anyway). The count is an estimate of the
    memory a kept graph holds: it ignores allocator overhead and counts a
    storage once even when several views of it are saved.
    """
    seen = {t.untyped_storage().data_ptr() for t in exclude}
    total = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in seen:
            seen.add(pointer)
            total[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total
