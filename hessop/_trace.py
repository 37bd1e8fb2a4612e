"""Stochastic trace estimation: Hutchinson, Hutch++ and XTrace."""

import logging
import math
import warnings

import numpy as np
from scipy.linalg import qr, solve_triangular

from hessop._checks import check_choice, check_int, check_positive_float
from hessop._linop import apply_block, as_operator
from hessop._random import DISTRIBUTIONS, draw_probes, resolve_rng
from hessop._results import TraceResult
from hessop._warnings import ConvergenceWarning

__all__ = ["hutchinson", "trace"]

logger = logging.getLogger(__name__)

METHODS = ("hutchinson", "hutch++", "xtrace")
DEFAULT_DISTRIBUTION = {
    "hutchinson": "rademacher",
    "hutch++": "rademacher",
    "xtrace": "sphere",
}
ALLOWED_DISTRIBUTIONS = {
    "hutchinson": DISTRIBUTIONS,
    "hutch++": DISTRIBUTIONS,
    "xtrace": ("gaussian", "sphere"),
}
MINIMUM_MATVECS = {"hutchinson": 1, "hutch++": 3, "xtrace": 4}
# Default product budget: the iteration cap of PyHessian's trace (Yao et al.).
DEFAULT_NUM_MATVECS = 100
# Default number of probes per matmat call. A block holds the probes and their
# products, 2 * 16 float64 vectors of length n: 256 MB for n = 10**6.
DEFAULT_BLOCK_SIZE = 16
# With rtol, no stopping decision before this many samples, so that a
# standard error that is small by chance in the first few samples cannot end
# the run.
MIN_SAMPLES = 10


def hutchinson(
    A,
    *,
    num_matvecs: int = DEFAULT_NUM_MATVECS,
    rtol: float | None = None,
    seed=None,
    distribution: str = "rademacher",
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> TraceResult:
    """Estimate ``tr(A)`` with Hutchinson's estimator.

    .. math::

        \\operatorname{tr}(A) \\approx \\frac{1}{m} \\sum_{i=1}^{m} z_i^T A z_i,
        \\qquad \\mathbb{E}[z z^T] = I,

    which is unbiased. Its variance per sample is
    ``2 (||A||_F^2 - sum_i A_ii^2)`` for Rademacher probes and
    ``2 ||A||_F^2`` for Gaussian ones, so Rademacher probes are exact on
    diagonal matrices after one sample.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator.
    num_matvecs : int, default 100
        Number of probes, one product each; a cap when ``rtol`` is given. The
        default is the iteration cap of PyHessian's trace estimator.
    rtol : float, optional
        Stop once the standard error is at most ``rtol * |estimate|``. The
        test is made after each block of probes from 10 samples on, never
        earlier. It uses the magnitude of the estimate, so it works for
        negative traces too.
    seed : int, numpy.random.Generator or None
        Seed for the probes.
    distribution : {'rademacher', 'gaussian', 'sphere'}, default 'rademacher'
        Probe distribution; 'sphere' draws uniformly from the sphere of radius
        ``sqrt(n)``.
    block_size : int, default 16
        Probes per ``A.matmat`` call. Memory is ``2 * block_size`` vectors of
        length ``n``, for the probes and their products. The probes, and the
        estimate when no ``rtol`` is given, do not depend on it.

    Returns
    -------
    TraceResult
        ``estimate``, ``stderr`` (sample standard deviation over
        ``sqrt(num samples)``; None after one sample), ``converged`` (None
        without ``rtol``), ``num_matvecs`` and every sample ``z^T A z``.

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.

    Warns
    -----
    ConvergenceWarning
        If ``rtol`` is given and not met within ``num_matvecs`` products.

    Notes
    -----
    Cost: ``num_matvecs`` products, or fewer when ``rtol`` is met. PyHessian
    (Yao et al., 2020) uses the same estimator but stops when the running
    mean changes little between two samples. A signed running mean near
    zero passes that test by chance, so hessop tests the standard error
    instead.

    References
    ----------
    M. F. Hutchinson, "A stochastic estimator of the trace of the
    influence matrix for Laplacian smoothing splines", Comm. Statist.
    Simulation Comput. 18 (1989), 1059-1076.

    Z. Yao, A. Gholami, K. Keutzer and M. W. Mahoney, "PyHessian:
    Neural networks through the lens of the Hessian", IEEE BigData 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> hessop.hutchinson(np.diag([1.0, -2.0, 3.0]), num_matvecs=1, seed=0).estimate
    2.0
    """
    op = as_operator(A)
    num_matvecs = check_int(num_matvecs, "num_matvecs", minimum=1)
    distribution = check_choice(distribution, "distribution", DISTRIBUTIONS)
    block_size = check_int(block_size, "block_size", minimum=1)
    rtol = _check_rtol(rtol, num_matvecs)
    rng = resolve_rng(A, seed)

    result = _hutchinson(op, num_matvecs, rtol, rng, distribution, block_size)
    _warn_trace_unconverged(result, stacklevel=2)
    return result


def trace(
    A,
    *,
    method: str = "hutchinson",
    num_matvecs: int = DEFAULT_NUM_MATVECS,
    rtol: float | None = None,
    seed=None,
    distribution: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> TraceResult:
    """Estimate ``tr(A)`` with Hutchinson, Hutch++ or XTrace.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator.
    method : {'hutchinson', 'hutch++', 'xtrace'}, default 'hutchinson'
        'hutchinson': see :func:`hessop.hutchinson`. 'hutch++' and 'xtrace'
        first capture the dominant eigenspace with a randomised range finder
        and estimate only the rest stochastically. On a matrix with a
        decaying spectrum they reach a far smaller error for the same number
        of products.
    num_matvecs : int, default 100
        Product budget; at least 3 for 'hutch++' and 4 for 'xtrace'. The
        default is the iteration cap of PyHessian's trace estimator.
    rtol : float, optional
        Relative standard error at which 'hutchinson' stops; the other
        methods use a fixed budget and reject it.
    seed : int, numpy.random.Generator or None
        Seed for all random vectors.
    distribution : {'rademacher', 'gaussian', 'sphere'}, optional
        Probe distribution. By default 'rademacher' for 'hutchinson' and
        'hutch++', and 'sphere' for 'xtrace', which accepts only 'gaussian'
        and 'sphere'.
    block_size : int, default 16
        Largest number of vectors per ``A.matmat`` call.

    Returns
    -------
    TraceResult

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid, including a distribution or ``rtol`` that
        the method cannot use; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.

    Warns
    -----
    ConvergenceWarning
        If ``rtol`` is given and not met within ``num_matvecs`` products.

    Notes
    -----
    Hutch++ splits ``m = num_matvecs`` products into three parts: ``A S`` for
    ``m // 3`` random vectors ``S``, ``A Q`` for an orthonormal basis ``Q``
    of ``range(A S)``, and Hutchinson on the deflated matrix with the rest:

    .. math::

        \\operatorname{tr}(A) \\approx \\operatorname{tr}(Q^T A Q)
        + \\frac{1}{g} \\sum_{i=1}^{g} g_i^T (I - Q Q^T) A (I - Q Q^T) g_i.

    It is unbiased, and its error falls like ``1/m`` rather than
    ``1/sqrt(m)`` for matrices whose spectrum decays. ``stderr`` is the
    standard error of the deflated Hutchinson part. Cost: ``m`` products,
    ``O(n m^2)`` arithmetic for the QR factorisation and the projections, and
    a few blocks of ``m / 3`` vectors of length ``n`` in memory.

    XTrace draws ``s = m // 2`` vectors ``omega_i``, computes ``Y = A Omega``
    and, for each ``i``, the orthogonal projector ``P_i`` onto the span of
    ``Y`` without its column ``i``. Each leave-one-out estimate

    .. math::

        t_i = \\operatorname{tr}(P_i A) + (n - s + 1)
        \\frac{x_i^T A x_i}{x_i^T x_i}, \\qquad x_i = (I - P_i) \\omega_i,

    is unbiased because ``omega_i`` is independent of ``P_i`` and, being
    rotation invariant, gives ``x_i`` a uniformly distributed direction in
    the ``n - s + 1`` dimensional complement of ``range(P_i)``. Rademacher
    vectors are not rotation invariant, hence rejected. Since only the
    direction of ``omega_i`` matters, 'gaussian' and 'sphere' give the same
    estimate. All ``P_i`` come from one QR factorisation ``Y = Q R``:
    ``P_i = Q Q^T - u_i u_i^T`` with ``u_i = Q R^{-T} e_i / ||R^{-T} e_i||``.
    The estimate is the mean of the ``t_i`` and ``stderr`` is their standard
    deviation over ``sqrt(s)``, an error estimate (the ``t_i`` are
    dependent). It is exact when ``rank(A) < s``. Cost: ``2 s`` products,
    ``O(n s^2)`` arithmetic and four blocks of ``s`` vectors of length ``n``
    in memory.

    When the sketch has at least ``n`` columns, both methods capture all of
    ``A`` and return the exact trace with fewer products than the budget.

    References
    ----------
    R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++:
    Optimal stochastic trace estimation", SOSA 2021, 142-155.

    E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: Making the
    most of every sample in stochastic trace estimation", SIAM J. Matrix
    Anal. Appl. 45 (2024), 1-23.

    M. F. Hutchinson, "A stochastic estimator of the trace of the
    influence matrix for Laplacian smoothing splines", Comm. Statist.
    Simulation Comput. 18 (1989), 1059-1076.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> A = np.diag(1.0 / np.arange(1, 101) ** 2)
    >>> result = hessop.trace(A, method="hutch++", num_matvecs=60, seed=0)
    >>> bool(abs(result.estimate - np.trace(A)) < 1e-2)
    True
    """
    method = check_choice(method, "method", METHODS)
    op = as_operator(A)
    num_matvecs = check_int(num_matvecs, "num_matvecs", minimum=MINIMUM_MATVECS[method])
    block_size = check_int(block_size, "block_size", minimum=1)
    if distribution is None:
        distribution = DEFAULT_DISTRIBUTION[method]
    allowed = ALLOWED_DISTRIBUTIONS[method]
    if distribution not in allowed:
        check_choice(distribution, "distribution", DISTRIBUTIONS)
        raise ValueError(
            f"method={method!r} cannot use distribution={distribution!r}: XTrace "
            "needs rotation-invariant probes; use 'gaussian' or 'sphere'."
        )
    if rtol is not None and method != "hutchinson":
        raise ValueError(
            f"rtol is supported only by method='hutchinson', got method={method!r}; "
            "set num_matvecs instead."
        )
    rtol = _check_rtol(rtol, num_matvecs)
    rng = resolve_rng(A, seed)

    if method == "hutchinson":
        result = _hutchinson(op, num_matvecs, rtol, rng, distribution, block_size)
        _warn_trace_unconverged(result, stacklevel=2)
    elif method == "hutch++":
        result = _hutchpp(op, num_matvecs, rng, distribution, block_size)
    else:
        result = _xtrace(op, num_matvecs, rng, distribution, block_size)
    return result


def _check_rtol(rtol, num_matvecs: int) -> float | None:
    if rtol is None:
        return None
    rtol = check_positive_float(rtol, "rtol")
    if num_matvecs < MIN_SAMPLES:
        raise ValueError(
            f"with rtol, num_matvecs must be at least {MIN_SAMPLES} (the minimum "
            f"sample count before a stopping decision), got {num_matvecs}."
        )
    return rtol


def _standard_error(samples: np.ndarray) -> float | None:
    if samples.size < 2:
        return None
    return float(np.std(samples, ddof=1) / math.sqrt(samples.size))


def _warn_trace_unconverged(result: TraceResult, stacklevel: int) -> None:
    if result.converged is not False:
        return
    scale = abs(result.estimate)
    reached = result.stderr / scale if scale > 0.0 else math.inf
    warnings.warn(
        f"{result.method}: standard error {result.stderr:.3e} (relative {reached:.3e}) "
        f"after {result.num_matvecs} matvecs; rtol={result.rtol:.3e} was not met. "
        "Raise num_matvecs or rtol.",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )


def _hutchinson(op, num_matvecs, rtol, rng, distribution, block_size) -> TraceResult:
    n = op.shape[0]
    samples = np.empty(num_matvecs)
    count = 0
    converged = None if rtol is None else False

    while count < num_matvecs:
        size = min(block_size, num_matvecs - count)
        if rtol is not None and count < MIN_SAMPLES:
            # End a block at MIN_SAMPLES so the first test comes as early as allowed.
            size = min(size, MIN_SAMPLES - count)
        Z = draw_probes(rng, n, size, distribution)
        AZ = apply_block(op, Z, block_size)
        samples[count : count + size] = np.einsum("ij,ij->j", Z, AZ)
        count += size

        if rtol is not None and count >= MIN_SAMPLES:
            stderr = _standard_error(samples[:count])
            if stderr <= rtol * abs(float(np.mean(samples[:count]))):
                converged = True
                break

    samples = samples[:count]
    logger.debug("Hutchinson: %d samples", count)
    return TraceResult(
        estimate=float(np.mean(samples)),
        stderr=_standard_error(samples),
        converged=converged,
        num_matvecs=count,
        samples=samples,
        method="hutchinson",
        distribution=distribution,
        rtol=rtol,
    )


def _hutchpp(op, num_matvecs, rng, distribution, block_size) -> TraceResult:
    n = op.shape[0]
    sketch_size = num_matvecs // 3

    S = draw_probes(rng, n, sketch_size, distribution)
    Q, _ = qr(apply_block(op, S, block_size), mode="economic")
    AQ = apply_block(op, Q, block_size)
    low_rank_trace = float(np.einsum("ij,ij->", Q, AQ))
    used = sketch_size + Q.shape[1]

    num_probes = num_matvecs - used
    if Q.shape[1] == n or num_probes == 0:
        # Q spans the whole space, so tr(Q^T A Q) is the trace itself.
        samples = np.array([low_rank_trace])
        stderr = 0.0 if Q.shape[1] == n else None
    else:
        G = draw_probes(rng, n, num_probes, distribution)
        for _ in range(2):
            G -= Q @ (Q.T @ G)
        AG = apply_block(op, G, block_size)
        residual_samples = np.einsum("ij,ij->j", G, AG)
        samples = low_rank_trace + residual_samples
        stderr = _standard_error(residual_samples)
        used += num_probes

    return TraceResult(
        estimate=float(np.mean(samples)),
        stderr=stderr,
        converged=None,
        num_matvecs=used,
        samples=samples,
        method="hutch++",
        distribution=distribution,
        rtol=None,
    )


def _xtrace(op, num_matvecs, rng, distribution, block_size) -> TraceResult:
    n = op.shape[0]
    s = num_matvecs // 2

    Omega = draw_probes(rng, n, s, distribution)
    Y = apply_block(op, Omega, block_size)
    Q, R = qr(Y, mode="economic")
    Z = apply_block(op, Q, block_size)
    used = s + Q.shape[1]
    H = Q.T @ Z
    H = 0.5 * (H + H.T)

    if s > n:
        # Every leave-one-out span still fills the space: each t_i is tr(A).
        samples = np.full(s, float(np.trace(H)))
        return TraceResult(
            estimate=float(np.trace(H)),
            stderr=0.0,
            converged=None,
            num_matvecs=used,
            samples=samples,
            method="xtrace",
            distribution=distribution,
            rtol=None,
        )

    W = Q.T @ Omega  # (s, s)
    T = Z.T @ Omega  # Q^T A Omega, by symmetry of A
    U = _leave_one_out_directions(
        R
    )  # column i: unit s_i with Q s_i orthogonal to Y_{-i}

    HU = H @ U
    uAu = np.einsum("ji,ji->i", U, HU)
    HW = H @ W
    c = np.einsum("ji,ji->i", U, W)
    uAx = np.einsum("ji,ji->i", U, T - HW)
    omega_A_omega = np.einsum("ij,ij->j", Omega, Y)
    perp_A_perp = (
        omega_A_omega - 2.0 * np.einsum("ji,ji->i", W, T) + np.einsum("ji,ji->i", W, HW)
    )
    xAx = perp_A_perp + 2.0 * c * uAx + c**2 * uAu
    x_norm2 = np.einsum("ij,ij->j", Omega, Omega) - np.einsum("ji,ji->i", W, W) + c**2
    complement_dim = n - s + 1
    samples = np.trace(H) - uAu + complement_dim * xAx / x_norm2

    return TraceResult(
        estimate=float(np.mean(samples)),
        stderr=_standard_error(samples),
        converged=None,
        num_matvecs=used,
        samples=samples,
        method="xtrace",
        distribution=distribution,
        rtol=None,
    )


def _leave_one_out_directions(R: np.ndarray) -> np.ndarray:
    """Return unit vectors ``u_i`` with ``u_i`` orthogonal to every column of R but i.

    For invertible ``R`` these are the normalised columns of ``R^{-T}``. When
    ``R`` is too ill-conditioned for that (a numerically low-rank sketch),
    ``u_i`` is the last column of the Q factor of ``R`` with column ``i``
    moved last, which is orthogonal to the other columns by construction.
    """
    s = R.shape[0]
    if np.linalg.cond(R) < 1.0 / math.sqrt(np.finfo(np.float64).eps):
        U = solve_triangular(R, np.eye(s), trans="T")
        return U / np.linalg.norm(U, axis=0)
    U = np.empty((s, s))
    for i in range(s):
        order = [*range(i), *range(i + 1, s), i]
        Qi, _ = np.linalg.qr(R[:, order], mode="complete")
        U[:, i] = Qi[:, -1]
    return U
