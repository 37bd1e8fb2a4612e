"""hessop.partition: a deterministic split of batches across ranks."""

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from hessop import partition


@pytest.mark.parametrize("total", [0, 1, 5, 7, 12])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_partition_covers_items_once(total, size):
    items = list(range(total))
    shares = [partition(items, rank=rank, size=size) for rank in range(size)]
    joined = [item for share in shares for item in share]
    assert joined == items  # contiguous, in order, each item once
    lengths = [len(share) for share in shares]
    assert max(lengths) - min(lengths) <= 1


def test_partition_dataset_gives_subset():
    dataset = TensorDataset(torch.arange(10.0))
    share = partition(dataset, rank=1, size=3)
    assert isinstance(share, Subset)
    assert list(share.indices) == [4, 5, 6]


def test_partition_without_comm_returns_all():
    assert partition([1, 2, 3]) == [1, 2, 3]


def test_partition_bad_rank():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        partition([1, 2], rank=2, size=2)


def test_partition_needs_length():
    with pytest.raises(TypeError, match="list"):
        partition(iter([1, 2]), rank=0, size=1)
