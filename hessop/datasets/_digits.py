"""The scikit-learn digits: 1797 real handwritten digits of 8x8 pixels."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hessop.datasets._common import DatasetInfo, select_subset, standardize

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION", "load_digits_dataset"]

#: Fraction of each class that goes to the test split.
DIGITS_TEST_FRACTION = 0.2
#: Seed of the train/test split. It is fixed, so "the digits test split" is
#: the same set of images whatever ``seed`` a caller passes for subsetting.
DIGITS_SPLIT_SEED = 0

_MAX_PIXEL_VALUE = 16.0


def split_digits(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, stratified by class.

    For each class, a permutation drawn by :class:`numpy.random.RandomState`
    from :data:`DIGITS_SPLIT_SEED` puts the first ``round(0.2 * count)``
    indices of that class in the test split. NumPy keeps this stream fixed
    across versions, so the split does not change with the library versions.

    Returns
    -------
    train, test : numpy.ndarray
        Sorted int64 indices. With the 1797 digits they have 1438 and 359
        entries.
    """
    random_state = np.random.RandomState(DIGITS_SPLIT_SEED)
    test_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        num_test = round(DIGITS_TEST_FRACTION * len(members))
        test_parts.append(random_state.permutation(members)[:num_test])

    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), test).astype(np.int64)
    return train, test


def load_digits_dataset(
    split: str, num_samples: int | None, seed: int
) -> tuple[TensorDataset, DatasetInfo]:
    """Load the scikit-learn digits as 1x8x8 float32 images.

    Pixels (integers 0 to 16) are scaled to [0, 1] and then standardised with
    the mean and standard deviation of all pixels of the train split, for
    both splits. See :func:`split_digits` for the split and
    :func:`hessop.datasets.load_dataset` for the parameters.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the digits dataset needs scikit-learn; install it with "
            "`pip install scikit-learn` or `pip install hessop[data]`"
        ) from error

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / _MAX_PIXEL_VALUE
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = split_digits(labels)
    mean = float(images[train].mean())
    std = float(images[train].std())

    indices = train if split == "train" else test
    chosen = indices[
        select_subset(len(indices), num_samples, seed, f"the digits {split} split")
    ]
    inputs = torch.from_numpy(images[chosen]).unsqueeze(1).to(torch.float32)
    inputs = standardize(inputs, (mean,), (std,))
    targets = torch.from_numpy(labels[chosen])

    info = DatasetInfo(
        name="digits",
        split=split,
        num_samples=len(chosen),
        num_classes=10,
        channels=1,
        image_size=(8, 8),
        mean=(mean,),
        std=(std,),
        source="sklearn.datasets.load_digits",
    )
    return TensorDataset(inputs, targets), info
