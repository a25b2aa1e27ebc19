"""File writing shared by every layer (the sweep store, the Lorenz figures, the CLI outputs).

- Atomic writes: a reader sees the old file or the new one, never a partial one.
- Checked reading of user files (``read_json_file``, ``read_toml_file``): a size limit, a nesting
  limit checked without recursion, UTF-8, duplicate keys refused; every error names the file.
- Strict JSON: what is written parses with any JSON parser. Python's ``json`` writes ``NaN`` and
  ``Infinity``, which are not JSON (browsers, jq and most languages reject the file); here a
  non-finite number is written as ``null`` and the file records where, under ``"non_finite"``
  (JSON Pointers, RFC 6901: ``{"/metrics/dominance/min": "nan", "/exponents/2": "inf"}``).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "NON_FINITE_KEY",
    "atomic_savefig",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_npz",
    "read_json_file",
    "read_text_file",
    "read_toml_file",
    "remove_partial_writes",
    "strict_json",
    "strict_json_dumps",
    "write_strict_json",
]

#: Top-level key of a JSON object that lists its non-finite numbers written as null.
NON_FINITE_KEY = "non_finite"
#: Largest input file (spec, params) read, in bytes.
MAX_INPUT_BYTES = 64 * 2**20
#: Deepest nesting of arrays and objects (tables) accepted in an input file.
MAX_DEPTH = 32


def read_text_file(path: str | os.PathLike, name: str | None = None, *,
                   max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` of at most ``max_bytes`` bytes; ValueError
    naming ``name`` (default the path) otherwise: missing, a directory or device, too large,
    not UTF-8."""
    name = name or str(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise ValueError(f"{name}: is a directory, not a file")
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{name}: not a regular file")
            if st.st_size > max_bytes:
                raise ValueError(f"{name}: {st.st_size} bytes, more than the {max_bytes} bytes "
                                 f"an input file may have")
            raw = f.read(max_bytes + 1)
    except IsADirectoryError:
        raise ValueError(f"{name}: is a directory, not a file") from None
    except OSError as err:
        raise ValueError(f"{name}: cannot read ({err.strerror or err})") from None
    if len(raw) > max_bytes:
        raise ValueError(f"{name}: more than the {max_bytes} bytes an input file may have")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{name}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line})"
                         ) from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_TOML_SKIP = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"'
                        r"|'[^'\n]*'|#[^\n]*")


def _check_depth(text: str, skip: re.Pattern, name: str, max_depth: int) -> None:
    """ValueError if brackets outside strings (and comments) nest deeper than ``max_depth``;
    a cumulative sum, no recursion."""
    import numpy as np

    code = skip.sub(lambda m: "\n" * m.group().count("\n"), text).encode()
    arr = np.frombuffer(code, np.uint8)
    step = (np.isin(arr, (ord("["), ord("{"))).astype(np.int32)
            - np.isin(arr, (ord("]"), ord("}"))).astype(np.int32))
    if not step.any():
        return
    depth = np.cumsum(step)
    deepest = int(depth.max())
    if deepest > max_depth:
        at = int(np.argmax(depth > max_depth))
        line = code[:at].count(b"\n") + 1
        raise ValueError(f"{name}: nested {deepest} levels deep (line {line}); at most "
                         f"{max_depth} levels of arrays and objects are read")


def read_json_file(path: str | os.PathLike, name: str | None = None, *,
                   max_bytes: int = MAX_INPUT_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse the JSON file ``path``; ValueError naming ``name`` (default the path) and, where it
    can, the line or field: unreadable, too large (``max_bytes``), not UTF-8, nested deeper
    than ``max_depth``, not JSON, a key given twice in one object. NaN/Infinity parse to floats
    (the caller checks values by field)."""
    name = name or str(path)
    text = read_text_file(path, name, max_bytes=max_bytes)
    _check_depth(text, _JSON_STRING, name, max_depth)

    def pairs(items):
        obj = {}
        for key, value in items:
            if key in obj:
                raise _Duplicate(key)
            obj[key] = value
        return obj

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except _Duplicate as err:
        raise ValueError(f"{name}: field {err.args[0]!r} given twice in one object") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{name}: nested too deeply") from None


def read_toml_file(path: str | os.PathLike, name: str | None = None, *,
                   max_bytes: int = MAX_INPUT_BYTES, max_depth: int = MAX_DEPTH) -> dict:
    """Parse the TOML file ``path`` with the checks of ``read_json_file`` (TOML itself refuses
    a key given twice)."""
    import tomllib

    name = name or str(path)
    text = read_text_file(path, name, max_bytes=max_bytes)
    _check_depth(text, _TOML_SKIP, name, max_depth)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{name}: not valid TOML ({err})") from None
    except RecursionError:
        raise ValueError(f"{name}: nested too deeply") from None


class _Duplicate(Exception):
    pass


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


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files ``atomic_write`` leaves in ``folder`` when a process is killed
    mid-write (``.NAME.*.tmp``); returns them. Call before resuming a run in ``folder``."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
