"""Argument checks shared by the model constructors."""

from __future__ import annotations


def check_positive_int(value: object, name: str) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
