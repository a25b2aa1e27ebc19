"""Checks of Python (static) arguments, one per kind of value, shared by the library."""

from __future__ import annotations

import numpy as np

__all__ = ["check_count", "is_count"]


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is an integer (Python or NumPy, not a bool) >= ``minimum``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def check_count(value, name: str, minimum: int = 1) -> int:
    """``int(value)`` if it is an integer >= ``minimum`` (``is_count``), else a ValueError naming
    ``name`` and the value."""
    if not is_count(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return int(value)
