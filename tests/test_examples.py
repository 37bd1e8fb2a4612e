"""The example scripts and the docstring examples run and give sane output."""

import doctest
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import hessop

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


def test_resnet_trace_density_example(tmp_path):
    result = run_example("resnet_trace_density.py", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "trace (hutch++, 30 products)" in result.stdout
    png = (tmp_path / "resnet8_digits_density.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_stagewise_example():
    result = run_example("stagewise.py")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]
    assert [row[0] for row in rows] == ["stage1", "stage2", "stage3"]
    assert all(float(row[2]) > 0 for row in rows)  # top eigenvalue of a trained net


def test_loss_landscape_example(tmp_path):
    result = run_example("loss_landscape.py", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    eigenvalue = float(lines[0].split()[2])
    curvature = float(lines[1].split(":")[1])
    # Step 0.01: the second difference differs from the eigenvalue by about
    # 1e-4 times the fourth derivative, far below 1% on this smooth loss.
    assert abs(curvature - eigenvalue) <= 0.01 * eigenvalue
    assert (tmp_path / "loss_landscape_1d.png").exists()


def public_modules():
    """Every module of the hessop package, for their docstring examples."""
    names = [info.name for info in pkgutil.walk_packages(hessop.__path__, "hessop.")]
    return [name for name in names if name != "hessop.__main__"]


@pytest.mark.parametrize("name", public_modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
