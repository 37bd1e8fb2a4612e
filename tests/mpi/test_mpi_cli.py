"""``hessop analyze`` under mpiexec against the serial library.

Run under ``mpiexec -n N python -m pytest tests/mpi`` for any N. Every rank
calls the command in-process; rank 0 alone may print and write.
"""

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hessop
from hessop.cli import main
from hessop.datasets import load_dataset
from hessop.landscape import loss_landscape_1d
from hessop.models import build_model

NUM_SAMPLES = 60
RUN = [
    "analyze",
    "--model",
    "resnet8",
    "--epochs",
    "1",
    "--train-samples",
    "100",
    "--num-samples",
    str(NUM_SAMPLES),
    "--batch-size",
    "16",
    "--dtype",
    "float64",
    "--threads",
    "1",
    "--metrics",
    "eigenvalues",
    "trace",
    "landscape",
    "--top-k",
    "2",
    "--eig-max-matvecs",
    "30",
    "--trace-matvecs",
    "6",
    "--landscape-directions",
    "eigen",
    "--landscape-points",
    "3",
    "--landscape-grid",
    "0",
    "--no-plots",
    "--quiet",
    "--mpi",
    "on",
]


def run_cli(arguments):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main([str(argument) for argument in arguments])
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def shared_directory(comm):
    """A temporary directory that rank 0 creates and every rank uses."""
    path = tempfile.mkdtemp(prefix="hessop-mpi-") if comm.Get_rank() == 0 else None
    path = Path(comm.bcast(path, root=0))
    yield path
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(path)


def test_analyze_matches_serial_library(comm, shared_directory):
    out = shared_directory / "out"
    status, stdout, stderr = run_cli([*RUN, "--out", out])
    statuses = comm.allgather(status)
    assert statuses == [0] * comm.Get_size(), stderr
    if comm.Get_rank() == 0:
        assert "top eigenvalue λ1" in stdout
    else:
        assert stdout == ""
        assert stderr == ""
    comm.Barrier()

    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["mpi_ranks"] == comm.Get_size()
    shares = report["data"]["samples_per_rank"]
    assert sum(shares) == NUM_SAMPLES
    assert len(shares) == comm.Get_size()
    assert max(shares) - min(shares) <= 1

    # The serial library on all samples, with the weights that rank 0 trained.
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    saved = torch.load(out / "model.pt", weights_only=True)
    model.load_state_dict(saved["state_dict"])
    model = model.double().eval()
    dataset, _ = load_dataset("digits", num_samples=NUM_SAMPLES, seed=0)
    x, y = dataset.tensors
    data = (x.double(), y)
    H = hessop.HessianOperator(model, nn.CrossEntropyLoss(), data)

    eigen = hessop.eigenvalues(
        H, 2, rtol=1e-3, max_matvecs=30, seed=np.random.default_rng([0, 1])
    )
    np.testing.assert_allclose(
        report["metrics"]["eigenvalues"]["eigenvalues"], eigen.eigenvalues, rtol=1e-7
    )
    trace = hessop.trace(H, num_matvecs=6, seed=np.random.default_rng([0, 2]))
    assert report["metrics"]["trace"]["estimate"] == pytest.approx(
        trace.estimate, rel=1e-9
    )
    vectors = np.load(out / "eigenvectors.npz")["eigenvectors"]
    direction = H.unflatten(torch.from_numpy(vectors[:, 0].copy()))
    line = loss_landscape_1d(
        model, nn.CrossEntropyLoss(), data, direction, np.linspace(-0.5, 0.5, 3)
    )
    np.testing.assert_allclose(
        report["metrics"]["landscape"]["parts"]["eigen_1d"]["losses"],
        line.losses,
        rtol=1e-9,
    )


def test_error_printed_by_rank_zero_only(comm, shared_directory):
    missing = shared_directory / "missing.pt"
    status, stdout, stderr = run_cli(
        [*RUN, "--weights", missing, "--out", shared_directory / "out"]
    )
    assert comm.allgather(status) == [1] * comm.Get_size()
    assert stdout == ""
    if comm.Get_rank() == 0:
        assert stderr == f"hessop analyze: error: weights file not found: {missing}\n"
    else:
        assert stderr == ""
