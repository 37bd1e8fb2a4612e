"""Datasets as tensors: scikit-learn digits, CIFAR-10/100 and a synthetic set.

:func:`load_dataset` returns a :class:`torch.utils.data.TensorDataset` of
standardised float32 images ``(N, C, H, W)`` and int64 labels, with a
:class:`DatasetInfo` that describes it.
"""

from hessop.datasets._common import DatasetInfo
from hessop.datasets._digits import DIGITS_TEST_FRACTION
from hessop.datasets._registry import DATASET_NAMES, load_dataset

__all__ = ["DATASET_NAMES", "DIGITS_TEST_FRACTION", "DatasetInfo", "load_dataset"]
