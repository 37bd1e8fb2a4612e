"""power_iteration on matrices with known spectra."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from spectra import distinct_spectra, with_spectrum

import hessop

DIAG = np.diag([-5.0, 1.0, 2.0])


@pytest.mark.parametrize(
    ("which", "expected"), [("LM", -5.0), ("LA", 2.0), ("SA", -5.0)]
)
def test_power_diag_which(which, expected):
    result = hessop.power_iteration(DIAG, which=which, seed=0)
    # rtol defaults to 1.5e-8, so the eigenvalue is within 1e-7 relative.
    assert result.eigenvalues[0] == pytest.approx(expected, rel=1e-7)
    assert result.converged.all()


def test_power_all_negative_la():
    # The dominant eigenvalue -3 is negative; 'LA' must still return -1.
    result = hessop.power_iteration(np.diag([-3.0, -2.0, -1.0]), which="LA", seed=1)
    assert result.eigenvalues[0] == pytest.approx(-1.0, rel=1e-7)


def test_power_all_positive_sa():
    result = hessop.power_iteration(np.diag([1.0, 2.0, 3.0]), which="SA", seed=2)
    assert result.eigenvalues[0] == pytest.approx(1.0, rel=1e-7)


@pytest.mark.parametrize(
    ("diagonal", "which", "expected"),
    [
        ([-5.01, 5.0, 1.0], "LA", 5.0),
        ([-10.0, 9.99], "LA", 9.99),
        ([-9.99, 10.0], "LA", 10.0),
        ([5.01, -5.0, 1.0], "SA", -5.0),
    ],
)
def test_power_near_magnitude_tie(diagonal, which, expected):
    # The unshifted iteration converges slowly (ratio 0.998 or 0.999), and in
    # three of the cases to the wrong end. The shift logic must still find
    # the wanted end within the default budget of 1000 products.
    result = hessop.power_iteration(np.diag(diagonal), which=which, seed=16)
    assert result.eigenvalues[0] == pytest.approx(expected, rel=1e-7)
    assert result.converged.all()


@pytest.mark.parametrize(("which", "expected"), [("LA", 5.0), ("SA", -5.0)])
def test_power_magnitude_tie(which, expected):
    # |5| = |-5|: the unshifted iteration cannot converge, so the shifted
    # retry must find the right end.
    result = hessop.power_iteration(np.diag([-5.0, 5.0, 1.0]), which=which, seed=3)
    assert result.eigenvalues[0] == pytest.approx(expected, rel=1e-7)
    assert result.converged.all()


@pytest.mark.parametrize(
    ("which", "expected"),
    [("LA", [2.0, 1.0, -5.0]), ("SA", [-5.0, 1.0, 2.0]), ("LM", [-5.0, 2.0, 1.0])],
)
def test_power_all_pairs_order(which, expected):
    result = hessop.power_iteration(DIAG, k=3, which=which, seed=4)
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=1e-7)
    assert result.converged.all()


def test_power_deflation_orthonormal():
    A = with_spectrum(np.linspace(1.0, 10.0, 12) ** 2, seed=5)
    result = hessop.power_iteration(A, k=3, seed=5)
    X = result.eigenvectors
    np.testing.assert_allclose(X.T @ X, np.eye(3), atol=1e-12)


def test_power_deflation_values():
    eigenvalues = np.linspace(1.0, 10.0, 12) ** 2
    A = with_spectrum(eigenvalues, seed=6)
    result = hessop.power_iteration(A, k=3, seed=6)
    # rtol 1.5e-8 on the residual bounds the eigenvalue error by 1.5e-8 |lambda|.
    np.testing.assert_allclose(result.eigenvalues, eigenvalues[::-1][:3], rtol=1e-7)


def test_power_repeated_eigenvalue():
    # Deflation finds both copies of 5, which a single Krylov sequence cannot.
    result = hessop.power_iteration(np.diag([5.0, 5.0, 1.0, 2.0]), k=2, seed=7)
    np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0], rtol=1e-7)


def test_power_residuals_honest():
    A = with_spectrum(np.arange(1.0, 21.0), seed=8)
    result = hessop.power_iteration(A, k=2, seed=8)
    X, theta = result.eigenvectors, result.eigenvalues
    expected = np.linalg.norm(A @ X - X * theta, axis=0)
    np.testing.assert_allclose(result.residual_norms, expected, rtol=1e-6, atol=1e-13)


def test_power_zero_matrix():
    result = hessop.power_iteration(np.zeros((4, 4)), k=2, seed=9)
    np.testing.assert_array_equal(result.eigenvalues, [0.0, 0.0])
    assert result.converged.all()


def test_power_scaled_identity():
    result = hessop.power_iteration(3.0 * np.eye(50), seed=10)
    assert result.eigenvalues[0] == pytest.approx(3.0, rel=1e-14)
    assert result.num_matvecs == 1


def test_power_budget_warning():
    # Ratio 0.999 between the top two eigenvalues: 20 products cannot converge.
    A = np.diag([1.0, 0.999, 0.5])
    with pytest.warns(hessop.ConvergenceWarning, match=r"rtol=1\.000e-10"):
        result = hessop.power_iteration(A, rtol=1e-10, max_matvecs=20, seed=11)
    assert not result.converged[0]
    assert result.num_matvecs <= 20


def test_power_budget_best_iterate():
    A = np.diag([1.0, 0.999, 0.5])
    with pytest.warns(hessop.ConvergenceWarning):
        result = hessop.power_iteration(A, rtol=1e-10, max_matvecs=20, seed=11)
    # The returned iterate is a Rayleigh quotient, so at most 1; after 10
    # unshifted products its weight on the 0.5 eigenvector is tiny, which puts
    # it within 1e-2 of 1.
    assert result.eigenvalues[0] == pytest.approx(1.0, abs=1e-2)
    assert result.eigenvalues[0] <= 1.0


def test_power_no_warning_when_converged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hessop.power_iteration(DIAG, seed=12)


def test_power_seed_reproducible():
    A = with_spectrum(np.arange(1.0, 11.0), seed=13)
    first = hessop.power_iteration(A, seed=13)
    second = hessop.power_iteration(A, seed=13)
    np.testing.assert_array_equal(first.eigenvectors, second.eigenvectors)


def test_power_start_vector():
    # Starting on the eigenvector converges in one product.
    result = hessop.power_iteration(DIAG, which="LM", v0=[2.0, 0.0, 0.0])
    assert result.num_matvecs == 1


def test_power_float32_operator():
    result = hessop.power_iteration(DIAG.astype(np.float32), which="LA", seed=14)
    assert result.eigenvalues.dtype == np.float64
    # A float32 operator gets rtol = sqrt(eps32) = 3.5e-4.
    assert result.rtol == pytest.approx(np.sqrt(np.finfo(np.float32).eps))
    assert result.eigenvalues[0] == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be at least 1"),
        ({"k": 4}, ValueError, "at most n=3"),
        ({"k": 1.5}, TypeError, "k must be an integer"),
        ({"which": "XX"}, ValueError, "'LA', 'SA', 'LM'"),
        ({"which": "la"}, ValueError, "upper case"),
        ({"rtol": -1.0}, ValueError, "rtol must be a finite positive"),
        ({"rtol": float("nan")}, ValueError, "rtol must be a finite positive"),
        ({"max_matvecs": 0}, ValueError, "max_matvecs must be at least 1"),
        ({"v0": np.zeros(3)}, ValueError, "v0 must be non-zero"),
        ({"v0": np.ones(4)}, ValueError, r"shape \(3,\)"),
        ({"seed": np.random.RandomState(0)}, TypeError, "default_rng"),
        ({"seed": -1}, ValueError, "non-negative"),
    ],
)
def test_power_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hessop.power_iteration(DIAG, **kwargs)


def test_power_non_square():
    with pytest.raises(ValueError, match="square"):
        hessop.power_iteration(np.ones((2, 3)))


def test_power_non_finite_operator():
    A = np.diag([1.0, np.inf, 2.0])
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        hessop.power_iteration(A, seed=15)


@settings(max_examples=25, deadline=None)
@given(case=distinct_spectra(min_size=2, max_size=12))
def test_power_top_property(case):
    eigenvalues, seed = case
    A = with_spectrum(eigenvalues, seed)
    # The hardest spectra here ({-10, 9.99, 10}) need a shift by 10 and then
    # converge at the ratio 19.99 / 20, about 28000 products for rtol 1e-6.
    result = hessop.power_iteration(
        A, which="LA", rtol=1e-6, max_matvecs=100_000, seed=seed
    )
    scale = np.abs(eigenvalues).max()
    # Residual <= 1e-6 |theta| bounds the distance to the nearest eigenvalue;
    # the spectrum's gaps of 0.01 make it the top one.
    assert abs(result.eigenvalues[0] - eigenvalues[-1]) <= 1e-5 * scale
    assert result.converged.all()
