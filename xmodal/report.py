"""Report assembly shared by the subcommands: atomic file writes, output folders, versions."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from surrogate.files import atomic_write

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_write_npz(path: Path, **arrays) -> None:
    import numpy as np

    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def atomic_savefig(fig, path: Path, **kwargs) -> None:
    fmt = Path(path).suffix.lstrip(".") or "png"
    dpi = kwargs.pop("dpi", 120)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, **kwargs))


def versions() -> dict[str, str]:
    """Versions of Python and the scientific stack, for results files."""
    out = {"python": platform.python_version()}
    for name in ("xmodal", "jax", "jaxlib", "diffrax", "equinox", "flax", "optax", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
