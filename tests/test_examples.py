"""The example scripts and the docstring examples run and give sane output."""

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hessop._hessian
import hessop._layout
import hessop._mpi

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args, timeout=300):
    environment = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )


def test_digits_eigsh_example():
    result = run_example("digits_eigsh.py", "--epochs", "2", "--k", "3")
    assert result.returncode == 0, result.stderr
    assert "eigenvalue" in result.stdout
    rows = [
        line.split()
        for line in result.stdout.splitlines()
        if line.strip()[:1].isdigit()
    ]
    assert len(rows) == 3
    residuals = [float(row[2]) for row in rows]
    assert max(residuals) <= 1e-4  # eigsh tol=1e-6 on eigenvalues of order 0.1-1


def test_eigsh_lobpcg_example():
    result = run_example("eigsh_lobpcg.py")
    assert result.returncode == 0, result.stderr
    difference = float(result.stdout.split("two:")[1])
    assert difference <= 1e-6  # eigsh tol 1e-10, lobpcg tol 1e-8


def test_explicit_hessian_check_example():
    result = run_example("explicit_hessian_check.py")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "max relative difference" in result.stdout


def test_influence_cg_example():
    result = run_example("influence_cg.py")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "info 0" in result.stdout


def test_mpi_example_two_ranks():
    pytest.importorskip("mpi4py")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("mpiexec is not installed beside this Python")
    result = subprocess.run(
        [
            str(mpiexec),
            "-n",
            "2",
            sys.executable,
            "-m",
            "mpi4py",
            str(ROOT / "examples" / "mpi_eigsh.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 ranks, 1797 samples" in result.stdout
    assert "identical on every rank: True" in result.stdout


@pytest.mark.parametrize("module", [hessop._hessian, hessop._layout, hessop._mpi])
def test_docstring_examples(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
