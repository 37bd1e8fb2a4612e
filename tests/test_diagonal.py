"""diagonal: exact cases, unbiasedness and the standard error."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spectra import with_spectrum

import hessop


def test_diagonal_exact_one_probe():
    D = np.diag([1.0, -2.0, 3.5, 0.0])
    result = hessop.diagonal(D, num_matvecs=1, seed=0)
    # z * (D z) = D_ii z_i^2 = D_ii exactly for signs z_i.
    np.testing.assert_array_equal(result.estimate, [1.0, -2.0, 3.5, 0.0])
    assert result.stderr is None
    assert result.num_matvecs == 1


@settings(max_examples=30, deadline=None)
@given(
    entries=st.lists(
        st.floats(-1e3, 1e3, allow_subnormal=False), min_size=1, max_size=40
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_diagonal_exact_property(entries, seed):
    result = hessop.diagonal(np.diag(entries), num_matvecs=3, seed=seed)
    # Every sample is exact; averaging three equal numbers rounds at 1e-15.
    np.testing.assert_allclose(result.estimate, entries, rtol=1e-14, atol=0)
    assert np.all(result.stderr <= 1e-14 * np.abs(entries))


def test_diagonal_unbiased():
    A = with_spectrum(np.linspace(-1.0, 3.0, 30), seed=1)
    result = hessop.diagonal(A, num_matvecs=3000, seed=1, block_size=250)
    z_scores = np.abs(result.estimate - np.diag(A)) / result.stderr
    # 30 entries each 6 standard errors off has probability below 1e-7.
    assert z_scores.max() < 6.0


def test_diagonal_stderr_formula():
    A = with_spectrum(np.linspace(-1.0, 3.0, 10), seed=2)
    result = hessop.diagonal(A, num_matvecs=25, seed=2, block_size=4)
    rng = np.random.default_rng(2)
    Z = np.where(rng.random((25, 10)) < 0.5, -1.0, 1.0).T
    samples = Z * (A @ Z)
    np.testing.assert_allclose(result.estimate, samples.mean(axis=1), rtol=1e-12)
    expected = samples.std(axis=1, ddof=1) / 5.0
    np.testing.assert_allclose(result.stderr, expected, rtol=1e-10)


def test_diagonal_block_size_invariant():
    A = with_spectrum(np.linspace(-1.0, 3.0, 20), seed=3)
    one = hessop.diagonal(A, num_matvecs=17, seed=3, block_size=1)
    many = hessop.diagonal(A, num_matvecs=17, seed=3, block_size=6)
    # Same probes; only the order of the running-mean updates differs.
    np.testing.assert_allclose(one.estimate, many.estimate, rtol=1e-12, atol=1e-14)


def test_diagonal_trace_consistent():
    # With the same seed, diagonal and hutchinson see the same probes, so the
    # sum of the diagonal estimate is the trace estimate.
    A = with_spectrum(np.linspace(-1.0, 3.0, 20), seed=4)
    diagonal = hessop.diagonal(A, num_matvecs=12, seed=4)
    trace = hessop.hutchinson(A, num_matvecs=12, seed=4)
    assert diagonal.estimate.sum() == pytest.approx(trace.estimate, rel=1e-12)


@pytest.mark.parametrize("distribution", ["gaussian", "sphere"])
def test_diagonal_other_distributions(distribution):
    A = with_spectrum(np.linspace(-1.0, 3.0, 15), seed=5)
    result = hessop.diagonal(A, num_matvecs=3000, seed=5, distribution=distribution)
    z_scores = np.abs(result.estimate - np.diag(A)) / result.stderr
    # 15 entries each 6 standard errors off has probability below 1e-7.
    assert z_scores.max() < 6.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_matvecs": 0}, ValueError, "num_matvecs must be at least 1"),
        ({"distribution": "normal"}, ValueError, "'rademacher', 'gaussian', 'sphere'"),
        ({"block_size": 0}, ValueError, "block_size must be at least 1"),
    ],
)
def test_diagonal_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hessop.diagonal(np.eye(3), **kwargs)
