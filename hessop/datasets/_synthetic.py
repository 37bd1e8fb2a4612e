"""A small seeded random classification set for smoke runs."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hessop.datasets._common import DatasetInfo

__all__ = ["SYNTHETIC_DEFAULT_SIZES", "load_synthetic_dataset"]

#: Number of samples generated per split when ``num_samples`` is None.
SYNTHETIC_DEFAULT_SIZES = {"train": 512, "test": 256}

# Offsets that give each split its own random stream for a given seed.
_SPLIT_STREAM = {"train": 1, "test": 2}


def load_synthetic_dataset(
    split: str,
    num_samples: int | None,
    seed: int,
    *,
    num_classes: int = 10,
    channels: int = 1,
    image_size: int = 8,
    noise: float = 2.0,
) -> tuple[TensorDataset, DatasetInfo]:
    """Generate Gaussian class clusters shaped as images.

    Each class has a template image with independent standard normal pixels.
    A sample is the template of a uniformly drawn class plus independent
    normal noise with standard deviation ``noise``. ``seed`` fixes the
    templates, so both splits of one seed come from the same distribution,
    and each split draws its samples from its own stream. Unlike the other
    datasets, ``num_samples`` is the number of samples generated, not a
    subset of a fixed set.

    Parameters
    ----------
    split, num_samples, seed
        As in :func:`hessop.datasets.load_dataset`. ``num_samples=None``
        generates :data:`SYNTHETIC_DEFAULT_SIZES` samples.
    num_classes : int
        Number of classes, at least 2.
    channels : int
        Channels per image.
    image_size : int
        Height and width of the square images.
    noise : float
        Standard deviation of the noise, relative to the unit standard
        deviation of the template pixels. Larger values give more overlap
        between classes.
    """
    for name, value, minimum in (
        ("num_classes", num_classes, 2),
        ("channels", channels, 1),
        ("image_size", image_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"{name} must be an int of at least {minimum}, got {value!r}"
            )
    if not (isinstance(noise, int | float) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    if num_samples is None:
        num_samples = SYNTHETIC_DEFAULT_SIZES[split]
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int)
        or num_samples < 1
    ):
        raise ValueError(
            f"num_samples must be a positive int or None, got {num_samples!r}"
        )

    # RandomState streams are fixed across NumPy versions, so a seed gives the
    # same data everywhere.
    shape = (channels, image_size, image_size)
    templates = np.random.RandomState(seed).standard_normal((num_classes, *shape))
    random_state = np.random.RandomState([seed, _SPLIT_STREAM[split]])
    labels = random_state.randint(0, num_classes, size=num_samples)
    images = templates[labels] + noise * random_state.standard_normal(
        (num_samples, *shape)
    )

    info = DatasetInfo(
        name="synthetic",
        split=split,
        num_samples=num_samples,
        num_classes=num_classes,
        channels=channels,
        image_size=(image_size, image_size),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        source=f"Gaussian class clusters (seed {seed}, noise {noise})",
    )
    dataset = TensorDataset(
        torch.from_numpy(images).to(torch.float32),
        torch.from_numpy(labels.astype(np.int64)),
    )
    return dataset, info
