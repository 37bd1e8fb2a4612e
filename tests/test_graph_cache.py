"""Keeping first-order graphs of several batches within a memory budget."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hessop import HessianOperator
from hessop._graph_cache import parse_budget


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batches(sizes=(6, 6, 6, 2)):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(sum(sizes), 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (sum(sizes),), generator=generator)
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def products(H, seed=0, count=3):
    rng = np.random.default_rng(seed)
    return [H.matvec(rng.standard_normal(H.shape[0])) for _ in range(count)]


@pytest.mark.parametrize("budget", [0, 20_000, "unlimited"])
def test_cached_products_equal_recomputed(budget):
    reference = HessianOperator(model(), nn.CrossEntropyLoss(), batches())
    H = HessianOperator(model(), nn.CrossEntropyLoss(), batches(), cache_budget=budget)
    for cached, recomputed in zip(products(H), products(reference), strict=True):
        np.testing.assert_allclose(cached, recomputed, rtol=1e-13, atol=1e-15)


def test_unlimited_budget_keeps_every_batch():
    H = HessianOperator(
        model(), nn.CrossEntropyLoss(), batches(), cache_budget="unlimited"
    )
    assert H._graph_cache.complete
    assert sorted(H._graph_cache.entries) == [0, 1, 2, 3]
    assert H._graph_cache.nbytes > 0


def test_partial_budget_keeps_leading_batches():
    unlimited = HessianOperator(
        model(), nn.CrossEntropyLoss(), batches(), cache_budget=math.inf
    )
    per_batch = unlimited._graph_cache.entries[0].nbytes
    H = HessianOperator(
        model(), nn.CrossEntropyLoss(), batches(), cache_budget=2.5 * per_batch
    )
    assert sorted(H._graph_cache.entries) == [0, 1]
    assert not H._graph_cache.complete
    assert H._graph_cache.nbytes <= 2.5 * per_batch


def test_loader_cached_only_when_all_fit():
    x = torch.cat([b[0] for b in batches()])
    y = torch.cat([b[1] for b in batches()])
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True)
    H = HessianOperator(model(), nn.CrossEntropyLoss(), loader, cache_budget="1GiB")
    assert H._graph_cache.complete
    small = HessianOperator(model(), nn.CrossEntropyLoss(), loader, cache_budget=100)
    assert small._graph_cache.gave_up
    assert not small._graph_cache.entries
    reference = HessianOperator(model(), nn.CrossEntropyLoss(), [(x, y)])
    v = np.ones(H.shape[0])
    np.testing.assert_allclose(H.matvec(v), reference.matvec(v), rtol=1e-12)
    np.testing.assert_allclose(small.matvec(v), reference.matvec(v), rtol=1e-12)


def test_complete_cache_does_not_read_data():
    class CountingList(list):
        iterations = 0

        def __iter__(self):
            CountingList.iterations += 1
            return super().__iter__()

    data = CountingList(batches())
    H = HessianOperator(model(), nn.CrossEntropyLoss(), data, cache_budget="unlimited")
    before = CountingList.iterations
    products(H)
    assert CountingList.iterations == before


def test_parameter_change_invalidates_cache():
    net = model()
    H = HessianOperator(net, nn.CrossEntropyLoss(), batches(), cache_budget="unlimited")
    v = np.ones(H.shape[0])
    H.matvec(v)
    with torch.no_grad():
        net[0].weight.mul_(1.5)
    fresh = HessianOperator(net, nn.CrossEntropyLoss(), batches())
    np.testing.assert_allclose(H.matvec(v), fresh.matvec(v), rtol=1e-13)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("2KB", 2000),
        ("1.5MiB", 1.5 * 2**20),
        ("2 GiB", 2 * 2**30),
        (10, 10),
    ],
)
def test_parse_budget_units(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1MB", -5])
def test_parse_budget_rejects(bad):
    with pytest.raises(ValueError, match="cache_budget"):
        parse_budget(bad)
