"""Seed handling and random probe vectors.

Every random draw in hessop comes from the generator that :func:`resolve_rng`
returns, so one ``seed`` reproduces a whole run. Probes are drawn one vector
after another from a single stream, so the same seed gives the same probes
whatever block size the caller chooses.
"""

import logging
import numbers

import numpy as np

__all__ = ["DISTRIBUTIONS", "draw_probes", "draw_unit_vector", "resolve_rng"]

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("rademacher", "gaussian", "sphere")


def resolve_rng(A, seed) -> np.random.Generator:
    """Return the random generator for one run of an algorithm on ``A``.

    Parameters
    ----------
    A : object
        The operator. When it has a ``comm`` attribute that is not None (an
        mpi4py communicator) and ``seed`` is None, rank 0 draws fresh entropy
        and broadcasts it, so every rank draws the same probes.
    seed : int, numpy.random.Generator or None
        An int seeds a new generator. A Generator is used as it is, so under
        MPI the caller must pass generators in the same state on every rank.
        None takes fresh entropy from the operating system.

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    TypeError
        If ``seed`` is of another type, such as a legacy
        ``numpy.random.RandomState``.
    ValueError
        If ``seed`` is a negative integer.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(
                "seed must be an int, a numpy.random.Generator or None, got "
                f"{type(seed).__name__}; for a legacy RandomState, pass "
                "numpy.random.default_rng(an_int) instead."
            )
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}.")
        return np.random.default_rng(int(seed))

    comm = getattr(A, "comm", None)
    if comm is None:
        return np.random.default_rng()
    entropy = np.random.SeedSequence().entropy if comm.Get_rank() == 0 else None
    entropy = comm.bcast(entropy, root=0)
    logger.debug("seed=None under MPI: using entropy %d broadcast from rank 0", entropy)
    return np.random.default_rng(entropy)


def draw_probes(
    rng: np.random.Generator, n: int, k: int, distribution: str
) -> np.ndarray:
    """Draw ``k`` probe vectors of length ``n`` with ``E[z z^T] = I``.

    'rademacher' draws independent signs, 'gaussian' independent standard
    normal entries and 'sphere' Gaussian vectors rescaled to norm ``sqrt(n)``
    (uniform on that sphere). The vectors are drawn one after another, so
    two calls for ``k1`` and ``k2`` vectors give the same vectors as one call
    for ``k1 + k2``.

    Returns
    -------
    numpy.ndarray, shape (n, k), float64
    """
    if distribution == "rademacher":
        # One uniform double per entry keeps the stream independent of k.
        Z = np.where(rng.random((k, n)) < 0.5, -1.0, 1.0)
    elif distribution == "gaussian":
        Z = rng.standard_normal((k, n))
    elif distribution == "sphere":
        Z = rng.standard_normal((k, n))
        Z *= np.sqrt(n) / np.linalg.norm(Z, axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown probe distribution {distribution!r}.")
    return Z.T


def draw_unit_vector(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw a vector uniformly from the unit sphere in ``R^n``."""
    v = rng.standard_normal(n)
    return v / np.linalg.norm(v)
