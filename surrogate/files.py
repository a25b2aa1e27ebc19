"""File writing shared by every layer (the sweep store, the Lorenz figures, the CLI outputs).

- Atomic writes: a reader sees the old file or the new one, never a partial one.
- Strict JSON: what is written parses with any JSON parser. Python's ``json`` writes ``NaN`` and
  ``Infinity``, which are not JSON (browsers, jq and most languages reject the file); here a
  non-finite number is written as ``null`` and the file records where, under ``"non_finite"``
  (JSON Pointers, RFC 6901: ``{"/metrics/dominance/min": "nan", "/exponents/2": "inf"}``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "NON_FINITE_KEY",
    "atomic_savefig",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_npz",
    "strict_json",
    "strict_json_dumps",
    "write_strict_json",
]

#: Top-level key of a JSON object that lists its non-finite numbers written as null.
NON_FINITE_KEY = "non_finite"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path`` (fsynced), then rename
    it over ``path``; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_npz(path: str | os.PathLike, **arrays) -> None:
    """``numpy.savez_compressed`` of ``arrays``, atomically."""
    import numpy as np

    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig`` (a Matplotlib figure) in the format of the suffix (png by default)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    dpi = kwargs.pop("dpi", 120)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, **kwargs))


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _word(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def strict_json(obj: Any) -> tuple[Any, dict[str, str]]:
    """``(clean, where)``: ``obj`` with every non-finite float replaced by None, and
    ``{pointer: "nan" | "inf" | "-inf"}`` of the replaced values, where ``pointer`` is the
    value's JSON Pointer (RFC 6901: ``/metrics/dominance/min``, ``/exponents/2``; ``""`` for
    the whole document). Tuples become lists; NumPy and JAX arrays and scalars become lists and
    Python numbers; mapping keys become strings."""
    where: dict[str, str] = {}

    def walk(x, at: str):
        if isinstance(x, bool) or x is None or isinstance(x, (str, int)):
            return x
        if isinstance(x, float):
            if math.isfinite(x):
                return x
            where[at] = _word(x)
            return None
        if isinstance(x, dict):
            return {str(k): walk(v, f"{at}/{_escape(str(k))}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{at}/{i}") for i, v in enumerate(x)]
        if hasattr(x, "tolist") and hasattr(x, "dtype"):  # NumPy/JAX arrays and scalars
            return walk(x.tolist(), at)
        if isinstance(x, os.PathLike):
            return os.fspath(x)
        raise TypeError(f"{at or '/'}: {type(x).__name__} is not JSON-serialisable")

    return walk(obj, ""), where


def strict_json_dumps(obj: Any, *, indent: int | None = 2) -> tuple[str, dict[str, str]]:
    """``(text, where)``: strict JSON text of ``obj`` (see ``strict_json``); a JSON object with
    non-finite values gets a ``"non_finite"`` entry ``{pointer: "nan" | ...}`` saying where
    nulls stand for them."""
    clean, where = strict_json(obj)
    if where and isinstance(clean, dict):
        clean[NON_FINITE_KEY] = where
    return json.dumps(clean, indent=indent, allow_nan=False), where


def write_strict_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2
                      ) -> dict[str, str]:
    """Write ``obj`` as strict JSON to ``path`` atomically; returns where non-finite values
    were written as null (empty when none)."""
    text, where = strict_json_dumps(obj, indent=indent)
    atomic_write_bytes(path, (text + "\n").encode())
    return where
