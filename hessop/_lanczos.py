"""The Lanczos tridiagonalisation, for one start vector or a block of them."""

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from hessop._checks import check_int
from hessop._linop import apply_block, as_operator, check_start_vector, rounding_floor
from hessop._random import draw_unit_vector, resolve_rng
from hessop._results import LanczosResult

__all__ = ["lanczos"]

logger = logging.getLogger(__name__)


def lanczos(
    A,
    num_steps: int,
    *,
    v0=None,
    seed=None,
    reorthogonalize: bool = True,
    return_basis: bool = False,
) -> LanczosResult:
    """Run the Lanczos tridiagonalisation of a symmetric operator.

    Starting from the unit vector ``q_1``, each step computes

    .. math::

        w = A q_j - \\alpha_j q_j - \\beta_{j-1} q_{j-1}, \\quad
        \\alpha_j = q_j^T A q_j, \\quad \\beta_j = \\|w\\|, \\quad
        q_{j+1} = w / \\beta_j,

    so that ``Q^T A Q = T`` with ``T`` tridiagonal (diagonal ``alpha``,
    off-diagonal ``beta``). The eigenvalues of ``T`` (Ritz values) approximate
    the extreme eigenvalues of ``A`` first.

    Parameters
    ----------
    A : LinearOperator, array_like or sparse matrix
        A real symmetric ``n x n`` operator; anything
        :func:`scipy.sparse.linalg.aslinearoperator` accepts.
    num_steps : int
        Number of Lanczos steps ``m``. With ``reorthogonalize=True`` the run
        stops after at most ``n`` steps, when the basis fills the space.
    v0 : array_like of shape (n,), optional
        Start vector; it is normalised. By default a random unit vector drawn
        from ``seed``.
    seed : int, numpy.random.Generator or None
        Seed for the random start vector; unused when ``v0`` is given.
    reorthogonalize : bool, default True
        Orthogonalise each new vector against all earlier ones, twice
        (classical Gram-Schmidt with one refinement pass). Without it the
        basis loses orthogonality as Ritz values converge, and ``T`` then has
        spurious copies ("ghosts") of converged eigenvalues (Golub and Van
        Loan, section 10.3).
    return_basis : bool, default False
        Return the ``n x m`` basis ``Q`` in the result.

    Returns
    -------
    LanczosResult
        ``alpha``, ``beta``, ``residual_norm``, ``basis``, ``num_matvecs`` and
        ``breakdown``.

    Raises
    ------
    TypeError, ValueError
        If an argument is invalid; the message names it.
    FloatingPointError
        If the operator returns NaN or inf.

    Notes
    -----
    Cost: one matvec per step, at most ``num_steps``. Memory: the basis of
    ``m`` vectors of length ``n`` when ``reorthogonalize`` or ``return_basis``
    is set, otherwise three vectors. Full reorthogonalisation adds
    ``O(n m^2)`` arithmetic.

    A breakdown happens when ``beta_j`` falls to the rounding level of the
    operator (``sqrt(n) * eps * ||A||``, with ``||A||`` estimated by the
    largest ``||A q_j||`` seen): the Krylov space is then invariant under
    ``A`` and its Ritz values are exact eigenvalues. The run stops there and
    sets ``breakdown``; no division by a tiny ``beta`` takes place. For
    ``A = 3 I`` that happens after one step, with ``alpha = [3]``.

    References
    ----------
    C. Lanczos, "An iteration method for the solution of the eigenvalue
    problem of linear differential and integral operators", J. Res. Nat.
    Bur. Standards 45 (1950), 255-282.

    G. H. Golub and C. F. Van Loan, "Matrix Computations", 4th ed.,
    Johns Hopkins University Press, 2013, chapter 10.

    Examples
    --------
    >>> import numpy as np
    >>> import hessop
    >>> result = hessop.lanczos(3.0 * np.eye(50), num_steps=10, seed=0)
    >>> result.alpha, result.breakdown
    (array([3.]), True)
    """
    op = as_operator(A)
    n = op.shape[0]
    num_steps = check_int(num_steps, "num_steps", minimum=1)
    v = check_start_vector(v0, n)
    if v is None:
        v = draw_unit_vector(resolve_rng(A, seed), n)

    run = lanczos_block(
        op,
        v[:, None],
        num_steps,
        reorthogonalize=bool(reorthogonalize),
        keep_basis=bool(return_basis),
        block_size=1,
    )
    steps = int(run.num_steps[0])
    basis = run.basis[0, :steps].T.copy() if return_basis else None
    return LanczosResult(
        alpha=run.alpha[0, :steps].copy(),
        beta=run.beta[0, : steps - 1].copy(),
        residual_norm=float(run.beta[0, steps - 1]),
        basis=basis,
        num_matvecs=run.num_matvecs,
        breakdown=bool(run.breakdown[0]),
    )


@dataclass
class BlockRun:
    """Lanczos coefficients of ``p`` independent runs, padded to a common length.

    Row ``i`` of ``alpha`` and ``beta`` is valid up to ``num_steps[i]``.
    ``beta[i, j]`` is the norm of the residual after step ``j``, so the
    off-diagonal of run ``i`` is ``beta[i, :num_steps[i] - 1]``.
    """

    alpha: np.ndarray
    beta: np.ndarray
    num_steps: np.ndarray
    breakdown: np.ndarray
    basis: np.ndarray | None
    num_matvecs: int


def lanczos_block(
    op: LinearOperator,
    V: np.ndarray,
    num_steps: int,
    *,
    reorthogonalize: bool,
    keep_basis: bool,
    block_size: int,
) -> BlockRun:
    """Run independent Lanczos recurrences from the unit columns of ``V`` in lockstep.

    Each step multiplies the still-active vectors with ``op.matmat`` in blocks
    of at most ``block_size`` columns, so an operator that makes one pass over
    its data per block serves all runs at once. A run that breaks down leaves
    the block; the others go on.
    """
    n, p = V.shape
    max_steps = min(num_steps, n) if reorthogonalize else num_steps
    store = reorthogonalize or keep_basis

    # Rows of the basis are Lanczos vectors so that basis[i, :j] is contiguous.
    basis = np.empty((p, max_steps, n)) if store else None
    alpha = np.zeros((p, max_steps))
    beta = np.zeros((p, max_steps))
    steps = np.zeros(p, dtype=np.int64)
    breakdown = np.zeros(p, dtype=bool)
    anorm = np.zeros(p)

    q = np.array(V.T, dtype=np.float64)
    q_prev = np.zeros_like(q)
    beta_prev = np.zeros(p)
    active = np.arange(p)
    num_matvecs = 0

    for j in range(max_steps):
        if active.size == 0:
            break
        qa = q[active]
        if store:
            basis[active, j] = qa
        W = apply_block(op, qa.T, block_size).T
        num_matvecs += active.size
        anorm[active] = np.maximum(anorm[active], np.linalg.norm(W, axis=1))

        a = np.einsum("in,in->i", qa, W)
        W -= a[:, None] * qa + beta_prev[active, None] * q_prev[active]
        if reorthogonalize:
            # Two passes of classical Gram-Schmidt against the whole basis keep
            # it orthogonal to working precision ("twice is enough"). The loop
            # over runs takes views of each basis, where fancy indexing would
            # copy all of them.
            for row, i in enumerate(active):
                Qi = basis[i, : j + 1]
                for _ in range(2):
                    W[row] -= (Qi @ W[row]) @ Qi
        b = np.linalg.norm(W, axis=1)

        alpha[active, j] = a
        beta[active, j] = b
        steps[active] = j + 1

        floor = np.array([rounding_floor(op, x) for x in anorm[active]])
        ended = b <= floor
        if reorthogonalize and j + 1 == n:
            # The basis spans the whole space, so it is invariant under A.
            ended[:] = True
        breakdown[active[ended]] = True

        going = active[~ended]
        q_prev[going] = q[going]
        q[going] = W[~ended] / b[~ended, None]
        beta_prev[going] = b[~ended]
        active = going

    logger.debug(
        "Lanczos: %d runs, %d matvecs, %d breakdowns",
        p,
        num_matvecs,
        int(breakdown.sum()),
    )
    return BlockRun(
        alpha=alpha,
        beta=beta,
        num_steps=steps,
        breakdown=breakdown,
        basis=basis,
        num_matvecs=num_matvecs,
    )
