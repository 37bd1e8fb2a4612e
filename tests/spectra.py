"""Symmetric test matrices with prescribed spectra and hypothesis strategies."""

import numpy as np
from hypothesis import strategies as st


def random_orthogonal(n: int, seed: int) -> np.ndarray:
    """Draw an ``n x n`` orthogonal matrix from the Haar distribution."""
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    # Fixing the signs of R's diagonal makes Q Haar distributed.
    return Q * np.sign(np.diag(R))


def with_spectrum(eigenvalues, seed: int) -> np.ndarray:
    """Return a dense symmetric matrix with the given eigenvalues in a random basis."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    Q = random_orthogonal(eigenvalues.size, seed)
    A = (Q * eigenvalues) @ Q.T
    return 0.5 * (A + A.T)


def clustered(n: int) -> np.ndarray:
    """Eigenvalues 10 and 10.01, 10.02 on top of n - 3 spread over [-1, 1]."""
    return np.concatenate([[10.0, 10.01, 10.02], np.linspace(-1.0, 1.0, n - 3)])


def indefinite(n: int) -> np.ndarray:
    """Eigenvalues spread evenly over [-4, 3], so both ends are extreme."""
    return np.linspace(-4.0, 3.0, n)


def outlier(n: int) -> np.ndarray:
    """One eigenvalue 1000 above n - 1 spread over [0, 1], like a Hessian's spectrum."""
    return np.concatenate([[1000.0], np.linspace(0.0, 1.0, n - 1)])


@st.composite
def distinct_spectra(draw, min_size: int = 2, max_size: int = 30):
    """Sorted eigenvalues in [-10, 10], pairwise at least 0.01 apart, and a seed.

    Returns ``(eigenvalues, seed)``. The eigenvalues are multiples of 0.01, so
    zero, one-signed and indefinite spectra all occur.
    """
    n = draw(st.integers(min_size, max_size))
    hundredths = draw(
        st.lists(st.integers(-1000, 1000), min_size=n, max_size=n, unique=True)
    )
    seed = draw(st.integers(0, 2**31 - 1))
    return np.sort(np.array(hundredths, dtype=np.float64) / 100.0), seed
