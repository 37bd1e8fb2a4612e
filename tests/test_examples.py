"""The example scripts and the docstring examples run and give sane output."""

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hessop._hessian
import hessop._layout

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


@pytest.mark.parametrize("module", [hessop._hessian, hessop._layout])
def test_docstring_examples(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
