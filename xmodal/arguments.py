"""Command-line arguments shared by the ``xmodal`` commands: one argparse type per kind of value
(each error says what the value must be, quoting it) and the options several commands share
(``--out``/``--force``, ``--seed``, ``--float64``, ``--quiet``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

__all__ = [
    "add_float64",
    "add_out",
    "add_quiet",
    "add_seed",
    "finite_float",
    "float_in",
    "float_list",
    "int_at_least",
    "int_list",
    "json_object",
    "names_list",
    "nonnegative_float",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "seed_int",
    "sizes_list",
    "unit_float",
]


def _error(text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(text)


def finite_float(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise _error(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise _error(f"must be finite, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise _error(f"must be positive, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise _error(f"must be >= 0, got {text!r}")
    return value


def float_in(low: float, high: float):
    """The argparse type of a number in [low, high]."""

    def parse(text: str) -> float:
        value = finite_float(text)
        if not low <= value <= high:
            raise _error(f"must be in [{low:g}, {high:g}], got {text!r}")
        return value

    parse.__name__ = f"number in [{low:g}, {high:g}]"
    return parse


#: A number in [0, 1] (a share or a probability).
unit_float = float_in(0, 1)


def _int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _error(f"not an integer: {text!r}") from None
    if value < minimum:
        raise _error(f"must be >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of steps, items, samples)."""
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (a count that may be zero)."""
    return _int(text, 0)


def int_at_least(minimum: int):
    """The argparse type of an integer >= ``minimum``."""

    def parse(text: str) -> int:
        return _int(text, minimum)

    parse.__name__ = f"integer >= {minimum}"
    return parse


def seed_int(text: str) -> int:
    """A PRNG seed: an integer that fits the 64-bit key (|seed| < 2**63)."""
    value = _int(text, -(2**63))
    if value >= 2**63:
        raise _error(f"must be in -2**63 .. 2**63 - 1, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """One or more comma-separated integers (empty entries skipped)."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise _error(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise _error("expected at least one integer")
    return values


def sizes_list(text: str) -> tuple[int, ...]:
    """Oscillators per modality: at least 2 comma-separated integers >= 1."""
    sizes = int_list(text)
    if len(sizes) < 2 or min(sizes) < 1:
        raise _error(f"need >= 2 positive sizes, got {text!r}")
    return sizes


def float_list(text: str) -> tuple[float, ...]:
    """Comma-separated finite numbers."""
    try:
        values = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise _error(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise _error(f"must be finite, got {text!r}")
    return values


def names_list(text: str) -> tuple[str, ...]:
    """At least 2 comma-separated names."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if len(names) < 2:
        raise _error(f"expected >= 2 comma-separated names, got {text!r}")
    return names


def json_object(text: str) -> dict:
    """A JSON object given inline."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _error(f"invalid JSON ({err})") from None
    if not isinstance(value, dict):
        raise _error("expected a JSON object")
    return value


def add_out(p, *, default: str | None = None, force: str = "write into a non-empty --out",
            help: str = "output directory", path: bool = True) -> None:
    """``--out DIR`` (required unless ``default``) and ``--force`` (help ``force``)."""
    typed = {"type": Path} if path else {}
    if default is None:
        p.add_argument("--out", required=True, help=help, **typed)
    else:
        p.add_argument("--out", default=Path(default) if path else default, help=help, **typed)
    p.add_argument("--force", action="store_true", help=force)


def add_seed(p, help: str = "PRNG seed (graph, frequencies, phases)", default: int = 0) -> None:
    """``--seed`` (a 64-bit seed, default 0)."""
    p.add_argument("--seed", type=seed_int, default=default, help=help)


def add_float64(p, help: str = "compute in float64") -> None:
    """``--float64`` (store true)."""
    p.add_argument("--float64", action="store_true", help=help)


def add_quiet(p, help: str = "no progress output") -> None:
    """``--quiet`` (store true)."""
    p.add_argument("--quiet", action="store_true", help=help)
