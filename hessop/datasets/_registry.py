"""Load a dataset by name."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch.utils.data import TensorDataset

from hessop.datasets._cifar import CIFAR10, CIFAR100, load_cifar_dataset
from hessop.datasets._common import SPLITS, DatasetInfo, check_seed
from hessop.datasets._digits import load_digits_dataset
from hessop.datasets._synthetic import load_synthetic_dataset

__all__ = ["DATASET_NAMES", "load_dataset"]

#: Names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "synthetic")

# Extra keyword options of each dataset, with the function that validates them.
_OPTION_SOURCES = {
    "digits": None,
    "cifar10": None,
    "cifar100": load_cifar_dataset,
    "synthetic": load_synthetic_dataset,
}
_COMMON_PARAMETERS = {"cifar", "root", "split", "num_samples", "seed"}


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split: str = "train",
    num_samples: int | None = None,
    seed: int = 0,
    **options: Any,
) -> tuple[TensorDataset, DatasetInfo]:
    """Load a dataset as float32 images and int64 labels.

    Parameters
    ----------
    name : {"digits", "cifar10", "cifar100", "synthetic"}
        ``"digits"``: the 1797 handwritten digits shipped with scikit-learn,
        1x8x8, split 80/20 into train and test per class by a fixed seed.
        ``"cifar10"`` and ``"cifar100"``: the binary version of CIFAR from
        ``root``. ``"synthetic"``: Gaussian class clusters from ``seed``.
    root : str or Path, optional
        Directory with the CIFAR binary files, or the directory that
        contains the folder the official archive extracts to
        (``cifar-10-batches-bin`` or ``cifar-100-binary``). Only CIFAR uses
        it. Digits ship inside scikit-learn, and the synthetic set is
        generated.
    split : {"train", "test"}
        Which split to load.
    num_samples : int, optional
        Keep this many samples, chosen at random by ``seed`` and kept in
        their original order. None keeps the whole split. For
        ``"synthetic"`` it is the number of samples generated (default 512
        for train, 256 for test).
    seed : int
        Seed in [0, 2**32) of the subset (or of the synthetic data). The same
        seed selects the same samples, and a smaller subset is contained in
        a larger one with the same seed.
    **options
        ``label_type`` (``"fine"`` or ``"coarse"``) for ``"cifar100"``;
        ``num_classes``, ``channels``, ``image_size`` and ``noise`` for
        ``"synthetic"``.

    Returns
    -------
    dataset : torch.utils.data.TensorDataset
        Images of shape ``(N, C, H, W)`` in float32, standardised per
        channel, and labels of shape ``(N,)`` in int64.
    info : DatasetInfo
        Number of classes, channels, image size, the statistics used for
        standardisation and the source.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known names), an invalid
        split, seed, ``num_samples`` or option, a CIFAR file whose size is
        not a multiple of the record size, or a label out of range.
    FileNotFoundError
        If the CIFAR files are missing; the message lists the expected files.

    Examples
    --------
    >>> from hessop.datasets import load_dataset
    >>> train, info = load_dataset("digits", num_samples=300)
    >>> info.input_shape, info.num_classes, len(train)
    ((1, 8, 8), 10, 300)
    """
    if name not in DATASET_NAMES:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}"
        )
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_seed(seed)
    _check_options(name, options)

    if name == "digits":
        return load_digits_dataset(split, num_samples, seed)
    if name == "cifar10":
        return load_cifar_dataset(CIFAR10, root, split, num_samples, seed)
    if name == "cifar100":
        return load_cifar_dataset(CIFAR100, root, split, num_samples, seed, **options)
    return load_synthetic_dataset(split, num_samples, seed, **options)


def _check_options(name: str, options: dict[str, Any]) -> None:
    source = _OPTION_SOURCES[name]
    allowed: list[str] = []
    if source is not None:
        allowed = sorted(
            key
            for key in inspect.signature(source).parameters
            if key not in _COMMON_PARAMETERS
        )
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = f"its options are: {', '.join(allowed)}" if allowed else "it takes none"
        raise ValueError(
            f"dataset {name!r} does not take the option(s) {', '.join(unknown)}; "
            f"{valid}"
        )
