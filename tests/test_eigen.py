"""eigenvalues: Lanczos, power and ARPACK against dense references."""

import warnings

import numpy as np
import pytest
import scipy.sparse.linalg
from hypothesis import given, settings
from spectra import clustered, distinct_spectra, indefinite, outlier, with_spectrum

import hessop

METHODS = ["lanczos", "power", "arpack"]
DIAG = np.diag([-5.0, 1.0, 2.0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("which", "expected"), [("LM", -5.0), ("LA", 2.0), ("SA", -5.0)]
)
def test_eigen_diag_which(method, which, expected):
    result = hessop.eigenvalues(DIAG, which=which, method=method, seed=0)
    # The default rtol 1.5e-8 bounds the eigenvalue error by 1.5e-8 |lambda|.
    assert result.eigenvalues[0] == pytest.approx(expected, rel=1e-7)
    assert result.converged.all()


def test_eigen_identity_top():
    result = hessop.eigenvalues(3.0 * np.eye(50), k=1, seed=1)
    assert result.eigenvalues[0] == pytest.approx(3.0, rel=1e-14)
    assert np.all(np.isfinite(result.eigenvectors))
    assert result.converged.all()


def test_eigen_identity_several():
    # Every Lanczos step breaks down; restarts from random vectors supply
    # the further copies of 3.
    result = hessop.eigenvalues(3.0 * np.eye(50), k=4, seed=2)
    np.testing.assert_allclose(result.eigenvalues, [3.0] * 4, rtol=1e-14)
    X = result.eigenvectors
    np.testing.assert_allclose(X.T @ X, np.eye(4), atol=1e-13)


SPECTRA = {
    "clustered": clustered(300),
    "indefinite": indefinite(300),
    "outlier": outlier(300),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("which", ["LA", "SA"])
def test_eigen_lanczos_vs_eigh(name, which):
    eigenvalues = SPECTRA[name]
    A = with_spectrum(eigenvalues, seed=3)
    result = hessop.eigenvalues(
        A, k=4, which=which, rtol=1e-10, max_matvecs=20000, seed=3
    )
    reference = np.linalg.eigh(A)[0]
    expected = reference[::-1][:4] if which == "LA" else reference[:4]
    # Residual <= 1e-10 |lambda| bounds each eigenvalue error by 1e-10 |lambda|;
    # 1e-9 of the largest magnitude leaves room for the rounding in eigh.
    scale = np.abs(eigenvalues).max()
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=0, atol=1e-9 * scale)
    assert result.converged.all()


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_eigen_lanczos_vs_eigh_magnitude(name):
    eigenvalues = SPECTRA[name]
    A = with_spectrum(eigenvalues, seed=3)
    result = hessop.eigenvalues(
        A, k=4, which="LM", rtol=1e-10, max_matvecs=20000, seed=3
    )
    reference = np.linalg.eigh(A)[0]
    expected = np.sort(np.abs(reference))[::-1][:4]
    scale = np.abs(eigenvalues).max()
    # The clustered spectrum has both 1 and -1, so only the magnitudes of the
    # fourth pair are determined; each value must still be an eigenvalue.
    np.testing.assert_allclose(
        np.abs(result.eigenvalues), expected, rtol=0, atol=1e-9 * scale
    )
    distance = np.abs(result.eigenvalues[:, None] - reference[None, :]).min(axis=1)
    assert distance.max() <= 1e-9 * scale


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_eigen_lanczos_vs_eigsh(name):
    A = with_spectrum(SPECTRA[name], seed=4)
    result = hessop.eigenvalues(
        A, k=3, which="LA", rtol=1e-10, max_matvecs=20000, seed=4
    )
    reference = scipy.sparse.linalg.eigsh(A, k=3, which="LA", tol=1e-12)[0][::-1]
    scale = np.abs(SPECTRA[name]).max()
    np.testing.assert_allclose(result.eigenvalues, reference, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("method", METHODS)
def test_eigen_orthonormal_vectors(method):
    A = with_spectrum(indefinite(60), seed=5)
    result = hessop.eigenvalues(A, k=5, method=method, max_matvecs=50000, seed=5)
    X = result.eigenvectors
    np.testing.assert_allclose(X.T @ X, np.eye(5), atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_eigen_residuals_honest(method):
    A = with_spectrum(indefinite(60), seed=6)
    result = hessop.eigenvalues(A, k=3, method=method, max_matvecs=50000, seed=6)
    X, theta = result.eigenvectors, result.eigenvalues
    expected = np.linalg.norm(A @ X - X * theta, axis=0)
    np.testing.assert_allclose(result.residual_norms, expected, rtol=1e-6, atol=1e-12)


def test_eigen_no_ghosts():
    # Many Lanczos steps past convergence of the outlier: without full
    # reorthogonalisation a second copy of 100 would appear.
    eigenvalues = np.concatenate([[100.0], np.linspace(0.0, 1.0, 199)])
    A = with_spectrum(eigenvalues, seed=7)
    result = hessop.eigenvalues(A, k=3, rtol=1e-10, max_matvecs=20000, seed=7)
    expected = np.sort(eigenvalues)[::-1][:3]
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=0, atol=1e-8)


def test_eigen_restarts_counted():
    A = with_spectrum(clustered(300), seed=8)
    result = hessop.eigenvalues(
        A, k=2, basis_size=8, rtol=1e-9, max_matvecs=20000, seed=8
    )
    # A basis of 8 is too small to converge in one cycle, so the run restarted.
    # The count includes the 2 products for the final residuals.
    assert result.num_matvecs > 8 + 2
    assert result.converged.all()


def test_eigen_lanczos_budget_warning():
    # Evenly spaced eigenvalues have relative gaps of 1/300 at the top, too
    # small for 30 products.
    A = with_spectrum(np.linspace(0.0, 1.0, 300), seed=9)
    with pytest.warns(hessop.ConvergenceWarning, match=r"rtol=1\.000e-12"):
        result = hessop.eigenvalues(A, k=3, rtol=1e-12, max_matvecs=30, seed=9)
    assert result.num_matvecs <= 30
    assert not result.converged.all()


def test_eigen_arpack_partial_result():
    A = with_spectrum(np.linspace(0.0, 1.0, 300), seed=10)
    with pytest.warns(hessop.ConvergenceWarning, match="arpack"):
        result = hessop.eigenvalues(
            A, k=3, method="arpack", rtol=1e-12, max_matvecs=30, seed=10
        )
    # Only converged pairs come back, so fewer than 3.
    assert result.eigenvalues.size < 3


@pytest.mark.parametrize(
    ("k", "max_matvecs"), [(1, 5), (2, 7), (2, 100), (3, 57), (4, 333)]
)
def test_eigen_arpack_budget(k, max_matvecs):
    A = with_spectrum(np.linspace(0.0, 1.0, 200), seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hessop.ConvergenceWarning)
        result = hessop.eigenvalues(
            A, k=k, method="arpack", rtol=1e-14, max_matvecs=max_matvecs, seed=11
        )
    assert result.num_matvecs <= max_matvecs


def test_eigen_arpack_zero_operator():
    # ARPACK fails with "starting vector is zero" once A v0 = 0. The error
    # must name the Lanczos method, which returns the zeros.
    with pytest.raises(RuntimeError, match="method='lanczos'"):
        hessop.eigenvalues(np.zeros((30, 30)), k=2, method="arpack", seed=17)
    result = hessop.eigenvalues(np.zeros((30, 30)), k=2, seed=17)
    np.testing.assert_array_equal(result.eigenvalues, [0.0, 0.0])


def test_eigen_power_repeated():
    result = hessop.eigenvalues(
        np.diag([5.0, 5.0, 1.0, 2.0]), k=2, method="power", seed=12
    )
    np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0], rtol=1e-7)


def test_eigen_all_pairs_small():
    eigenvalues = np.array([-2.0, -1.0, 0.5, 3.0])
    A = with_spectrum(eigenvalues, seed=13)
    result = hessop.eigenvalues(A, k=4, which="LA", seed=13)
    np.testing.assert_allclose(result.eigenvalues, eigenvalues[::-1], atol=1e-12)


def test_eigen_no_warning_when_converged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hessop.eigenvalues(with_spectrum(outlier(100), seed=14), k=2, seed=14)


def test_eigen_seed_reproducible():
    A = with_spectrum(indefinite(100), seed=15)
    first = hessop.eigenvalues(A, k=2, seed=15)
    second = hessop.eigenvalues(A, k=2, seed=15)
    np.testing.assert_array_equal(first.eigenvectors, second.eigenvectors)


def test_eigen_sparse_input():
    A = scipy.sparse.diags([np.arange(1.0, 101.0)], [0], format="csr")
    result = hessop.eigenvalues(A, k=2, seed=16)
    np.testing.assert_allclose(result.eigenvalues, [100.0, 99.0], rtol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "eig"}, ValueError, "'lanczos', 'power', 'arpack'"),
        ({"k": 3, "method": "arpack"}, ValueError, "k < n"),
        (
            {"basis_size": 2, "method": "power"},
            ValueError,
            "not used by method='power'",
        ),
        ({"basis_size": 1}, ValueError, "k < basis_size <= n"),
        ({"basis_size": 4}, ValueError, "k < basis_size <= n"),
        ({"max_matvecs": 1}, ValueError, "max_matvecs must be at least"),
        ({"rtol": 0.0}, ValueError, "rtol must be a finite positive"),
    ],
)
def test_eigen_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hessop.eigenvalues(DIAG, **kwargs)


@settings(max_examples=25, deadline=None)
@given(case=distinct_spectra(min_size=2, max_size=40))
def test_eigen_lanczos_property(case):
    eigenvalues, seed = case
    A = with_spectrum(eigenvalues, seed)
    k = min(3, eigenvalues.size)
    result = hessop.eigenvalues(
        A, k=k, which="SA", rtol=1e-9, max_matvecs=20000, seed=seed
    )
    scale = np.abs(eigenvalues).max()
    # Residual <= 1e-9 |theta| plus gaps of 0.01 identify each eigenvalue to 1e-8.
    np.testing.assert_allclose(
        result.eigenvalues, eigenvalues[:k], rtol=0, atol=1e-8 * scale
    )


@settings(max_examples=15, deadline=None)
@given(case=distinct_spectra(min_size=3, max_size=25))
def test_eigen_arpack_property(case):
    eigenvalues, seed = case
    A = with_spectrum(eigenvalues, seed)
    result = hessop.eigenvalues(
        A, k=2, which="LA", method="arpack", rtol=1e-10, seed=seed
    )
    scale = np.abs(eigenvalues).max()
    np.testing.assert_allclose(
        result.eigenvalues, eigenvalues[::-1][:2], rtol=0, atol=1e-8 * scale
    )
