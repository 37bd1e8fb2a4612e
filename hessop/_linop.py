"""The operator side of every algorithm: conversion, products and checks.

The algorithms accept anything :func:`scipy.sparse.linalg.aslinearoperator`
accepts (a LinearOperator such as a ``HessianOperator``, a dense array or a
sparse matrix). Products go through :func:`apply` and :func:`apply_block`,
which return float64 arrays and reject non-finite output, so a float32
operator works and an overflow cannot flow silently into a result.
"""

import math

import numpy as np
from scipy.sparse.linalg import LinearOperator, aslinearoperator

__all__ = [
    "apply",
    "apply_block",
    "as_operator",
    "check_start_vector",
    "convergence_floor",
    "rounding_floor",
    "working_eps",
]


def as_operator(A) -> LinearOperator:
    """Convert ``A`` to a square, real :class:`~scipy.sparse.linalg.LinearOperator`.

    Raises
    ------
    TypeError
        If ``A`` cannot be converted, or has a complex dtype.
    ValueError
        If ``A`` is not square, or is an array with other than two dimensions.
    """
    if isinstance(A, np.ndarray) and A.ndim != 2:
        raise ValueError(
            f"A must be a 2-D square array, got an array of shape {A.shape}."
        )
    try:
        op = aslinearoperator(A)
    except TypeError as exc:
        raise TypeError(
            "A must be a scipy.sparse.linalg.LinearOperator, a 2-D numpy array or "
            f"a scipy sparse matrix, got {type(A).__name__}; convert nested lists "
            "or tensors with numpy.asarray first."
        ) from exc
    n_rows, n_cols = op.shape
    if n_rows != n_cols or n_rows == 0:
        raise ValueError(
            f"A must be a non-empty square operator, got shape {op.shape}."
        )
    if op.dtype is not None and np.issubdtype(op.dtype, np.complexfloating):
        raise TypeError(
            f"A must be real symmetric, got dtype {op.dtype}; hessop's algorithms "
            "do not support complex operators."
        )
    return op


def working_eps(op: LinearOperator) -> float:
    """Return the machine epsilon of the precision the operator computes in.

    Float32 and float16 operators give their own epsilon; every other dtype
    (float64, integers, unknown) gives the float64 epsilon.
    """
    dtype = op.dtype
    if dtype is not None and np.issubdtype(dtype, np.floating):
        return float(np.finfo(np.promote_types(dtype, np.float16)).eps)
    return float(np.finfo(np.float64).eps)


def rounding_floor(op: LinearOperator, anorm: float) -> float:
    """Return the typical size of the rounding error in a product with ``op``.

    This is ``sqrt(n) * eps * anorm``, with ``eps`` from :func:`working_eps`
    and ``anorm`` an estimate of the operator norm: each entry of a product
    sums ``n`` rounded terms. A Lanczos coefficient ``beta`` below it is
    indistinguishable from zero, so it counts as a breakdown.
    """
    return math.sqrt(op.shape[0]) * working_eps(op) * anorm


def convergence_floor(op: LinearOperator, anorm: float) -> float:
    """Return the smallest residual norm that a convergence test can demand.

    Ten times :func:`rounding_floor`. A computed residual ``A x - theta x``
    carries the rounding error of the product and of ``x`` itself, so a test
    of ``||r|| <= rtol * |theta|`` could never pass for an eigenvalue at or
    near zero. A residual below this floor counts as converged.
    """
    return 10.0 * rounding_floor(op, anorm)


def _checked_output(Y, expected_shape: tuple[int, ...], call: str) -> np.ndarray:
    Y = np.asarray(Y)
    if np.iscomplexobj(Y):
        raise TypeError(f"{call} returned complex values; A must be real symmetric.")
    Y = Y.astype(np.float64, copy=False).reshape(expected_shape)
    if not np.all(np.isfinite(Y)):
        raise FloatingPointError(
            f"{call} returned NaN or inf; check the operator (for a Hessian, the "
            "loss or its gradient may have overflowed)."
        )
    return Y


def apply(op: LinearOperator, v: np.ndarray) -> np.ndarray:
    """Return ``op @ v`` as a float64 vector of shape (n,).

    Raises
    ------
    FloatingPointError
        If the product contains NaN or inf.
    """
    n = op.shape[0]
    return _checked_output(op.matvec(v), (n,), "A.matvec")


def apply_block(op: LinearOperator, V: np.ndarray, block_size: int) -> np.ndarray:
    """Return ``op @ V`` computed with ``op.matmat`` on at most ``block_size`` columns.

    Each column counts as one matvec. An operator that serves a whole block in
    one pass over its data, such as a Hessian over a dataset, does so once per
    block.

    Returns
    -------
    numpy.ndarray, shape (n, k), float64
    """
    n, k = V.shape
    out = np.empty((n, k))
    for start in range(0, k, block_size):
        stop = min(start + block_size, k)
        out[:, start:stop] = _checked_output(
            op.matmat(V[:, start:stop]), (n, stop - start), "A.matmat"
        )
    return out


def check_start_vector(v0, n: int) -> np.ndarray | None:
    """Return ``v0`` as a unit float64 vector of length ``n``, or None if it is None.

    Raises
    ------
    ValueError
        If ``v0`` has the wrong shape, contains NaN or inf, or is zero.
    TypeError
        If ``v0`` is complex.
    """
    if v0 is None:
        return None
    v = np.asarray(v0)
    if np.iscomplexobj(v):
        raise TypeError("v0 must be real, got a complex array.")
    if v.shape not in ((n,), (n, 1)):
        raise ValueError(f"v0 must have shape ({n},) to match A, got {v.shape}.")
    v = v.astype(np.float64).reshape(n)
    if not np.all(np.isfinite(v)):
        raise ValueError("v0 contains NaN or inf.")
    norm = np.linalg.norm(v)
    if norm == 0.0:
        raise ValueError("v0 must be non-zero; pass None for a random start vector.")
    return v / norm
