"""Report assembly shared by the subcommands: atomic file writes, output folders, versions."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npz",
    "atomic_savefig",
    "check_out_dir",
    "versions",
]


def check_out_dir(path: Path) -> Path:
    """Create ``path`` as a directory; ValueError naming it if that is impossible."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {path}: cannot create directory ({err.strerror})") from None
    return path


def _atomic(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename over it."""
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_write_npz(path: Path, **arrays) -> None:
    import numpy as np

    _atomic(path, lambda f: np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def atomic_savefig(fig, path: Path, **kwargs) -> None:
    fmt = Path(path).suffix.lstrip(".") or "png"
    _atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=kwargs.pop("dpi", 120), **kwargs))


def versions() -> dict[str, str]:
    """Versions of Python and the scientific stack, for results files."""
    out = {"python": platform.python_version()}
    for name in ("xmodal", "jax", "jaxlib", "diffrax", "equinox", "flax", "optax", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
