"""Stochastic Lanczos Quadrature for the spectral density."""

import logging

import numpy as np
from scipy.linalg import eigh_tridiagonal

from hessop._checks import check_int
from hessop._lanczos import lanczos_block
from hessop._linop import as_operator
from hessop._random import draw_probes, resolve_rng
from hessop._results import SpectralDensity

__all__ = ["slq"]

logger = logging.getLogger(__name__)


def slq(
    A,
    *,
    num_steps: int = 90,
    num_probes: int = 1,
    seed=None,
    block_size: int = 1,
) -> SpectralDensity:
    """Approximate the spectral density of ``A`` by Stochastic Lanczos Quadrature.

    The spectral density of ``A`` with eigenvalues ``lambda_j`` is
    ``phi(t) = (1/n) sum_j delta(t - lambda_j)``. For a unit vector
    ``v = z / ||z||`` with Rademacher ``z``,
    ``v^T f(A) v = sum_j (u_j^T v)^2 f(lambda_j)`` is an integral against a
    measure whose expectation is ``phi``. ``m`` Lanczos steps from ``v``
    give the tridiagonal ``T = S diag(theta) S^T``, and the Gauss quadrature
    rule with nodes ``theta_k`` and weights ``tau_k = S_{1k}^2`` integrates
    polynomials up to degree ``2 m - 1`` against that measure exactly.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator.
    num_steps : int, default 90
        Lanczos steps per probe, capped at ``n``. The default 90 nodes lie on
        average about 1 % of the spectral range apart, the default kernel
        width of :meth:`SpectralDensity.density`.
    num_probes : int, default 1
        Number of independent probe vectors; the density is their average.
    seed : int, numpy.random.Generator or None
        Seed for the probes.
    block_size : int, default 1
        Probes run in lockstep, sharing each ``A.matmat`` call. Memory is
        ``block_size * num_steps`` vectors of length ``n`` (the Lanczos
        bases), so the default keeps one basis at a time. Raise it when the
        operator serves a block of vectors in one pass and memory allows.

    Returns
    -------
    SpectralDensity
        Nodes and weights per probe, which probes broke down, and
        ``num_matvecs``. Its :meth:`~SpectralDensity.density` gives the
        smoothed density on a grid and :meth:`~SpectralDensity.trace_estimate`
        the trace.

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.

    Notes
    -----
    Cost: ``num_probes * min(num_steps, n)`` products, fewer when a probe's
    Krylov space becomes invariant (a breakdown, which makes that probe's
    quadrature exact). Lanczos runs with full reorthogonalisation, so no
    spurious copies of converged eigenvalues appear among the nodes. The
    tridiagonal matrix is kept in float64 and decomposed with
    :func:`scipy.linalg.eigh_tridiagonal`, a solver for symmetric
    tridiagonal matrices, so nodes and weights are real and the weights of
    each probe sum to 1.

    References
    ----------
    G. H. Golub and G. Meurant, "Matrices, Moments and Quadrature with
    Applications", Princeton University Press, 2010.

    L. Lin, Y. Saad and C. Yang, "Approximating spectral densities of
    large matrices", SIAM Rev. 58 (2016), 34-65.

    S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via
    stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38 (2017),
    1075-1099.

    Z. Yao, A. Gholami, K. Keutzer and M. W. Mahoney, "PyHessian:
    Neural networks through the lens of the Hessian", IEEE BigData 2020.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    >>> np.round(result.nodes[0], 12), np.round(result.weights[0], 12)
    (array([1., 2., 3., 4.]), array([0.25, 0.25, 0.25, 0.25]))
    >>> round(result.trace_estimate(), 12)
    10.0
    """
    op = as_operator(A)
    n = op.shape[0]
    num_steps = check_int(num_steps, "num_steps", minimum=1)
    num_probes = check_int(num_probes, "num_probes", minimum=1)
    block_size = check_int(block_size, "block_size", minimum=1)
    rng = resolve_rng(A, seed)

    nodes, weights, breakdown = [], [], []
    num_matvecs = 0
    for start in range(0, num_probes, block_size):
        size = min(block_size, num_probes - start)
        V = draw_probes(rng, n, size, "rademacher") / np.sqrt(n)
        run = lanczos_block(
            op, V, num_steps, reorthogonalize=True, keep_basis=False, block_size=size
        )
        num_matvecs += run.num_matvecs
        for i in range(size):
            m = int(run.num_steps[i])
            theta, S = eigh_tridiagonal(run.alpha[i, :m], run.beta[i, : m - 1])
            nodes.append(theta)
            weights.append(S[0, :] ** 2)
            breakdown.append(bool(run.breakdown[i]))

    logger.debug("SLQ: %d probes, %d matvecs", num_probes, num_matvecs)
    return SpectralDensity(
        nodes=tuple(nodes),
        weights=tuple(weights),
        breakdown=np.array(breakdown),
        num_matvecs=num_matvecs,
        dimension=n,
    )
