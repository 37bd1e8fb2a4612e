"""Dataset metadata and the checks and helpers that every loader shares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SPLITS", "DatasetInfo", "check_seed", "select_subset", "standardize"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a loaded dataset.

    Attributes
    ----------
    name : str
        Dataset name as passed to :func:`load_dataset`.
    split : {"train", "test"}
        Which split the samples come from.
    num_samples : int
        Number of samples loaded (after ``num_samples`` subsetting).
    num_classes : int
        Number of classes; labels are in ``range(num_classes)``.
    channels : int
        Channels per image.
    image_size : (int, int)
        Height and width of each image.
    mean, std : tuple of float
        Per-channel statistics that were used to standardise the images,
        ``x = (raw - mean) / std``, in the units of the raw pixels scaled to
        [0, 1]. A mean of 0 and std of 1 means that no standardisation was
        applied.
    source : str
        Where the data came from: a directory, or a short description.
    """

    name: str
    split: str
    num_samples: int
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return (self.channels, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a dict of JSON-serialisable values."""
        fields = dataclasses.asdict(self)
        fields["image_size"] = list(self.image_size)
        fields["mean"] = list(self.mean)
        fields["std"] = list(self.std)
        return fields


def check_seed(seed: int) -> None:
    """Raise ValueError unless ``seed`` is an int in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")


def select_subset(
    total: int, num_samples: int | None, seed: int, description: str
) -> np.ndarray:
    """Choose ``num_samples`` of ``total`` indices at random, in increasing order.

    The indices are the first ``num_samples`` entries of a permutation drawn by
    :class:`numpy.random.RandomState` from ``seed``. NumPy keeps the
    ``RandomState`` stream fixed across versions (NEP 19), so a seed selects the same
    samples everywhere, and a smaller subset is contained in a larger one with
    the same seed.

    Parameters
    ----------
    total : int
        Number of samples available.
    num_samples : int or None
        Number of samples to keep; None keeps all of them.
    seed : int
        Seed of the permutation.
    description : str
        Names the data in error messages, such as ``"the digits train split"``.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices, shape ``(num_samples,)``.

    Raises
    ------
    ValueError
        If ``num_samples`` is not a positive int or exceeds ``total``.
    """
    if num_samples is None:
        return np.arange(total, dtype=np.int64)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ValueError(f"num_samples must be an int or None, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if num_samples > total:
        raise ValueError(
            f"num_samples={num_samples} exceeds the {total} samples of "
            f"{description}; pass at most {total} or None for all of them"
        )

    permutation = np.random.RandomState(seed).permutation(total)
    return np.sort(permutation[:num_samples]).astype(np.int64)


def standardize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Subtract ``mean`` and divide by ``std`` per channel, in place.

    ``images`` has shape ``(N, C, H, W)``; ``mean`` and ``std`` have C entries.
    """
    shape = (1, len(mean), 1, 1)
    mean_tensor = torch.tensor(mean, dtype=images.dtype).reshape(shape)
    std_tensor = torch.tensor(std, dtype=images.dtype).reshape(shape)
    return images.sub_(mean_tensor).div_(std_tensor)
