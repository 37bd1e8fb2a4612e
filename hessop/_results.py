"""Result objects returned by the spectral algorithms.

Every result records how many matrix-vector products it cost
(``num_matvecs``, one per column of every ``matmat`` call) and, where the
algorithm has a tolerance, whether it met it.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal

from hessop._checks import check_int, check_positive_float

__all__ = [
    "DensityCurve",
    "DiagonalResult",
    "EigenResult",
    "LanczosResult",
    "SpectralDensity",
    "TraceResult",
]

# Default kernel width as a fraction of the spectral range. The default SLQ run
# has 90 nodes per probe, on average 1/90 (about 1.1 %) of the range apart, so a
# 1 % kernel merges neighbouring nodes into one curve.
DENSITY_SIGMA_FRACTION = 0.01
# A spectral range below this fraction of the largest |node| is rounding noise,
# as for a degenerate spectrum such as 3 * I. Sigma then scales with |node|.
DEGENERATE_RANGE_FRACTION = 1e-6
# Points per sigma on the default grid. At a spacing of sigma / 5 the
# trapezoidal rule integrates a Gaussian to far below 1e-6.
GRID_POINTS_PER_SIGMA = 5
MAX_GRID_POINTS = 1_000_000
# The default grid extends this many sigma beyond the extreme nodes, so the
# Gaussian mass it drops is below 3e-7 on each side.
GRID_MARGIN_SIGMAS = 5.0


@dataclass(frozen=True, eq=False)
class EigenResult:
    """Eigenpairs of a symmetric operator and how well they converged.

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (k,)
        Descending for ``which='LA'``, ascending for ``'SA'``, by descending
        magnitude for ``'LM'`` (the larger value first where magnitudes tie).
    eigenvectors : numpy.ndarray, shape (n, k)
        Orthonormal columns in the order of ``eigenvalues``.
    converged : numpy.ndarray of bool, shape (k,)
        Whether each pair met ``||A x - lambda x|| <= rtol * |lambda|`` (or the
        rounding floor of the operator, whichever is larger).
    residual_norms : numpy.ndarray, shape (k,)
        ``||A x - lambda x||`` for each pair, computed with the operator.
    num_matvecs : int
        Matrix-vector products used, including those for the residuals.
    which : str
        'LA', 'SA' or 'LM'.
    method : str
        'lanczos', 'power' or 'arpack'.
    rtol : float
        The relative residual tolerance the run used.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    converged: np.ndarray
    residual_norms: np.ndarray
    num_matvecs: int
    which: str
    method: str
    rtol: float

    def __repr__(self) -> str:
        return (
            f"EigenResult(eigenvalues={self.eigenvalues!r}, "
            f"eigenvectors=<array of shape {self.eigenvectors.shape}>, "
            f"converged={self.converged!r}, residual_norms={self.residual_norms!r}, "
            f"num_matvecs={self.num_matvecs}, which={self.which!r}, "
            f"method={self.method!r}, rtol={self.rtol!r})"
        )


@dataclass(frozen=True, eq=False)
class LanczosResult:
    """The tridiagonal matrix of a Lanczos run, ``Q^T A Q = T``.

    With ``m`` steps, ``A Q = Q T + residual_norm * q e_m^T`` where ``Q`` is
    the ``n x m`` basis and ``q`` the next unit vector.

    Attributes
    ----------
    alpha : numpy.ndarray, shape (m,)
        Diagonal of ``T``.
    beta : numpy.ndarray, shape (m - 1,)
        Off-diagonal of ``T``.
    residual_norm : float
        Norm of the Lanczos residual after the last step (``beta_m``). It is
        at rounding level when the run ended in a breakdown.
    basis : numpy.ndarray of shape (n, m), or None
        The Lanczos vectors, when requested with ``return_basis=True``.
    num_matvecs : int
        Matrix-vector products used, one per step.
    breakdown : bool
        Whether the recurrence ended early because the Krylov space became
        invariant under ``A`` (``beta`` at rounding level, or the space filled
        all ``n`` dimensions). The Ritz values are then eigenvalues of ``A``.
    """

    alpha: np.ndarray
    beta: np.ndarray
    residual_norm: float
    basis: np.ndarray | None
    num_matvecs: int
    breakdown: bool

    def __repr__(self) -> str:
        basis = "None" if self.basis is None else f"<array of shape {self.basis.shape}>"
        return (
            f"LanczosResult(alpha={self.alpha!r}, beta={self.beta!r}, "
            f"residual_norm={self.residual_norm!r}, basis={basis}, "
            f"num_matvecs={self.num_matvecs}, breakdown={self.breakdown})"
        )

    @property
    def num_steps(self) -> int:
        """Number of Lanczos steps taken, the order of ``T``."""
        return int(self.alpha.size)

    def tridiagonal(self) -> np.ndarray:
        """Return ``T`` as a dense ``(m, m)`` array."""
        return np.diag(self.alpha) + np.diag(self.beta, 1) + np.diag(self.beta, -1)

    def ritz_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the eigenvalues (ascending) and eigenvectors of ``T``.

        Uses :func:`scipy.linalg.eigh_tridiagonal` in float64. The Ritz vectors
        of ``A`` are ``basis @ S`` for the returned ``S``.
        """
        return eigh_tridiagonal(self.alpha, self.beta)


@dataclass(frozen=True, eq=False)
class TraceResult:
    """A stochastic estimate of ``tr(A)``.

    Attributes
    ----------
    estimate : float
        The trace estimate.
    stderr : float or None
        Standard error of ``estimate`` (for 'xtrace' an error estimate from
        the spread of its leave-one-out estimates). None when a single sample
        leaves it undefined.
    converged : bool or None
        Whether ``stderr <= rtol * |estimate|`` was reached; None when no
        ``rtol`` was given.
    num_matvecs : int
        Matrix-vector products used.
    samples : numpy.ndarray, shape (s,)
        The per-probe trace estimates whose mean is ``estimate``: ``z^T A z``
        for Hutchinson, the deflated-plus-residual estimates for Hutch++ and
        the leave-one-out estimates for XTrace.
    method : str
        'hutchinson', 'hutch++' or 'xtrace'.
    distribution : str
        The probe distribution used.
    rtol : float or None
        The relative standard error requested, if any.
    """

    estimate: float
    stderr: float | None
    converged: bool | None
    num_matvecs: int
    samples: np.ndarray
    method: str
    distribution: str
    rtol: float | None


@dataclass(frozen=True, eq=False)
class DiagonalResult:
    """A stochastic estimate of the diagonal of ``A``.

    Attributes
    ----------
    estimate : numpy.ndarray, shape (n,)
        The estimated diagonal.
    stderr : numpy.ndarray of shape (n,), or None
        Standard error of each entry; None after a single probe.
    num_matvecs : int
        Matrix-vector products used, one per probe.
    distribution : str
        The probe distribution used.
    """

    estimate: np.ndarray
    stderr: np.ndarray | None
    num_matvecs: int
    distribution: str


class DensityCurve(tuple):
    """A smoothed spectral density, unpacked as ``grid, values = curve``.

    The ``grid`` and ``values`` properties name the two entries.

    Attributes
    ----------
    sigma : float
        Standard deviation of the Gaussian kernel used.
    """

    sigma: float

    def __new__(cls, grid: np.ndarray, values: np.ndarray, sigma: float):
        curve = super().__new__(cls, (grid, values))
        curve.sigma = sigma
        return curve

    @property
    def grid(self) -> np.ndarray:
        """Points where the density was evaluated."""
        return self[0]

    @property
    def values(self) -> np.ndarray:
        """Density values on ``grid``."""
        return self[1]

    def __repr__(self) -> str:
        return f"DensityCurve(num_points={self[0].size}, sigma={self.sigma!r})"


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """Gauss quadrature nodes and weights from Stochastic Lanczos Quadrature.

    For probe ``i`` with unit vector ``v``, ``nodes[i]`` and ``weights[i]``
    form a Gauss quadrature rule for the spectral measure of ``A`` seen from
    ``v``, ``sum_j (u_j^T v)^2 delta(t - lambda_j)`` with eigenpairs
    ``(lambda_j, u_j)``. The weights of each probe sum to 1.

    Attributes
    ----------
    nodes : tuple of numpy.ndarray
        Ritz values (eigenvalues of the tridiagonal matrix) per probe.
    weights : tuple of numpy.ndarray
        Quadrature weights per probe, the squared first components of the
        eigenvectors of the tridiagonal matrix.
    breakdown : numpy.ndarray of bool, shape (num_probes,)
        Which probes ended early in a Lanczos breakdown; their nodes are exact
        eigenvalues of ``A``.
    num_matvecs : int
        Matrix-vector products used.
    dimension : int
        The dimension ``n`` of ``A``.
    """

    nodes: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]
    breakdown: np.ndarray
    num_matvecs: int
    dimension: int

    @property
    def num_probes(self) -> int:
        """Number of probe vectors."""
        return len(self.nodes)

    def default_sigma(self) -> float:
        """Return the kernel width that :meth:`density` uses when sigma is None.

        ``0.01 * (max node - min node)`` over all probes. When that range is
        below ``1e-6`` of the largest node magnitude (a degenerate spectrum
        such as ``3 * I``), ``0.01 * max |node|`` instead, and 0.01 for the zero
        operator.
        """
        all_nodes = np.concatenate(self.nodes)
        spread = float(all_nodes.max() - all_nodes.min())
        magnitude = float(np.abs(all_nodes).max())
        if spread > DEGENERATE_RANGE_FRACTION * magnitude:
            return DENSITY_SIGMA_FRACTION * spread
        if magnitude > 0.0:
            return DENSITY_SIGMA_FRACTION * magnitude
        return DENSITY_SIGMA_FRACTION

    def density(self, grid=None, sigma: float | None = None) -> DensityCurve:
        """Evaluate the Gaussian-smoothed spectral density.

        .. math::

            \\phi_\\sigma(t) = \\frac{1}{P} \\sum_{i=1}^{P} \\sum_j w_{ij}
            \\frac{1}{\\sigma\\sqrt{2\\pi}}
            \\exp\\Big(-\\frac{(t - \\theta_{ij})^2}{2\\sigma^2}\\Big)

        over the ``P`` probes, with nodes ``theta`` and weights ``w``.

        Parameters
        ----------
        grid : array_like, optional
            Points to evaluate at. By default an even grid from the smallest
            node minus ``5 * sigma`` to the largest plus ``5 * sigma``, with
            spacing ``sigma / 5``. On it the density integrates to 1 within
            ``1e-6``, because every node of every probe is covered.
        sigma : float, optional
            Kernel standard deviation, by default :meth:`default_sigma`.

        Returns
        -------
        DensityCurve
            Unpacks as ``grid, values``; its ``sigma`` attribute is the kernel
            width used.

        Raises
        ------
        ValueError
            If ``sigma`` is not positive or ``grid`` is not a finite 1-D
            array. Also if the default grid would need more than 1,000,000
            points, because ``sigma`` is far below the spectral range; pass
            a grid then.
        """
        if sigma is None:
            sigma = self.default_sigma()
        else:
            sigma = check_positive_float(sigma, "sigma")

        if grid is None:
            grid = self._default_grid(sigma)
        else:
            grid = np.asarray(grid, dtype=np.float64)
            if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
                raise ValueError(
                    "grid must be a non-empty finite 1-D array, got an array of "
                    f"shape {grid.shape}."
                )

        values = np.zeros_like(grid)
        norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi) * self.num_probes)
        for theta, w in zip(self.nodes, self.weights, strict=True):
            for start in range(0, grid.size, 4096):
                t = grid[start : start + 4096, None]
                kernel = np.exp(-0.5 * ((t - theta[None, :]) / sigma) ** 2)
                values[start : start + 4096] += kernel @ w
        values *= norm
        return DensityCurve(grid, values, sigma)

    def _default_grid(self, sigma: float) -> np.ndarray:
        all_nodes = np.concatenate(self.nodes)
        low = float(all_nodes.min()) - GRID_MARGIN_SIGMAS * sigma
        high = float(all_nodes.max()) + GRID_MARGIN_SIGMAS * sigma
        num_points = math.ceil((high - low) / sigma * GRID_POINTS_PER_SIGMA) + 1
        if num_points > MAX_GRID_POINTS:
            raise ValueError(
                f"sigma={sigma!r} is too small for the spectral range "
                f"[{low:.6g}, {high:.6g}]: the default grid would need {num_points} "
                "points; pass a larger sigma or an explicit grid."
            )
        return np.linspace(low, high, num_points)

    def trace_estimate(self, n: int | None = None) -> float:
        """Return ``n * sum(weights * nodes)`` averaged over the probes.

        For a probe ``z`` normalised to ``v = z / ||z||``, ``sum(weights * nodes)``
        equals ``v^T A v``, so with Rademacher probes (``||z||^2 = n``) this is
        the Hutchinson estimate ``z^T A z`` averaged over probes.

        Parameters
        ----------
        n : int, optional
            Dimension of ``A``; defaults to :attr:`dimension`.
        """
        n = self.dimension if n is None else check_int(n, "n", minimum=1)
        per_probe = [
            float(w @ theta) for theta, w in zip(self.nodes, self.weights, strict=True)
        ]
        return float(n) * float(np.mean(per_probe))
