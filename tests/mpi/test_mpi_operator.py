"""HessianOperator over MPI ranks against the serial operator.

Run under ``mpiexec -n N python -m pytest tests/mpi`` for any N; expected
values are derived from the communicator's size.
"""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from hessop import HessianOperator, partition

BATCH_SIZES = [5, 3, 4, 1, 6, 2, 3]


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def all_batches():
    generator = torch.Generator().manual_seed(1)
    total = sum(BATCH_SIZES)
    x = torch.randn(total, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (total,), generator=generator)
    batches, start = [], 0
    for size in BATCH_SIZES:
        batches.append((x[start : start + size], y[start : start + size]))
        start += size
    return batches


def gather_equal(comm, array):
    """Return whether every rank holds bitwise the same array."""
    digests = comm.allgather(np.ascontiguousarray(array).tobytes())
    return all(digest == digests[0] for digest in digests)


def serial_operator():
    return HessianOperator(model(), nn.CrossEntropyLoss(), all_batches())


def test_even_partition_matches_serial(comm):
    local = partition(all_batches(), comm)
    H = HessianOperator(model(), nn.CrossEntropyLoss(), local, comm=comm)
    serial = serial_operator()
    assert H.num_samples == sum(BATCH_SIZES)
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    result = H.matvec(v)
    expected = serial.matvec(v)
    assert np.abs(result - expected).max() <= 1e-12 * np.abs(expected).max()
    assert gather_equal(comm, result)


def test_uneven_partition_with_empty_rank(comm):
    batches = all_batches()
    rank, size = comm.Get_rank(), comm.Get_size()
    # Rank 0 takes the first batch only, the last rank none (when there are
    # several ranks), and the rest go round-robin to the others.
    if size == 1:
        local = batches
    elif rank == 0:
        local = batches[:1]
    elif rank == size - 1:
        local = []
    else:
        workers = max(size - 2, 1)
        local = batches[1:][rank - 1 :: workers]
    if size == 2 and rank == 0:
        local = batches  # two ranks: all data on rank 0, none on rank 1
    H = HessianOperator(model(), nn.CrossEntropyLoss(), local, comm=comm)
    assert H.num_samples == sum(BATCH_SIZES)
    X = np.random.default_rng(1).standard_normal((H.shape[0], 3))
    result = H.matmat(X)
    expected = serial_operator().matmat(X)
    assert np.abs(result - expected).max() <= 1e-12 * np.abs(expected).max()
    assert gather_equal(comm, result)


def test_single_batch_per_rank_dense(comm):
    batches = all_batches()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    mine = partition(list(range(len(y))), comm)
    local = (x[mine], y[mine])
    H = HessianOperator(model(), nn.CrossEntropyLoss(), local, comm=comm)
    dense = H.to_dense()
    expected = serial_operator().to_dense()
    assert np.abs(dense - expected).max() <= 1e-12 * np.abs(expected).max()
    assert gather_equal(comm, dense)


def test_hvp_torch_path_identical_on_ranks(comm):
    H = HessianOperator(
        model(), nn.CrossEntropyLoss(), partition(all_batches(), comm), comm=comm
    )
    v = torch.ones(H.shape[0], dtype=torch.float64)
    assert gather_equal(comm, H.hvp(v).numpy())


class FailingBatches:
    """Batches that raise on one rank from a given pass on."""

    def __init__(self, batches, failing, from_pass):
        self.batches = batches
        self.failing = failing
        self.from_pass = from_pass
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        if self.failing and self.passes >= self.from_pass:
            raise OSError("the batch file could not be read")
        return iter(self.batches)


def test_rank_failure_mid_matvec_reaches_every_rank(comm):
    size = comm.Get_size()
    failing_rank = size - 1
    local = FailingBatches(
        partition(all_batches(), comm), comm.Get_rank() == failing_rank, from_pass=3
    )
    H = HessianOperator(model(), nn.CrossEntropyLoss(), local, comm=comm)
    with pytest.raises(RuntimeError, match=f"failed on rank {failing_rank} of {size}"):
        H.matvec(np.ones(H.shape[0]))
    # The ranks stay in step: a later collective still works.
    assert comm.allreduce(1) == size


def test_non_finite_loss_on_one_rank(comm):
    size = comm.Get_size()
    batches = partition(all_batches(), comm)
    if comm.Get_rank() == size - 1:
        x, y = batches[-1]
        x = x.clone()
        x[0, 0] = float("nan")
        batches[-1] = (x, y)
    with pytest.raises(ValueError, match=f"rank {size - 1} of {size}.*not finite"):
        HessianOperator(model(), nn.CrossEntropyLoss(), batches, comm=comm)


def test_parameter_mismatch_names_rank(comm):
    size = comm.Get_size()
    if size == 1:
        pytest.skip("needs two ranks")
    net = model()
    if comm.Get_rank() == 1:
        with torch.no_grad():
            net[0].weight[0, 0] += 1e-12
    with pytest.raises(ValueError, match=f"values.*rank 1 of {size}"):
        HessianOperator(
            net, nn.CrossEntropyLoss(), partition(all_batches(), comm), comm=comm
        )


def test_layout_mismatch_names_rank(comm):
    size = comm.Get_size()
    if size == 1:
        pytest.skip("needs two ranks")
    params = ["0.weight"] if comm.Get_rank() == size - 1 else None
    with pytest.raises(ValueError, match=f"layout.*rank {size - 1} of {size}"):
        HessianOperator(
            model(),
            nn.CrossEntropyLoss(),
            partition(all_batches(), comm),
            params,
            comm=comm,
        )


def test_no_samples_anywhere(comm):
    with pytest.raises(ValueError, match=r"no samples.*every rank"):
        HessianOperator(model(), nn.CrossEntropyLoss(), [], comm=comm)


def test_bad_argument_on_one_rank_fails_everywhere(comm):
    size = comm.Get_size()
    loss_fn = "not callable" if comm.Get_rank() == size - 1 else nn.CrossEntropyLoss()
    with pytest.raises(TypeError, match=rf"rank {size - 1} of {size}.*callable"):
        HessianOperator(model(), loss_fn, partition(all_batches(), comm), comm=comm)


def test_only_rank_zero_logs_info(comm, caplog):
    with caplog.at_level(logging.INFO, logger="hessop._hessian"):
        HessianOperator(
            model(), nn.CrossEntropyLoss(), partition(all_batches(), comm), comm=comm
        )
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    if comm.Get_rank() == 0:
        assert infos
    else:
        assert not infos
