"""The sweep store: a directory of finished chunks and the manifest that fingerprints the sweep.

Every finished chunk is written atomically (temporary file, fsync, rename) as
``DIR/chunk-00000.npz`` holding its point indices, the configuration fingerprint and the output
leaves; ``DIR/manifest.json`` holds the fingerprint and what it was made from: the function's
name, the user's ``config`` (JSON), a hash of the points, the chunk size and a hash of the
lowered (StableHLO) program of one point (so a changed computation or constant is caught even
when ``config`` does not say so), and ``chunk_sha256``, the SHA-256 of every finished chunk file
(recorded at most every ``FLUSH_SECONDS`` and when the sweep ends; a chunk written after the
last record, by a run killed within those seconds, gets the other checks only). A store made
by another configuration, a chunk file that is truncated or damaged (npz members carry a CRC),
holds other indices or differs from its recorded digest, or stray chunk files without a
manifest raise ``SweepStoreError`` naming the file and field; nothing is mixed or overwritten.
The format is described in docs/sweep.md.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from surrogate.files import atomic_write, remove_partial_writes

__all__ = ["FORMAT", "MANIFEST", "Store", "SweepStoreError", "function_name", "jsonable",
           "new_manifest", "points_hash", "sha256"]

FORMAT = "xmodal.sweep/1"
MANIFEST = "manifest.json"
#: Seconds between rewrites of the manifest's chunk digests during a sweep.
FLUSH_SECONDS = 2.0
_CHUNK = re.compile(r"^chunk-(\d{5,})\.npz$")


class SweepStoreError(ValueError):
    """A sweep store that cannot be used: another configuration, damaged or stray files."""


def jsonable(obj, path: str = "config"):
    """``obj`` as plain JSON types; ValueError naming the first field that is not."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            raise ValueError(f"{path}: {obj!r} is not finite")
        return float(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), path)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{path}: key {k!r} is not a string")
            out[k] = jsonable(v, f"{path}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{path}: {type(obj).__name__} is not JSON-serialisable")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def points_hash(columns: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(columns):
        a = np.ascontiguousarray(columns[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def function_name(fn) -> str:
    base = getattr(fn, "func", fn)  # functools.partial
    name = getattr(base, "__qualname__", None) or type(base).__qualname__
    return f"{getattr(base, '__module__', '?')}.{name}"


def _short(value, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _differences(old, new, at: str, limit: int = 3) -> list[str]:
    """``"at.field: store X, now Y"`` for the first ``limit`` leaves where two JSON values
    differ (nested objects and equal-length lists are compared field by field)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            if old.get(k, _MISSING) != new.get(k, _MISSING):
                out += _differences(old.get(k, _MISSING), new.get(k, _MISSING), f"{at}.{k}",
                                    limit - len(out))
            if len(out) >= limit:
                break
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                out += _differences(a, b, f"{at}[{i}]", limit - len(out))
            if len(out) >= limit:
                break
        return out

    def show(v):
        return "(absent)" if v is _MISSING else _short(v)

    return [f"{at}: store {show(old)}, now {show(new)}"]


_MISSING = object()


def _chunk_path(root: Path, k: int) -> Path:
    return root / f"chunk-{k:05d}.npz"


class Store:
    """The directory of one sweep (see module docstring)."""

    def __init__(self, root, manifest: dict, leaves):
        self.root = Path(root)
        self.manifest = manifest
        self.leaves = leaves  # [(shape per point, dtype)]
        self.previous = None  # the manifest found on disk, if any
        self.manifest.setdefault("chunk_sha256", {})
        self._flushed = time.monotonic()

    # Fields of the manifest that must agree for a resume, with what they mean.
    CHECKED = {
        "format": "store format",
        "function": "function name",
        "config": "config",
        "points_sha256": "points (names, dtypes, values)",
        "n_points": "number of points",
        "chunk_size": "chunk size",
        "outputs": "output shapes and dtypes",
        "program_sha256": "lowered one-point program (fn's computation, constants, JAX version)",
        "fingerprint": "fingerprint",
    }

    def open(self, resume: bool) -> dict[int, Path]:
        """Check or create the store; returns the chunk files present, by chunk index."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise SweepStoreError(f"store {root}: exists and is not a directory")
        mpath = root / MANIFEST
        chunks = self._chunk_files()
        if mpath.exists():
            old = self.previous = self.read_manifest(mpath)
            if not resume:
                raise SweepStoreError(
                    f"store {root}: already holds a sweep ({len(chunks)} of "
                    f"{old.get('n_chunks', '?')} chunks); pass resume=True (xmodal: --resume) to "
                    f"continue it, or choose another directory"
                )
            diff = [key for key in self.CHECKED if old.get(key) != self.manifest[key]]
            if len(diff) > 1:
                diff.remove("fingerprint")  # follows from the others
            if diff:
                raise SweepStoreError(
                    f"store {mpath}: made by another configuration; differs in "
                    + "; ".join(f"{self.CHECKED[key]} ("
                                + "; ".join(_differences(old.get(key, _MISSING),
                                                         self.manifest[key], key)) + ")"
                                for key in diff)
                    + ". Use another directory for this configuration."
                )
        else:
            if chunks:
                raise SweepStoreError(
                    f"store {root}: has chunk files ({chunks[min(chunks)].name}, ...) but no "
                    f"{MANIFEST}; refusing to mix them with this sweep"
                )
            root.mkdir(parents=True, exist_ok=True)
            atomic_write(mpath, lambda f: f.write(
                (json.dumps(self.manifest, indent=2) + "\n").encode()))
        recorded = (self.previous or {"chunk_sha256": {}}).get("chunk_sha256")
        self.manifest["chunk_sha256"] = ({k: v for k, v in recorded.items() if isinstance(v, str)}
                                         if isinstance(recorded, dict) else {})
        remove_partial_writes(root)  # left by a kill during a write
        n_chunks = self.manifest["n_chunks"]
        for k, path in chunks.items():
            if k >= n_chunks:
                raise SweepStoreError(f"{path}: chunk {k} does not exist in a sweep of "
                                      f"{n_chunks} chunks")
        return chunks

    def _chunk_files(self) -> dict[int, Path]:
        if not self.root.is_dir():
            return {}
        out = {}
        for p in self.root.iterdir():
            m = _CHUNK.match(p.name)
            if m:
                out[int(m.group(1))] = p
        return out

    @staticmethod
    def read_manifest(path: Path) -> dict:
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SweepStoreError(f"{path}: cannot read the manifest ({err})") from None
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise SweepStoreError(f"{path}: not a sweep manifest (field 'format' is not "
                                  f"{FORMAT!r})")
        return old

    def read_chunk(self, k: int, path: Path, indices: np.ndarray) -> list[np.ndarray]:
        """The output leaves of chunk k, checked against this sweep."""
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise SweepStoreError(f"{path}: cannot read the chunk file ({err.strerror})") from None
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                data = {name: z[name] for name in z.files}
        except Exception as err:  # zipfile.BadZipFile, EOFError, OSError, ValueError, ...
            raise SweepStoreError(
                f"{path}: chunk file is truncated or damaged ({type(err).__name__}: {err}); "
                f"delete it and resume to recompute chunk {k}"
            ) from None

        def bad(field, msg):
            return SweepStoreError(f"{path}: field {field!r} {msg}; the file does not belong "
                                   f"to this sweep (delete it and resume to recompute chunk {k})")

        fp = data.get("fingerprint")
        if fp is None or str(fp) != self.manifest["fingerprint"]:
            raise bad("fingerprint", f"is {None if fp is None else str(fp)!r:.20}..., the "
                      f"manifest's is {self.manifest['fingerprint'][:12]}...")
        got = data.get("indices")
        if got is None or got.shape != indices.shape or not np.array_equal(got, indices):
            raise bad("indices", f"does not hold points {indices[0]}..{indices[-1]}")
        leaves = []
        for i, (shape, dtype) in enumerate(self.leaves):
            name = f"leaf_{i:04d}"
            x = data.get(name)
            want = (len(indices),) + shape
            if x is None or x.shape != want or x.dtype != dtype:
                got_desc = "missing" if x is None else f"{x.dtype}{list(x.shape)}"
                raise bad(name, f"is {got_desc}, expected {np.dtype(dtype)}{list(want)}")
            leaves.append(x)
        digests = self.manifest["chunk_sha256"]
        if path.name in digests and digests[path.name] != sha256(raw):
            raise SweepStoreError(
                f"{path}: content differs from the digest recorded in {MANIFEST} (field "
                f"'chunk_sha256.{path.name}'): the file was changed after it was written; "
                f"delete it and resume to recompute chunk {k}")
        digests[path.name] = sha256(raw)
        return leaves

    def write_chunk(self, k: int, indices: np.ndarray, leaves: Sequence[np.ndarray]) -> None:
        arrays = {"fingerprint": np.asarray(self.manifest["fingerprint"]), "indices": indices}
        arrays.update({f"leaf_{i:04d}": x for i, x in enumerate(leaves)})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        path = _chunk_path(self.root, k)
        atomic_write(path, lambda f: f.write(data))
        self.manifest["chunk_sha256"][path.name] = sha256(data)
        if time.monotonic() - self._flushed > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Rewrite the manifest with the digests of the chunks written so far."""
        atomic_write(self.root / MANIFEST, lambda f: f.write(
            (json.dumps(self.manifest, indent=2) + "\n").encode()))
        self._flushed = time.monotonic()


def new_manifest(function: str, config: Any, pts, chunk_size: int, n_chunks: int,
                 leaves: Sequence[tuple[tuple[int, ...], np.dtype]], program: str,
                 devices: Sequence) -> dict:
    """The manifest of a sweep: the fingerprinted fields (what must agree for a resume) and the
    fingerprint, then what is recorded only (names, grid, platform, JAX version, time)."""
    n_points = len(pts)
    n_dev = len(devices)
    manifest = {
        "format": FORMAT,
        "function": function,
        "config": config,
        "points_sha256": points_hash(pts.columns),
        "n_points": n_points,
        "chunk_size": chunk_size,
        "n_chunks": n_chunks,
        "outputs": [[list(s), d.str] for s, d in leaves],
        "program_sha256": program,
    }
    manifest["fingerprint"] = sha256(json.dumps(manifest, sort_keys=True).encode())
    manifest.update(
        point_names=list(pts.names),
        grid_shape=list(pts.shape),
        axes=None if pts.axes is None else {k: v.tolist() for k, v in pts.axes.items()},
        platform=devices[0].platform,
        n_devices=n_dev,
        jax_version=jax.__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    return manifest
