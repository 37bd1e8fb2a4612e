"""Validation of the scalar arguments shared by the spectral algorithms.

Each check raises a ``TypeError`` or ``ValueError`` that names the argument,
the rule, the value received and how to fix it.
"""

import math
import numbers

import numpy as np

__all__ = [
    "check_choice",
    "check_int",
    "check_positive_float",
    "check_which",
    "sort_by_which",
]

WHICH_VALUES = ("LA", "SA", "LM")


def check_int(value, name: str, minimum: int) -> int:
    """Return ``value`` as an int after checking that it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer, got {value!r} of type {type(value).__name__}."
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return value


def check_positive_float(value, name: str) -> float:
    """Return ``value`` as a float after checking that it is finite and positive."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type "
            f"{type(value).__name__}."
        )
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    return value


def check_choice(value, name: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` after checking that it is one of the strings in ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}.")
    return value


def check_which(which) -> str:
    """Return ``which`` after checking that it is 'LA', 'SA' or 'LM'."""
    if (
        isinstance(which, str)
        and which.upper() in WHICH_VALUES
        and which != which.upper()
    ):
        raise ValueError(
            f"which must be upper case as in scipy.sparse.linalg.eigsh: use "
            f"{which.upper()!r} instead of {which!r}."
        )
    return check_choice(which, "which", WHICH_VALUES)


def sort_by_which(theta: np.ndarray, which: str) -> np.ndarray:
    """Return the indices that order ``theta`` by ``which``.

    'LA' gives descending values, 'SA' ascending values and 'LM' descending
    magnitude, with the larger value first where two magnitudes tie.
    """
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.lexsort((-theta, -np.abs(theta)))
