"""Extreme eigenpairs: restarted Lanczos, power iteration or ARPACK."""

import logging
import warnings

import numpy as np
from scipy.linalg import eigh
from scipy.sparse.linalg import (
    ArpackError,
    ArpackNoConvergence,
    LinearOperator,
    eigsh,
)

from hessop._checks import (
    check_choice,
    check_int,
    check_positive_float,
    check_which,
    sort_by_which,
)
from hessop._linop import (
    apply,
    apply_block,
    as_operator,
    check_start_vector,
    convergence_floor,
    rounding_floor,
)
from hessop._power import default_rtol, power_eigenpairs, warn_unconverged
from hessop._random import draw_unit_vector, resolve_rng
from hessop._results import EigenResult
from hessop._warnings import ConvergenceWarning

__all__ = ["eigenvalues"]

logger = logging.getLogger(__name__)

METHODS = ("lanczos", "power", "arpack")
# Cap on products per requested eigenpair when max_matvecs is None. It is a cap,
# not a cost, because the run stops as soon as the residual test passes.
MATVECS_PER_PAIR = 1000


def default_basis_size(n: int, k: int) -> int:
    """Return ``min(n, max(2 k + 1, 20))``, the default ``ncv`` of scipy's ``eigsh``."""
    return min(n, max(2 * k + 1, 20))


def eigenvalues(
    A,
    k: int = 1,
    *,
    which: str = "LA",
    method: str = "lanczos",
    rtol: float | None = None,
    max_matvecs: int | None = None,
    seed=None,
    v0=None,
    basis_size: int | None = None,
) -> EigenResult:
    """Compute ``k`` extreme eigenpairs of a symmetric operator.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator.
    k : int, default 1
        Number of eigenpairs: ``1 <= k <= n``, and ``k < n`` for 'arpack'.
    which : {'LA', 'SA', 'LM'}, default 'LA'
        Largest algebraic (the "top" eigenvalues of a Hessian), smallest
        algebraic or largest magnitude. Eigenvalues are returned with their
        sign.
    method : {'lanczos', 'power', 'arpack'}, default 'lanczos'
        'lanczos': thick-restart Lanczos with full reorthogonalisation.
        'power': deflated power iteration, see :func:`hessop.power_iteration`.
        'arpack': :func:`scipy.sparse.linalg.eigsh` (implicitly restarted
        Lanczos).
    rtol : float, optional
        Relative residual tolerance: a pair converges when
        ``||A x - lambda x|| <= rtol * |lambda|``, or when the residual is at
        the rounding level ``10 * sqrt(n) * eps * ||A||`` of the operator. By
        default ``sqrt(eps)`` of the operator's dtype: 1.5e-8 for float64 and
        3.5e-4 for float32. At that residual the eigenvalue error, about
        ``||r||^2 / gap``, is at rounding level when the gap is of order
        ``|lambda|``.
    max_matvecs : int, optional
        Cap on matrix-vector products, by default ``1000 * k``. For 'arpack'
        the cap sets ARPACK's restart count, so the run may stop up to one
        restart cycle short of it.
    seed : int, numpy.random.Generator or None
        Seed for the start vector and for any restart vector after a
        breakdown.
    v0 : array_like of shape (n,), optional
        Start vector; it must not be orthogonal to the wanted eigenvectors.
    basis_size : int, optional
        Largest Krylov basis kept for 'lanczos' and 'arpack' (ARPACK's
        ``ncv``), ``k < basis_size <= n``; by default
        ``min(n, max(2 k + 1, 20))``, the default of ``eigsh``. Memory is
        ``basis_size`` vectors of length ``n``. Not used by 'power'.

    Returns
    -------
    EigenResult
        Eigenvalues, orthonormal eigenvectors, per-pair ``converged`` and
        residual norms (computed with the operator), ``num_matvecs``. When
        ARPACK stops without converging, only the pairs it converged are
        returned, so there may be fewer than ``k``.

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.
    RuntimeError
        If ARPACK fails other than by not converging, for example on the
        zero operator.

    Warns
    -----
    ConvergenceWarning
        If a pair misses ``rtol`` within ``max_matvecs``, with the relative
        residual reached and ``rtol``.

    Notes
    -----
    Lanczos. Each cycle extends an orthonormal basis ``Q`` to ``basis_size``
    vectors with the Lanczos recurrence, orthogonalising every new vector
    twice against the whole basis, and computes the Ritz pairs of
    ``H = Q^T A Q`` with the symmetric solver :func:`scipy.linalg.eigh`. A
    Ritz pair ``(theta, Q s)`` has residual norm ``|beta * s_m|``, with
    ``beta`` the norm of the next Lanczos vector before normalisation. When
    the ``k`` wanted pairs pass the test the run stops. Otherwise it restarts
    from the ``k + (basis_size - k) // 2`` best Ritz vectors and the next
    Lanczos vector (thick restart), which keeps the relation
    ``A Q = Q H + beta q e_m^T``. On a breakdown (an invariant subspace, as
    for ``3 I``) it continues from a random vector orthogonal to ``Q``, which
    also finds further copies of a repeated eigenvalue. Full
    reorthogonalisation rules out spurious ("ghost") copies of converged
    eigenvalues. Finally the residuals are computed with ``k`` more products.

    Cost: at most ``max_matvecs`` products, ``O(n * basis_size^2)``
    arithmetic per cycle for the reorthogonalisation, and ``basis_size + 1``
    vectors of memory.

    .. warning::
       A single start vector reaches only one direction of each eigenspace
       until a restart or breakdown brings in the others, so a repeated
       eigenvalue inside a larger spectrum can be returned fewer times than
       its multiplicity (ARPACK has the same limit). Deflated power iteration,
       ``method='power'``, finds every copy.

    References
    ----------
    K. Wu and H. Simon, "Thick-restart Lanczos method for large
    symmetric eigenvalue problems", SIAM J. Matrix Anal. Appl. 22 (2000),
    602-616.

    R. B. Lehoucq, D. C. Sorensen and C. Yang, "ARPACK Users' Guide",
    SIAM, 1998.

    G. H. Golub and C. F. Van Loan, "Matrix Computations", 4th ed.,
    Johns Hopkins University Press, 2013, chapter 10.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> A = np.diag([-5.0, 1.0, 2.0])
    >>> hessop.eigenvalues(A, which="SA", seed=0).eigenvalues
    array([-5.])
    """
    op = as_operator(A)
    n = op.shape[0]
    k = check_int(k, "k", minimum=1)
    method = check_choice(method, "method", METHODS)
    if k > n:
        raise ValueError(f"k must be at most n={n}, the dimension of A, got k={k}.")
    if method == "arpack" and k >= n:
        raise ValueError(
            f"method='arpack' needs k < n, got k={k} for n={n}; use "
            "method='lanczos' for all eigenpairs."
        )
    which = check_which(which)
    rtol = default_rtol(op) if rtol is None else check_positive_float(rtol, "rtol")
    if basis_size is not None:
        if method == "power":
            raise ValueError("basis_size is not used by method='power'; omit it.")
        basis_size = check_int(basis_size, "basis_size", minimum=1)
        if not (k < basis_size <= n or basis_size == n == k):
            raise ValueError(
                f"basis_size must satisfy k < basis_size <= n (k={k}, n={n}), "
                f"got {basis_size}."
            )
    else:
        basis_size = default_basis_size(n, k)
    v0 = check_start_vector(v0, n)
    rng = resolve_rng(A, seed)

    if method == "power":
        if max_matvecs is None:
            max_matvecs = MATVECS_PER_PAIR * k
        max_matvecs = check_int(max_matvecs, "max_matvecs", minimum=k)
        result = power_eigenpairs(op, k, which, rtol, max_matvecs, rng, v0)
    else:
        # Lanczos needs k + 1 steps (or n) and the residuals k products;
        # ARPACK needs a basis of k + 1 and one restart, see _arpack.
        minimum = min(basis_size, k + 1) + k if method == "lanczos" else 2 * k + 3
        if max_matvecs is None:
            max_matvecs = max(MATVECS_PER_PAIR * k, minimum)
        max_matvecs = check_int(max_matvecs, "max_matvecs", minimum=minimum)
        if v0 is None:
            v0 = draw_unit_vector(rng, n)
        if method == "lanczos":
            result = _thick_restart_lanczos(
                op, k, which, rtol, max_matvecs, rng, v0, basis_size
            )
        else:
            result = _arpack(op, k, which, rtol, max_matvecs, v0, basis_size)

    warn_unconverged(result, stacklevel=2)
    return result


def _residuals(op: LinearOperator, theta: np.ndarray, X: np.ndarray):
    """Return ``||A x_i - theta_i x_i||`` and ``||A x_i||`` for the columns of X."""
    AX = apply_block(op, X, block_size=max(1, X.shape[1]))
    residuals = np.linalg.norm(AX - X * theta, axis=0)
    return residuals, np.linalg.norm(AX, axis=0)


def _converged(op, theta, residuals, rtol, anorm) -> np.ndarray:
    return residuals <= np.maximum(rtol * np.abs(theta), convergence_floor(op, anorm))


def _thick_restart_lanczos(op, k, which, rtol, max_matvecs, rng, v0, m) -> EigenResult:
    """Thick-restart Lanczos with full reorthogonalisation (validated input)."""
    n = op.shape[0]
    keep = min(k + (m - k) // 2, m - 1)
    budget = max_matvecs - k  # the final residuals need k products

    Q = np.empty((n, m + 1), order="F")  # contiguous columns
    H = np.zeros((m, m))
    Q[:, 0] = v0
    j = 0  # columns of Q multiplied by A so far; Q[:, j] is the next one
    beta = 0.0
    anorm = 0.0
    num_matvecs = 0
    exhausted = False
    cycles = 0

    while True:
        # Extend the basis with Lanczos steps.
        while j < m and num_matvecs < budget:
            w = apply(op, Q[:, j])
            num_matvecs += 1
            anorm = max(anorm, float(np.linalg.norm(w)))
            Qj = Q[:, : j + 1]
            h = Qj.T @ w
            w -= Qj @ h
            correction = Qj.T @ w
            w -= Qj @ correction
            h += correction
            H[: j + 1, j] = h
            H[j, : j + 1] = h
            beta = float(np.linalg.norm(w))
            j += 1
            if j == n:
                exhausted = True
                beta = 0.0
                break
            if beta <= rounding_floor(op, anorm):
                # Invariant subspace: go on from a random vector orthogonal to
                # Q, with zero coupling, so T stays block diagonal.
                Q[:, j] = _random_orthogonal(rng, Q[:, :j])
                beta = 0.0
            else:
                Q[:, j] = w / beta
            if j < m:
                H[j, j - 1] = H[j - 1, j] = beta

        # Rayleigh-Ritz on the current basis.
        theta, S = eigh(H[:j, :j])
        estimates = np.abs(beta * S[j - 1, :])
        order = sort_by_which(theta, which)
        wanted = order[:k]
        done = np.all(_converged(op, theta[wanted], estimates[wanted], rtol, anorm))
        cycles += 1
        if done or exhausted or num_matvecs >= budget:
            break

        # Thick restart: keep the best Ritz vectors and the next Lanczos vector.
        kept = order[:keep]
        Q[:, :keep] = Q[:, :j] @ S[:, kept]
        Q[:, keep] = Q[:, j]
        H[:] = 0.0
        H[np.arange(keep), np.arange(keep)] = theta[kept]
        coupling = beta * S[j - 1, kept]
        H[keep, :keep] = coupling
        H[:keep, keep] = coupling
        j = keep

    X = Q[:, :j] @ S[:, wanted]
    residuals, norms = _residuals(op, theta[wanted], X)
    anorm = max(anorm, float(norms.max()))
    logger.debug("Lanczos: %d cycles, %d matvecs", cycles, num_matvecs + k)
    return EigenResult(
        eigenvalues=theta[wanted],
        eigenvectors=X,
        converged=_converged(op, theta[wanted], residuals, rtol, anorm),
        residual_norms=residuals,
        num_matvecs=num_matvecs + k,
        which=which,
        method="lanczos",
        rtol=rtol,
    )


def _random_orthogonal(rng, Q: np.ndarray) -> np.ndarray:
    """Draw a unit vector orthogonal to the orthonormal columns of Q (fewer than n)."""
    while True:
        v = draw_unit_vector(rng, Q.shape[0])
        for _ in range(2):
            v -= Q @ (Q.T @ v)
        norm = np.linalg.norm(v)
        # A random vector keeps a component of norm about sqrt((n - j) / n)
        # outside span(Q). Redraw in the rare case that it lost almost all.
        if norm > 1e-8:
            return v / norm


class _CountingOperator(LinearOperator):
    """Wrap an operator and count its matrix-vector products."""

    def __init__(self, op: LinearOperator):
        super().__init__(dtype=np.float64, shape=op.shape)
        self.op = op
        self.num_matvecs = 0

    def _matvec(self, x):
        self.num_matvecs += 1
        return apply(self.op, np.ravel(x))

    def _matmat(self, X):
        self.num_matvecs += X.shape[1]
        return apply_block(self.op, X, block_size=max(1, X.shape[1]))


def _arpack(op, k, which, rtol, max_matvecs, v0, ncv) -> EigenResult:
    """Call scipy's eigsh and turn ArpackNoConvergence into a partial result."""
    counted = _CountingOperator(op)
    # NOTE: scipy 1.17's eigsh was measured to use at most
    # ncv + maxiter * (ncv - k) + 1 products. The residuals here take k more.
    budget = max_matvecs - k - 1
    ncv = min(ncv, (budget + k) // 2)
    maxiter = (budget - ncv) // (ncv - k)
    try:
        theta, X = eigsh(
            counted, k=k, which=which, v0=v0, ncv=ncv, maxiter=maxiter, tol=rtol
        )
    except ArpackNoConvergence as exc:
        theta, X = exc.eigenvalues, exc.eigenvectors
        logger.debug("ARPACK converged %d of %d pairs", theta.size, k)
    except ArpackError as exc:
        raise RuntimeError(
            f"ARPACK failed ({exc}); method='lanczos' handles operators whose "
            "Krylov spaces are small invariant subspaces, such as a zero or "
            "low-rank operator."
        ) from exc
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    X = np.asarray(X, dtype=np.float64).reshape(op.shape[0], theta.size)

    order = sort_by_which(theta, which)
    theta, X = theta[order], X[:, order]
    if theta.size:
        residuals, norms = _residuals(counted, theta, X)
        converged = _converged(op, theta, residuals, rtol, float(norms.max()))
    else:
        residuals, converged = np.empty(0), np.empty(0, dtype=bool)
    result = EigenResult(
        eigenvalues=theta,
        eigenvectors=X,
        converged=converged,
        residual_norms=residuals,
        num_matvecs=counted.num_matvecs,
        which=which,
        method="arpack",
        rtol=rtol,
    )
    if theta.size < k:
        warnings.warn(
            f"arpack: converged {theta.size} of {k} eigenpairs within "
            f"{counted.num_matvecs} matvecs (rtol={rtol:.3e}); the result holds only "
            "the converged pairs. Raise max_matvecs or rtol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return result
