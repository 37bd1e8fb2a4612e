"""Collective operations over an mpi4py communicator.

hessop never imports mpi4py itself: every function here takes the caller's
communicator (any object with mpi4py's ``Comm`` interface) or ``None`` for a
serial run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

# Exception types that keep their type when they are raised on every rank.
# Any other type becomes a RuntimeError on the ranks where it did not occur.
_KEPT_TYPES = (ValueError, TypeError, KeyError, IndexError)


def quiet_non_root_logging(comm: Any) -> None:
    """Keep hessop's INFO and DEBUG records on rank 0 only.

    On every other rank the ``hessop`` logger's level is raised to WARNING,
    which its child loggers inherit; warnings and errors still come from
    every rank.
    """
    if comm is None or get_rank(comm) == 0:
        return
    package_logger = logging.getLogger("hessop")
    if package_logger.getEffectiveLevel() < logging.WARNING:
        package_logger.setLevel(logging.WARNING)


def get_rank(comm: Any) -> int:
    """Return this process's rank, 0 without a communicator."""
    return 0 if comm is None else comm.Get_rank()


def get_size(comm: Any) -> int:
    """Return the number of ranks, 1 without a communicator."""
    return 1 if comm is None else comm.Get_size()


def run_collectively(comm: Any, function: Callable[[], T], operation: str) -> T:
    """Run ``function`` on every rank and fail on all ranks if one fails.

    Every rank calls ``function`` and then takes part in one ``allgather`` of
    its outcome: ``None`` for success, or the exception's type and message.
    If any rank failed, every rank raises an exception that names the first
    failing rank and its message, so no rank is left waiting in a later
    collective. Without a communicator this is a plain call.

    Parameters
    ----------
    comm : mpi4py communicator or None
    function : callable
        The rank's local work, with no collective operations inside.
    operation : str
        A few words for the message, such as ``"the Hessian-vector product"``.
    """
    if comm is None:
        return function()
    outcome = None
    error: BaseException | None = None
    try:
        result = function()
    except Exception as caught:
        error = caught
        outcome = (type(caught).__name__, str(caught))
    outcomes = comm.allgather(outcome)
    failed = [(rank, item) for rank, item in enumerate(outcomes) if item is not None]
    if not failed:
        return result

    rank, (name, message) = failed[0]
    summary = (
        f"{operation} failed on rank {rank} of {len(outcomes)} with {name}: {message}"
    )
    if len(failed) > 1:
        others = ", ".join(str(r) for r, _ in failed[1:])
        summary += f" (ranks {others} failed too)"
    kind = type(error) if isinstance(error, _KEPT_TYPES) else None
    if kind is None:
        kind = {cls.__name__: cls for cls in _KEPT_TYPES}.get(name, RuntimeError)
    raise kind(summary) from error


def allreduce_sum(comm: Any, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it.

    A CPU tensor is reduced through a numpy view of its memory. A CUDA
    tensor is reduced in GPU memory when :func:`cuda_aware` reports that the
    MPI library can read it, and through a host copy otherwise.
    """
    if comm is None or get_size(comm) == 1:
        return tensor
    from mpi4py import MPI

    if tensor.device.type == "cpu":
        buffer = tensor.detach().contiguous()
        comm.Allreduce(MPI.IN_PLACE, buffer.numpy(), op=MPI.SUM)
        if buffer.data_ptr() != tensor.data_ptr():
            tensor.copy_(buffer)
        return tensor
    if cuda_aware():
        buffer = tensor.detach().contiguous()
        torch.cuda.synchronize(buffer.device)
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        if buffer.data_ptr() != tensor.data_ptr():
            tensor.copy_(buffer)
        return tensor
    host = tensor.detach().cpu().numpy().copy()
    comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
    tensor.copy_(torch.from_numpy(host))
    return tensor


def allreduce_int(comm: Any, value: int) -> int:
    """Return the sum of an integer over all ranks."""
    if comm is None:
        return value
    return int(comm.allreduce(int(value)))


def cuda_aware() -> bool:
    """Return whether CUDA tensors go to MPI directly, without a host copy.

    The environment variable ``HESSOP_MPI_CUDA_AWARE`` decides when it is
    set (``1`` for yes, ``0`` for no). Otherwise mpi4py's
    ``MPI.Query_cuda_support()`` decides where this mpi4py build provides it,
    and the result is no where it does not.
    """
    setting = os.environ.get("HESSOP_MPI_CUDA_AWARE")
    if setting is not None:
        return setting.strip().lower() in ("1", "true", "yes")
    try:
        from mpi4py import MPI

        return bool(MPI.Query_cuda_support())
    except (ImportError, AttributeError, NotImplementedError):
        return False


def state_checksum(tensors: Sequence[tuple[str, torch.Tensor]]) -> str:
    """Return a SHA-256 digest of names, shapes, dtypes and exact values."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_same_everywhere(comm: Any, value: Any, description: str, fix: str) -> None:
    """Raise on every rank if ``value`` differs between ranks.

    The message names the first rank whose value differs from rank 0's.
    """
    if comm is None:
        return
    values = comm.allgather(value)
    for rank, other in enumerate(values):
        if other != values[0]:
            raise ValueError(
                f"{description} differs between ranks: rank {rank} of {len(values)} "
                f"does not match rank 0; {fix}"
            )


def partition(items: Any, comm: Any = None, *, rank=None, size=None) -> Any:
    """Return this rank's share of a list of batches or of a dataset.

    The items are cut into ``size`` contiguous blocks whose lengths differ by
    at most one, the first ``len(items) % size`` blocks one longer; rank
    ``r`` gets block ``r``. The split depends only on ``len(items)``, the
    rank and the number of ranks, so every rank computes the same split.

    Parameters
    ----------
    items : sequence or torch.utils.data.Dataset
        Batches to split (a list), or a map-style dataset (then the result is
        a ``torch.utils.data.Subset``, and each rank builds its own
        ``DataLoader`` on it).
    comm : mpi4py communicator, optional
        Gives ``rank`` and ``size``. Without one, pass ``rank`` and ``size``;
        with neither, the whole of ``items`` is returned.
    rank, size : int, optional
        Override the communicator's rank and size.

    Returns
    -------
    list or torch.utils.data.Subset
        This rank's items. A rank may get none when there are fewer items
        than ranks; the operator accepts that.

    Examples
    --------
    >>> from hessop import partition
    >>> [partition(list(range(7)), rank=r, size=3) for r in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    rank = get_rank(comm) if rank is None else int(rank)
    size = get_size(comm) if size is None else int(size)
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    try:
        total = len(items)
    except TypeError:
        raise TypeError(
            f"items must have a length (a list or a map-style dataset), got "
            f"{type(items).__name__}; convert an iterable with list(...)"
        ) from None
    base, extra = divmod(total, size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    if isinstance(items, torch.utils.data.Dataset) and not isinstance(
        items, (list, tuple)
    ):
        return torch.utils.data.Subset(items, range(start, stop))
    if isinstance(items, np.ndarray) or isinstance(items, torch.Tensor):
        return items[start:stop]
    return list(items[start:stop])
