"""Evaluate a classifier on a dataset, and the batching that training shares."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset, default_collate

__all__ = ["Evaluation", "evaluate"]


class Evaluation(NamedTuple):
    """Loss and accuracy of a model on a dataset."""

    loss: float
    """Mean cross-entropy over all samples."""
    accuracy: float
    """Fraction of samples whose largest logit is the label's."""
    num_samples: int
    """Number of samples evaluated."""


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    *,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Compute the mean cross-entropy loss and the accuracy of a classifier.

    The model runs in evaluation mode without gradients. Afterwards every
    submodule is back in the training or evaluation mode it had before, so
    BatchNorm running statistics and ``.grad`` do not change.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch of inputs to logits of shape ``(B, num_classes)``.
    dataset : torch.utils.data.Dataset
        Map-style dataset of ``(input, label)`` pairs, such as the
        :class:`~torch.utils.data.TensorDataset` from
        :func:`hessop.datasets.load_dataset`.
    batch_size : int
        Samples per forward pass. It changes only speed and memory: the
        loss is summed per sample and divided by the number of samples, so a
        short last batch has its proper weight.
    device : str or torch.device, optional
        Device to evaluate on. The model is moved there. Defaults to the
        device of the model's parameters.

    Returns
    -------
    Evaluation
        ``(loss, accuracy, num_samples)``.
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    num_samples = check_dataset(dataset, "dataset")
    device, dtype = model_placement(model, device)
    model.to(device)

    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with preserved_modes(model), torch.no_grad():
        model.eval()
        for inputs, labels in iterate_batches(dataset, batch_size, generator=None):
            inputs, labels = batch_to_model(inputs, labels, device, dtype)
            logits = model(inputs)
            total_loss += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()

    return Evaluation(
        loss=total_loss.item() / num_samples,
        accuracy=correct.item() / num_samples,
        num_samples=num_samples,
    )


def iterate_batches(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(inputs, labels)`` mini-batches, shuffled if a generator is given."""
    num_samples = len(dataset)
    if generator is None:
        order = torch.arange(num_samples)
    else:
        order = torch.randperm(num_samples, generator=generator)

    for start in range(0, num_samples, batch_size):
        indices = order[start : start + batch_size]
        if isinstance(dataset, TensorDataset):
            yield dataset[indices]
        else:
            yield default_collate([dataset[index] for index in indices.tolist()])


def batch_to_model(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to the device, and cast float inputs to the model's dtype."""
    if dtype is not None and inputs.is_floating_point():
        inputs = inputs.to(device=device, dtype=dtype)
    else:
        inputs = inputs.to(device)
    return inputs, labels.to(device)


def model_placement(
    model: nn.Module, device: str | torch.device | None
) -> tuple[torch.device, torch.dtype | None]:
    """Return the device to run on and the floating dtype of the model."""
    tensors = [*model.parameters(), *model.buffers()]
    floating = [tensor for tensor in tensors if tensor.is_floating_point()]
    dtype = floating[0].dtype if floating else None
    if device is not None:
        return torch.device(device), dtype
    if tensors:
        return tensors[0].device, dtype
    return torch.device("cpu"), dtype


@contextlib.contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Restore the training flag of every submodule on exit."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def check_dataset(dataset: Dataset, name: str) -> int:
    """Return the length of a map-style dataset, raising ValueError if it is empty."""
    try:
        num_samples = len(dataset)
    except TypeError:
        raise ValueError(
            f"{name} must be a map-style dataset with a length, got "
            f"{type(dataset).__name__}"
        ) from None
    if num_samples == 0:
        raise ValueError(f"{name} is empty")
    return num_samples
