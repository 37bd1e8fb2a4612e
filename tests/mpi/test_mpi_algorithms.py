"""Spectral algorithms on a distributed operator give the same result on every rank."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import hessop
from hessop import HessianOperator, partition


def distributed_operator(comm):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=generator)
    batches = [(x[i : i + 6], y[i : i + 6]) for i in range(0, 40, 6)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    serial = HessianOperator(model, nn.CrossEntropyLoss(), batches)
    H = HessianOperator(
        model, nn.CrossEntropyLoss(), partition(batches, comm), comm=comm
    )
    return H, serial


def same_on_every_rank(comm, *arrays):
    data = b"".join(np.ascontiguousarray(a, dtype=np.float64).tobytes() for a in arrays)
    gathered = comm.allgather(data)
    return all(item == gathered[0] for item in gathered)


@pytest.mark.parametrize("seed", [0, None])
def test_eigenvalues_identical_on_ranks(comm, seed):
    H, serial = distributed_operator(comm)
    result = hessop.eigenvalues(H, k=2, seed=seed)
    assert same_on_every_rank(comm, result.eigenvalues, result.eigenvectors)
    expected = np.sort(np.linalg.eigvalsh(serial.to_dense()))[::-1][:2]
    # The default rtol bounds each residual relative to the eigenvalue.
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, None])
def test_power_iteration_identical_on_ranks(comm, seed):
    H, _ = distributed_operator(comm)
    result = hessop.power_iteration(H, k=1, seed=seed)
    assert same_on_every_rank(comm, result.eigenvalues, result.eigenvectors)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
@pytest.mark.parametrize("seed", [1, None])
def test_trace_identical_on_ranks(comm, method, seed):
    H, _ = distributed_operator(comm)
    result = hessop.trace(H, method=method, num_matvecs=12, seed=seed)
    assert same_on_every_rank(comm, [result.estimate])


def test_hutchinson_rtol_stops_together(comm):
    H, _ = distributed_operator(comm)
    # rtol 0.25 stops after about 10 to 30 probes here, so the stopping
    # decision is taken mid-run rather than at the cap.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hessop.ConvergenceWarning)
        result = hessop.hutchinson(H, num_matvecs=60, rtol=0.25, seed=None)
    gathered = comm.allgather((result.num_matvecs, result.converged))
    assert all(item == gathered[0] for item in gathered)
    assert same_on_every_rank(comm, result.samples)


@pytest.mark.parametrize("seed", [2, None])
def test_slq_identical_on_ranks(comm, seed):
    H, _ = distributed_operator(comm)
    density = hessop.slq(H, num_steps=10, num_probes=2, seed=seed)
    grid, values = density.density()
    assert same_on_every_rank(comm, *density.nodes, *density.weights, grid, values)


def test_diagonal_identical_on_ranks(comm):
    H, _ = distributed_operator(comm)
    result = hessop.diagonal(H, num_matvecs=8, seed=None)
    assert same_on_every_rank(comm, result.estimate)
