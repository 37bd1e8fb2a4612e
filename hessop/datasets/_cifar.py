"""CIFAR-10 and CIFAR-100 from a local directory in the binary format.

The binary versions (``cifar-10-binary.tar.gz`` and ``cifar-100-binary.tar.gz``
from https://www.cs.toronto.edu/~kriz/cifar.html) store fixed-size records
with no header. A CIFAR-10 record is 1 label byte followed by 3072 pixel
bytes. A CIFAR-100 record is a coarse label byte, a fine label byte and 3072
pixel bytes. The pixels of one image are channel-major: 1024 red values, then
1024 green, then 1024 blue, each a 32x32 image in row-major order. Reading
these files needs no pickle, so no code from the files can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hessop.datasets._common import DatasetInfo, select_subset, standardize

__all__ = ["CIFAR10", "CIFAR100", "CifarFormat", "load_cifar_dataset"]

CHANNELS = 3
IMAGE_SIZE = 32
PIXEL_BYTES = CHANNELS * IMAGE_SIZE * IMAGE_SIZE
_MAX_PIXEL_VALUE = 255.0


@dataclass(frozen=True)
class CifarFormat:
    """File layout of one CIFAR variant in the binary format."""

    name: str
    title: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int
    #: Directory name that the official archive extracts to.
    archive_directory: str

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXEL_BYTES

    def files(self, split: str) -> tuple[str, ...]:
        return self.train_files if split == "train" else self.test_files

    def describe_files(self) -> str:
        return ", ".join(self.train_files + self.test_files)


CIFAR10 = CifarFormat(
    name="cifar10",
    title="CIFAR-10",
    train_files=tuple(f"data_batch_{index}.bin" for index in range(1, 6)),
    test_files=("test_batch.bin",),
    label_bytes=1,
    archive_directory="cifar-10-batches-bin",
)
CIFAR100 = CifarFormat(
    name="cifar100",
    title="CIFAR-100",
    train_files=("train.bin",),
    test_files=("test.bin",),
    label_bytes=2,
    archive_directory="cifar-100-binary",
)

# Position of each label type in a CIFAR-100 record, and its number of classes.
_CIFAR100_LABELS = {"coarse": (0, 20), "fine": (1, 100)}


def find_cifar_directory(root: str | Path | None, cifar: CifarFormat) -> Path:
    """Return the directory under ``root`` that contains all files of ``cifar``.

    ``root`` itself is tried first, then ``root / cifar.archive_directory``,
    where the official archive extracts to.

    Raises
    ------
    ValueError
        If ``root`` is None.
    FileNotFoundError
        If ``root`` is not a directory, or if neither candidate contains all
        expected files. The message lists the missing files.
    """
    if root is None:
        raise ValueError(
            f"dataset {cifar.name!r} needs root, a directory with the "
            f"{cifar.title} binary files: {cifar.describe_files()}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{cifar.title} directory not found: {root} is not a directory"
        )

    candidates = [root, root / cifar.archive_directory]
    expected = cifar.train_files + cifar.test_files
    for candidate in candidates:
        if all((candidate / file).is_file() for file in expected):
            return candidate

    # Report the candidate that came closest, which is where the user most
    # likely put the files.
    missing_per_candidate = [
        [file for file in expected if not (candidate / file).is_file()]
        for candidate in candidates
    ]
    closest = min(range(len(candidates)), key=lambda i: len(missing_per_candidate[i]))
    missing = missing_per_candidate[closest]
    looked_in = f"looked in {candidates[0]} and {candidates[1]}"
    if len(missing) == len(expected):
        raise FileNotFoundError(
            f"no {cifar.title} binary files found ({looked_in}). Expected "
            f"{cifar.describe_files()}, as extracted from the binary version "
            f"of {cifar.title}."
        )
    raise FileNotFoundError(
        f"{cifar.title} binary files missing in {candidates[closest]}: "
        f"{', '.join(missing)} not found ({looked_in}). Expected all of "
        f"{cifar.describe_files()}."
    )


def read_records(
    path: Path, cifar: CifarFormat, num_classes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary file into labels and images.

    Parameters
    ----------
    path : Path
        The file.
    cifar : CifarFormat
        Its layout.
    num_classes : tuple of int
        Number of classes for each label byte, to validate the labels.

    Returns
    -------
    labels : numpy.ndarray
        uint8, shape ``(N, cifar.label_bytes)``.
    images : numpy.ndarray
        uint8, shape ``(N, 3, 32, 32)``, a view into the file contents.

    Raises
    ------
    ValueError
        If the file size is not a positive multiple of the record size, or a
        label is out of range. Either means a truncated file or another format.
    """
    size = path.stat().st_size
    record = cifar.record_bytes
    if size == 0 or size % record != 0:
        raise ValueError(
            f"invalid {cifar.title} file {path}: its size of {size} bytes is not "
            f"a positive multiple of the {record}-byte record "
            f"({cifar.label_bytes} label byte(s) + {PIXEL_BYTES} pixel bytes). "
            "The file is truncated or not in the binary format."
        )

    records = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    labels = records[:, : cifar.label_bytes]
    for position, count in enumerate(num_classes):
        largest = int(labels[:, position].max())
        if largest >= count:
            raise ValueError(
                f"invalid {cifar.title} file {path}: label byte {position} "
                f"contains {largest}, but labels must be below {count}. The "
                "file is corrupt or not in the binary format."
            )
    images = records[:, cifar.label_bytes :].reshape(
        -1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE
    )
    return labels, images


def channel_statistics(
    images: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the per-channel mean and standard deviation of uint8 images.

    The statistics are of the pixels scaled to [0, 1]. They are computed
    exactly from a histogram of the 256 byte values, so no float copy of the
    images is made.

    Raises
    ------
    ValueError
        If a channel is constant, since it cannot be standardised.
    """
    values = np.arange(256, dtype=np.float64) / _MAX_PIXEL_VALUE
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = np.bincount(images[:, channel].ravel(), minlength=256)
        total = counts.sum()
        mean = counts @ values / total
        variance = counts @ (values - mean) ** 2 / total
        if variance == 0.0:
            raise ValueError(
                f"channel {channel} of the training images is constant "
                f"({mean * _MAX_PIXEL_VALUE:.0f} everywhere), so it cannot be "
                "standardised"
            )
        means.append(float(mean))
        stds.append(float(np.sqrt(variance)))
    return tuple(means), tuple(stds)


def load_cifar_dataset(
    cifar: CifarFormat,
    root: str | Path | None,
    split: str,
    num_samples: int | None,
    seed: int,
    label_type: str = "fine",
) -> tuple[TensorDataset, DatasetInfo]:
    """Load a CIFAR split as standardised 3x32x32 float32 images.

    Images are scaled to [0, 1] and standardised per channel with the mean and
    standard deviation of the whole training set. The training files are
    therefore read for the test split too.

    Parameters
    ----------
    cifar : CifarFormat
        :data:`CIFAR10` or :data:`CIFAR100`.
    root, split, num_samples, seed
        As in :func:`hessop.datasets.load_dataset`.
    label_type : {"fine", "coarse"}
        CIFAR-100 only: the 100 fine classes or the 20 coarse superclasses.
    """
    if cifar is CIFAR100:
        if label_type not in _CIFAR100_LABELS:
            raise ValueError(
                f"label_type must be 'fine' or 'coarse', got {label_type!r}"
            )
        label_position, num_classes = _CIFAR100_LABELS[label_type]
        classes_per_byte = (20, 100)
    else:
        if label_type != "fine":
            raise ValueError(
                f"label_type applies to cifar100 only, got {label_type!r} for "
                f"{cifar.name!r}"
            )
        label_position, num_classes = 0, 10
        classes_per_byte = (10,)

    directory = find_cifar_directory(root, cifar)
    train_parts = [
        read_records(directory / file, cifar, classes_per_byte)
        for file in cifar.train_files
    ]
    train_images = np.concatenate([images for _, images in train_parts])
    mean, std = channel_statistics(train_images)

    if split == "train":
        labels = np.concatenate([labels for labels, _ in train_parts])
        images = train_images
    else:
        test_parts = [
            read_records(directory / file, cifar, classes_per_byte)
            for file in cifar.test_files
        ]
        labels = np.concatenate([labels for labels, _ in test_parts])
        images = np.concatenate([images for _, images in test_parts])

    chosen = select_subset(
        len(images), num_samples, seed, f"the {cifar.title} {split} split"
    )
    inputs = torch.from_numpy(images[chosen]).to(torch.float32).div_(_MAX_PIXEL_VALUE)
    inputs = standardize(inputs, mean, std)
    targets = torch.from_numpy(labels[chosen, label_position].astype(np.int64))

    info = DatasetInfo(
        name=cifar.name,
        split=split,
        num_samples=len(chosen),
        num_classes=num_classes,
        channels=CHANNELS,
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mean=mean,
        std=std,
        source=str(directory),
    )
    return TensorDataset(inputs, targets), info
