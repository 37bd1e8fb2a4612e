"""Deflated power iteration for extreme eigenpairs."""

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from hessop._checks import check_int, check_positive_float, check_which, sort_by_which
from hessop._linop import (
    apply,
    as_operator,
    check_start_vector,
    convergence_floor,
    working_eps,
)
from hessop._random import draw_unit_vector, resolve_rng
from hessop._results import EigenResult
from hessop._warnings import ConvergenceWarning

__all__ = ["power_iteration"]

logger = logging.getLogger(__name__)

# Cap on products per requested eigenpair when max_matvecs is None. Power
# iteration reduces the residual by |lambda_2 / lambda_1| per product, so 1000
# products reach the default float64 rtol (1.5e-8) for ratios up to about 0.98.
POWER_MATVECS_PER_PAIR = 1000


def default_rtol(op: LinearOperator) -> float:
    """Return ``sqrt(eps)`` of the precision the operator computes in.

    The error of a Rayleigh quotient is about ``||r||^2 / gap``, so a residual
    of ``sqrt(eps) * |lambda|`` gives an eigenvalue accurate to about ``eps``
    relative when the gap is of order ``|lambda|``. A smaller residual cannot
    improve the eigenvalue further, and a float32 operator cannot reach it.
    This gives 1.5e-8 for float64 and 3.5e-4 for float32 operators.
    """
    return math.sqrt(working_eps(op))


def power_iteration(
    A,
    k: int = 1,
    *,
    which: str = "LA",
    rtol: float | None = None,
    max_matvecs: int | None = None,
    seed=None,
    v0=None,
) -> EigenResult:
    """Compute extreme eigenpairs of a symmetric operator by deflated power iteration.

    Each pair comes from the iteration ``v <- P (A + s I) v / ||P (A + s I) v||``,
    where ``P`` projects out the pairs already found (deflation) and ``s`` is
    a shift. A pair is converged when

    .. math:: \\|A v - \\theta v\\| \\le \\max(\\mathrm{rtol}\\,|\\theta|,\\
              10 \\sqrt{n}\\,\\varepsilon\\,\\|A\\|)

    for the Rayleigh quotient ``theta = v^T A v``, with ``eps`` the machine
    epsilon of the operator's dtype and ``||A||`` estimated by the largest
    ``||A v||`` seen. The second term is the rounding level of a product
    with ``A``, below which no computed residual can go. It matters only for
    eigenvalues at or near zero.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator.
    k : int, default 1
        Number of eigenpairs, ``1 <= k <= n``.
    which : {'LA', 'SA', 'LM'}, default 'LA'
        Largest algebraic (the "top" eigenvalues of a Hessian), smallest
        algebraic or largest magnitude. Eigenvalues are returned with their
        sign.
    rtol : float, optional
        Relative residual tolerance. By default ``sqrt(eps)`` of the
        operator's dtype: 1.5e-8 for float64, 3.5e-4 for float32. At that
        residual the eigenvalue is accurate to about ``eps`` relative when
        the gap to the next eigenvalue is of order ``|lambda|``.
    max_matvecs : int, optional
        Cap on matrix-vector products for the whole run, by default
        ``1000 * k``. Unused products of one pair pass to the next.
    seed : int, numpy.random.Generator or None
        Seed for the random start vectors.
    v0 : array_like of shape (n,), optional
        Start vector for the first pair. It must not be orthogonal to the
        wanted eigenvector, or the iteration converges to another one.

    Returns
    -------
    EigenResult
        The Ritz pairs of the best iterates (those with the smallest relative
        residual), whether each converged, and their residual norms.

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.

    Warns
    -----
    ConvergenceWarning
        If a pair misses ``rtol`` within ``max_matvecs``; the message gives
        the relative residual reached and ``rtol``.

    Notes
    -----
    Cost: one matvec per iteration. The residual falls by about
    ``|mu_2 / mu_1|`` per iteration, the ratio of the two largest eigenvalue
    magnitudes of the shifted, deflated operator, so close eigenvalues make
    it slow; :func:`hessop.eigenvalues` with its default Lanczos method
    needs far fewer products.

    Shift. Power iteration finds the eigenvalue of largest magnitude. For
    'LA' the first run uses ``s = 0`` and half of the pair's budget. If it
    converges to a negative value ``theta``, that is the smallest eigenvalue
    of the deflated operator, and the run is repeated with ``s = -theta``,
    which makes ``A + s I`` positive semi-definite so that its dominant
    eigenvalue is the largest one of ``A``. If it does not converge and
    either its Rayleigh quotient is negative or its residual stalls (as when
    the largest and smallest eigenvalues have nearly equal magnitude), it is
    repeated with ``s`` equal to the largest ``||A v||`` seen; otherwise it
    continues unshifted. 'SA' mirrors this. The answer is thus right
    whatever the sign of the dominant eigenvalue, and a run that ends at the
    other end of the spectrum is reported as not converged.

    Deflation. Each run stops on the residual of the deflated operator at
    ``rtol / sqrt(k)``. A final Rayleigh-Ritz step on the span of the ``k``
    vectors removes the error each pair inherits from the inexact earlier
    pairs; mixing ``k`` residuals in it can multiply them by up to
    ``sqrt(k)``, hence the tighter target. The residuals reported are those
    of ``A`` itself. Deflation finds every copy of a repeated eigenvalue.

    Unlike a test on the change of the eigenvalue estimate between
    iterations, the residual test cannot stop on a stagnating estimate far
    from an eigenvalue. No constant is added to any norm.

    References
    ----------
    G. H. Golub and C. F. Van Loan, "Matrix Computations", 4th ed.,
    Johns Hopkins University Press, 2013, chapters 7 and 8.

    Z. Yao, A. Gholami, K. Keutzer and M. W. Mahoney, "PyHessian:
    Neural networks through the lens of the Hessian", IEEE BigData 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> A = np.diag([-5.0, 1.0, 2.0])
    >>> hessop.power_iteration(A, which="LA", seed=0).eigenvalues
    array([2.])
    >>> hessop.power_iteration(A, which="LM", seed=0).eigenvalues
    array([-5.])
    """
    op = as_operator(A)
    n = op.shape[0]
    k = check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be at most n={n}, the dimension of A, got k={k}.")
    which = check_which(which)
    rtol = default_rtol(op) if rtol is None else check_positive_float(rtol, "rtol")
    if max_matvecs is None:
        max_matvecs = POWER_MATVECS_PER_PAIR * k
    else:
        max_matvecs = check_int(max_matvecs, "max_matvecs", minimum=k)
    v0 = check_start_vector(v0, n)
    rng = resolve_rng(A, seed)

    result = power_eigenpairs(op, k, which, rtol, max_matvecs, rng, v0)
    warn_unconverged(result, stacklevel=2)
    return result


def warn_unconverged(result: EigenResult, stacklevel: int) -> None:
    """Issue a ConvergenceWarning naming the pairs of ``result`` that missed rtol."""
    missed = np.flatnonzero(~result.converged)
    if missed.size == 0:
        return
    scale = np.maximum(np.abs(result.eigenvalues[missed]), np.finfo(np.float64).tiny)
    reached = float(np.max(result.residual_norms[missed] / scale))
    warnings.warn(
        f"{result.method}: {missed.size} of {result.converged.size} eigenpairs did "
        f"not converge within {result.num_matvecs} matvecs; largest relative "
        f"residual reached {reached:.3e}, rtol={result.rtol:.3e}. Raise max_matvecs "
        "or rtol.",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )


@dataclass
class _PowerRun:
    theta: float
    v: np.ndarray
    Av: np.ndarray
    converged: bool
    anorm: float
    num_matvecs: int
    midpoint_relative_residual: float
    relative_residual: float


def _orthogonalize(v: np.ndarray, X: np.ndarray) -> np.ndarray:
    for _ in range(2):
        v = v - X @ (X.T @ v)
    return v


def _relative(residual: float, theta: float) -> float:
    return residual / abs(theta) if theta != 0.0 else math.inf


def _power_run(op, X, shift, v, budget, rtol) -> _PowerRun:
    """Iterate on ``P (A + shift I) P`` from ``v`` for at most ``budget`` products.

    ``P`` projects out the columns of ``X``. The stopping test uses the
    residual of the deflated operator, ``P A v - theta v``: the pairs in ``X``
    are accurate only to ``rtol``, so the residual with ``A`` itself would
    keep their error and could stall above the tolerance.
    """
    v = _orthogonalize(v, X)
    v /= np.linalg.norm(v)
    anorm = 0.0
    best = None
    best_ratio = math.inf
    midpoint_relative = math.inf

    num_matvecs = 0
    while num_matvecs < budget:
        w = apply(op, v)
        num_matvecs += 1
        anorm = max(anorm, float(np.linalg.norm(w)))
        theta = float(v @ w)
        residual = float(np.linalg.norm(w - X @ (X.T @ w) - theta * v))
        tolerance = max(rtol * abs(theta), convergence_floor(op, anorm))
        if num_matvecs == (budget + 1) // 2:
            midpoint_relative = _relative(residual, theta)

        ratio = residual / tolerance if tolerance > 0.0 else 0.0
        if ratio < best_ratio:
            best_ratio = ratio
            best = (theta, v, w, residual)
        if residual <= tolerance:
            break

        u = _orthogonalize(w + shift * v, X)
        norm = np.linalg.norm(u)
        if norm == 0.0:
            # (A + shift I) v has no component outside the found pairs, so v
            # is an eigenvector: its residual passed the test above already.
            break
        v = u / norm

    theta, v, w, residual = best
    return _PowerRun(
        theta=theta,
        v=v,
        Av=w,
        converged=best_ratio <= 1.0,
        anorm=anorm,
        num_matvecs=num_matvecs,
        midpoint_relative_residual=midpoint_relative,
        relative_residual=_relative(residual, theta),
    )


def _find_pair(op, X, shift, start, budget, rtol, which, rng):
    """Run power iteration for the next pair at the wanted end of the spectrum.

    Returns the run, the shift for later pairs and whether the run is known
    to be at the wanted end. For 'LM' one run suffices. For 'LA' and 'SA'
    an unshifted first run gets half the budget and its outcome decides:

    - converged at the wanted end: done;
    - converged at the other end: rerun shifted by minus that eigenvalue,
      which makes the deflated operator semi-definite with the wanted end
      dominant;
    - not converged, with its Rayleigh quotient on the other side of the
      shift: rerun shifted by the largest ``||A v||`` seen;
    - not converged, with a relative residual that fell by less than a
      factor of 10 over the second half of the run: rerun shifted by the
      largest ``||A v||`` seen, too. Such a stall happens when the largest
      and smallest eigenvalues have nearly equal magnitude;
    - not converged but progressing towards the wanted end: continue from
      the best iterate with the rest of the budget.
    """
    if which == "LM":
        return _power_run(op, X, shift, start, budget, rtol), shift, True

    sign = 1.0 if which == "LA" else -1.0
    first_budget = budget // 2 if shift == 0.0 and budget >= 2 else budget
    run = _power_run(op, X, shift, start, first_budget, rtol)
    remaining = budget - run.num_matvecs
    wrong_side = sign * (run.theta + shift) < 0.0

    if run.converged and not wrong_side:
        return run, shift, True
    if remaining == 0:
        return run, shift, not wrong_side
    if run.converged:
        new_shift = -run.theta
    elif shift == 0.0 and (
        wrong_side or run.relative_residual > 0.1 * run.midpoint_relative_residual
    ):
        new_shift = sign * run.anorm
    else:
        more = _power_run(op, X, shift, run.v, remaining, rtol)
        more.num_matvecs += run.num_matvecs
        return more, shift, sign * (more.theta + shift) >= 0.0

    logger.debug("power iteration: shift %.6g", new_shift)
    retry = _power_run(
        op, X, new_shift, draw_unit_vector(rng, X.shape[0]), remaining, rtol
    )
    retry.num_matvecs += run.num_matvecs
    return retry, new_shift, sign * (retry.theta + new_shift) >= 0.0


def power_eigenpairs(op, k, which, rtol, max_matvecs, rng, v0) -> EigenResult:
    """Find ``k`` eigenpairs by deflated, shifted power iteration (validated input)."""
    n = op.shape[0]
    X = np.empty((n, 0))
    AX = np.empty((n, 0))
    at_wanted_end = []
    shift = 0.0
    used = 0
    anorm = 0.0

    # Rayleigh-Ritz at the end mixes the pairs, and a mixed residual can be
    # up to sqrt(k) times the largest single one, so each run aims that much
    # lower.
    run_rtol = rtol / math.sqrt(k)
    for j in range(k):
        budget = (max_matvecs - used) // (k - j)
        start = v0 if (j == 0 and v0 is not None) else draw_unit_vector(rng, n)
        run, shift, trusted = _find_pair(
            op, X, shift, start, budget, run_rtol, which, rng
        )
        used += run.num_matvecs
        anorm = max(anorm, run.anorm)
        X = np.column_stack([X, run.v])
        AX = np.column_stack([AX, run.Av])
        at_wanted_end.append(trusted)

    # Rayleigh-Ritz on the span of the found vectors removes the error that
    # each pair inherited from the inexact deflation by the earlier ones.
    H = X.T @ AX
    theta, G = np.linalg.eigh(0.5 * (H + H.T))
    X = X @ G
    AX = AX @ G
    residuals = np.linalg.norm(AX - X * theta, axis=0)
    converged = residuals <= np.maximum(
        rtol * np.abs(theta), convergence_floor(op, anorm)
    )
    for j in np.flatnonzero(~np.array(at_wanted_end)):
        # A run that ended at the other end of the spectrum is not a valid
        # result, however small its residual.
        converged[np.argmax(np.abs(G[j]))] = False

    order = sort_by_which(theta, which)
    return EigenResult(
        eigenvalues=theta[order],
        eigenvectors=X[:, order],
        converged=converged[order],
        residual_norms=residuals[order],
        num_matvecs=used,
        which=which,
        method="power",
        rtol=rtol,
    )
