"""lanczos: the tridiagonalisation, its breakdown and its basis."""

import numpy as np
import pytest
from hypothesis import given, settings
from scipy.sparse.linalg import LinearOperator
from spectra import distinct_spectra, with_spectrum

import hessop


def test_lanczos_identity_breakdown():
    result = hessop.lanczos(3.0 * np.eye(50), num_steps=10, seed=0)
    assert result.num_steps == 1
    # alpha = v^T (3 v) for a unit v, exact up to rounding.
    np.testing.assert_allclose(result.alpha, [3.0], rtol=1e-15)
    assert result.beta.size == 0
    assert result.breakdown
    assert result.num_matvecs == 1


def test_lanczos_identity_no_nan():
    result = hessop.lanczos(3.0 * np.eye(50), num_steps=10, seed=0, return_basis=True)
    assert np.all(np.isfinite(result.basis))
    assert np.isfinite(result.residual_norm)
    assert np.all(np.isfinite(result.ritz_pairs()[0]))


def test_lanczos_identity_without_reorthogonalization():
    result = hessop.lanczos(
        3.0 * np.eye(50), num_steps=10, seed=0, reorthogonalize=False
    )
    assert result.num_steps == 1
    assert result.breakdown


def test_lanczos_relation():
    A = with_spectrum(np.linspace(-2.0, 5.0, 40), seed=1)
    result = hessop.lanczos(A, num_steps=15, seed=1, return_basis=True)
    Q, T = result.basis, result.tridiagonal()
    # Q^T A Q equals T up to rounding (1e-12 on entries of size up to 5).
    np.testing.assert_allclose(Q.T @ A @ Q, T, atol=1e-12)


def test_lanczos_basis_orthonormal():
    A = with_spectrum(np.linspace(-2.0, 5.0, 40), seed=2)
    result = hessop.lanczos(A, num_steps=30, seed=2, return_basis=True)
    Q = result.basis
    np.testing.assert_allclose(Q.T @ Q, np.eye(30), atol=1e-13)


def test_lanczos_residual_norm():
    A = with_spectrum(np.linspace(-2.0, 5.0, 40), seed=3)
    result = hessop.lanczos(A, num_steps=10, seed=3, return_basis=True)
    Q, T = result.basis, result.tridiagonal()
    R = A @ Q - Q @ T
    # Only the last column of A Q - Q T is non-zero, with norm beta_m.
    assert np.linalg.norm(R[:, :-1]) <= 1e-12
    assert np.linalg.norm(R[:, -1]) == pytest.approx(result.residual_norm, rel=1e-10)


def test_lanczos_full_space_exact():
    eigenvalues = np.linspace(-3.0, 4.0, 25)
    A = with_spectrum(eigenvalues, seed=4)
    result = hessop.lanczos(A, num_steps=100, seed=4)
    # With reorthogonalisation the run stops when the basis fills R^n.
    assert result.num_steps == 25
    assert result.breakdown
    np.testing.assert_allclose(result.ritz_pairs()[0], eigenvalues, atol=1e-12)


def test_lanczos_without_reorthogonalization_beyond_n():
    A = with_spectrum(np.linspace(1.0, 2.0, 10), seed=5)
    result = hessop.lanczos(A, num_steps=30, seed=5, reorthogonalize=False)
    # Without reorthogonalisation nothing limits the run to n steps.
    assert result.num_steps == 30
    assert np.all(np.isfinite(result.alpha))


def test_lanczos_extreme_ritz_values():
    eigenvalues = np.concatenate([[-50.0], np.linspace(0.0, 1.0, 198), [100.0]])
    A = with_spectrum(eigenvalues, seed=6)
    theta = hessop.lanczos(A, num_steps=20, seed=6).ritz_pairs()[0]
    # Outliers converge first: 20 steps give both to 1e-8.
    assert theta[-1] == pytest.approx(100.0, rel=1e-8)
    assert theta[0] == pytest.approx(-50.0, rel=1e-8)


def test_lanczos_start_vector_eigenvector():
    A = np.diag([1.0, 2.0, 3.0])
    result = hessop.lanczos(A, num_steps=3, v0=[0.0, 0.0, 5.0])
    np.testing.assert_allclose(result.alpha, [3.0], rtol=1e-15)
    assert result.breakdown


def test_lanczos_float32_operator():
    A = with_spectrum(np.linspace(1.0, 2.0, 10), seed=7).astype(np.float32)
    result = hessop.lanczos(A, num_steps=5, seed=7, return_basis=True)
    assert result.alpha.dtype == np.float64
    assert result.basis.dtype == np.float64


def test_lanczos_matvec_only_operator():
    A = with_spectrum(np.linspace(1.0, 2.0, 10), seed=8)
    op = LinearOperator(A.shape, matvec=lambda v: A @ v, dtype=np.float64)
    result = hessop.lanczos(op, num_steps=10, seed=8)
    np.testing.assert_allclose(
        np.sort(result.ritz_pairs()[0]), np.linspace(1.0, 2.0, 10), atol=1e-12
    )


def test_lanczos_seed_reproducible():
    A = with_spectrum(np.linspace(1.0, 2.0, 10), seed=9)
    first = hessop.lanczos(A, num_steps=5, seed=9)
    second = hessop.lanczos(A, num_steps=5, seed=9)
    np.testing.assert_array_equal(first.alpha, second.alpha)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_steps": 0}, ValueError, "num_steps must be at least 1"),
        ({"num_steps": 2.0}, TypeError, "num_steps must be an integer"),
        ({"num_steps": 2, "v0": [1.0, float("nan"), 0.0]}, ValueError, "NaN or inf"),
        ({"num_steps": 2, "v0": [1j, 0.0, 0.0]}, TypeError, "complex"),
    ],
)
def test_lanczos_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hessop.lanczos(np.eye(3), **kwargs)


def test_lanczos_rejects_complex_operator():
    with pytest.raises(TypeError, match="complex"):
        hessop.lanczos(np.eye(3, dtype=complex), num_steps=2)


def test_lanczos_rejects_vector():
    with pytest.raises(ValueError, match="2-D square array"):
        hessop.lanczos(np.ones(3), num_steps=2)


def test_lanczos_rejects_list():
    with pytest.raises(TypeError, match=r"numpy\.asarray"):
        hessop.lanczos([[1.0, 0.0], [0.0, 1.0]], num_steps=2)


@settings(max_examples=25, deadline=None)
@given(case=distinct_spectra(min_size=2, max_size=30))
def test_lanczos_spectrum_property(case):
    eigenvalues, seed = case
    A = with_spectrum(eigenvalues, seed)
    result = hessop.lanczos(A, num_steps=eigenvalues.size, seed=seed)
    theta = result.ritz_pairs()[0]
    # n steps with full reorthogonalisation give T similar to A, so the Ritz
    # values are the eigenvalues up to rounding (1e-10 of at most 10).
    assert theta.size == eigenvalues.size
    np.testing.assert_allclose(theta, eigenvalues, atol=1e-10)
