"""Batches of data: validation, placement and sample counts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

Batch = tuple[Any, Any]
NumSamplesFn = Callable[[Any, Any], int]


class BatchSource:
    """A re-iterable source of ``(inputs, targets)`` batches.

    Parameters
    ----------
    data : tuple or iterable
        One batch ``(inputs, targets)`` given as a ``tuple``, or a re-iterable
        collection of such batches (a list, a ``torch.utils.data.DataLoader``).
    """

    def __init__(self, data: Any):
        if isinstance(data, tuple):
            if len(data) != 2:
                raise ValueError(
                    "data given as a tuple must be one batch (inputs, targets), "
                    f"got a tuple of length {len(data)}; pass several batches "
                    "as a list of (inputs, targets) tuples"
                )
            self._batches: Iterable[Any] = [data]
            self.single_batch = True
        elif isinstance(data, (torch.Tensor, Mapping, str, bytes)):
            raise TypeError(
                f"data must be a batch (inputs, targets) or a collection of "
                f"batches, got {type(data).__name__}; wrap inputs and targets "
                "as data=(inputs, targets)"
            )
        elif isinstance(data, Iterable):
            if isinstance(data, Iterator):
                raise TypeError(
                    f"data is a one-shot iterator ({type(data).__name__}); the "
                    "operator passes over the data at every product, so it needs "
                    "a re-iterable collection: pass a list of batches or a "
                    "torch.utils.data.DataLoader"
                )
            self._batches = data
            self.single_batch = False
        else:
            raise TypeError(
                "data must be a batch (inputs, targets) or a re-iterable "
                f"collection of batches, got {type(data).__name__}"
            )

    def __iter__(self) -> Iterator[Batch]:
        for index, batch in enumerate(self._batches):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    f"batch {index} must be a pair (inputs, targets), got "
                    f"{_describe(batch)}; a DataLoader must yield (inputs, "
                    "targets), as one over a TensorDataset(inputs, targets) does"
                )
            yield batch[0], batch[1]


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def count_samples(
    inputs: Any, targets: Any, index: int, num_samples_fn: NumSamplesFn | None
) -> int:
    """Return the number of samples in one batch.

    The count is ``num_samples_fn(inputs, targets)`` when given, otherwise
    ``len(targets)``.
    """
    if num_samples_fn is not None:
        count = num_samples_fn(inputs, targets)
        if isinstance(count, torch.Tensor) and count.numel() == 1:
            count = count.item()
        if isinstance(count, bool) or not float(count).is_integer() or count < 0:
            raise ValueError(
                f"num_samples_fn returned {count!r} for batch {index}; it must "
                "return a non-negative integer count of samples"
            )
        return int(count)
    try:
        return len(targets)
    except TypeError:
        raise TypeError(
            f"cannot count the samples of batch {index}: its targets "
            f"({type(targets).__name__}"
            + (f" of shape {tuple(targets.shape)}" if hasattr(targets, "shape") else "")
            + ") have no length; pass num_samples_fn=lambda inputs, targets: ..."
        ) from None


def to_device(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move the tensors inside ``value`` to ``device``.

    Floating-point tensors are also cast to ``dtype``, so that the inputs
    match the precision of the model that evaluates them; integer tensors
    (class labels, token ids) keep their dtype. Dicts, tuples and lists are
    walked recursively; other values pass through unchanged.
    """
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device=device)
    if isinstance(value, Mapping):
        return type(value)(
            (key, to_device(item, device, dtype)) for key, item in value.items()
        )
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(to_device(item, device, dtype) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(item, device, dtype) for item in value)
    return value
