"""Stochastic estimation of the diagonal of an operator."""

import logging

import numpy as np

from hessop._checks import check_choice, check_int
from hessop._linop import apply_block, as_operator
from hessop._random import DISTRIBUTIONS, draw_probes, resolve_rng
from hessop._results import DiagonalResult

__all__ = ["diagonal"]

logger = logging.getLogger(__name__)


def diagonal(
    A,
    *,
    num_matvecs: int = 100,
    seed=None,
    distribution: str = "rademacher",
    block_size: int = 16,
) -> DiagonalResult:
    """Estimate the diagonal of a symmetric operator with Hutchinson probes.

    .. math::

        \\operatorname{diag}(A) \\approx \\frac{1}{m} \\sum_{i=1}^{m}
        z_i \\odot A z_i, \\qquad \\mathbb{E}[z z^T] = I,

    which is unbiased. With Rademacher probes entry ``j`` of one sample is
    ``A_jj + sum_{l != j} A_jl z_j z_l``, so its variance is
    ``sum_{l != j} A_jl^2``, and the estimate of a diagonal matrix is exact
    after one probe.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator.
    num_matvecs : int, default 100
        Number of probes, one product each. The default matches that of
        :func:`hessop.trace`.
    seed : int, numpy.random.Generator or None
        Seed for the probes.
    distribution : {'rademacher', 'gaussian', 'sphere'}, default 'rademacher'
        Probe distribution. Rademacher probes have the smallest variance
        here, because ``z_j^2 = 1`` removes the diagonal's own contribution.
    block_size : int, default 16
        Probes per ``A.matmat`` call. Memory is about ``3 * block_size``
        vectors of length ``n``; the result does not depend on it.

    Returns
    -------
    DiagonalResult
        ``estimate`` and, from two probes on, ``stderr`` per entry (sample
        standard deviation over ``sqrt(num_matvecs)``).

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.

    Notes
    -----
    Cost: ``num_matvecs`` products and ``O(n)`` memory besides the blocks.
    Mean and variance are accumulated block by block with the pairwise
    update of Chan, Golub and LeVeque, which avoids the cancellation of a
    running sum of squares.

    References
    ----------
    C. Bekas, E. Kokiopoulou and Y. Saad, "An estimator for the
    diagonal of a matrix", Appl. Numer. Math. 57 (2007), 1214-1229.

    M. F. Hutchinson, "A stochastic estimator of the trace of the
    influence matrix for Laplacian smoothing splines", Comm. Statist.
    Simulation Comput. 18 (1989), 1059-1076.

    T. F. Chan, G. H. Golub and R. J. LeVeque, "Algorithms for
    computing the sample variance: analysis and recommendations", Amer.
    Statist. 37 (1983), 242-247.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> hessop.diagonal(np.diag([1.0, -2.0, 3.0]), num_matvecs=1, seed=0).estimate
    array([ 1., -2.,  3.])
    """
    op = as_operator(A)
    n = op.shape[0]
    num_matvecs = check_int(num_matvecs, "num_matvecs", minimum=1)
    distribution = check_choice(distribution, "distribution", DISTRIBUTIONS)
    block_size = check_int(block_size, "block_size", minimum=1)
    rng = resolve_rng(A, seed)

    mean = np.zeros(n)
    sum_squares = np.zeros(n)  # sum of squared deviations from the mean
    count = 0
    while count < num_matvecs:
        size = min(block_size, num_matvecs - count)
        Z = draw_probes(rng, n, size, distribution)
        samples = Z * apply_block(op, Z, block_size)
        block_mean = samples.mean(axis=1)
        block_squares = ((samples - block_mean[:, None]) ** 2).sum(axis=1)
        delta = block_mean - mean
        total = count + size
        mean += delta * (size / total)
        sum_squares += block_squares + delta**2 * (count * size / total)
        count = total

    stderr = np.sqrt(sum_squares / (count - 1) / count) if count > 1 else None
    logger.debug("diagonal: %d probes", count)
    return DiagonalResult(
        estimate=mean,
        stderr=stderr,
        num_matvecs=count,
        distribution=distribution,
    )
