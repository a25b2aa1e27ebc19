"""Sweeps: a per-point function over a grid or list of parameter points, chunked, sharded over
devices, resumable from disk.

    points = grid(beta_self=np.logspace(-4, 0, 64), beta_cross=np.logspace(-4, 0, 64))
    out = sweep(final_metrics, points, store="runs/plane", config={"steps": 5000, "dt": 0.01})
    nmse = points.unflatten(out)["nmse"]            # (64, 64), axis i: beta_self, j: beta_cross

``fn(point) -> PyTree of arrays`` acts on one point, a dict of scalar arrays named like the axes.
It is ``vmap``-ped inside a chunk of ``chunk_size`` consecutive points; the chunk axis is sharded
over all devices of a 1-D ``jax.sharding.Mesh`` (``NamedSharding``, axis name ``"points"``); the
result is a PyTree of NumPy arrays with a leading axis of P points, in the order of ``points``.

Chunks. Each chunk is one call of a single compiled program (the last chunk is padded by
repeating its last point, and the padding is dropped), so every point sees the same program
whichever chunk it lands in. Without ``chunk_size`` the size comes from the compiled memory
analysis of one point against the device memory (half of it; on CPU half the RAM shared by the
local devices). The next chunk is dispatched before the previous one is written, so disk writes
overlap device work.

Store. With ``store=DIR`` every finished chunk is written atomically (temporary file, fsync,
rename) as ``DIR/chunk-00000.npz`` holding its point indices, the configuration fingerprint and
the output leaves; ``DIR/manifest.json`` holds the fingerprint and what it was made from: the
function's name, the user's ``config`` (JSON), a hash of the points, the chunk size and a hash
of the lowered (StableHLO) program of one point (so a changed computation or constant is caught
even when ``config`` does not say so). ``resume=True`` loads the finished chunks and
computes only the others; the result is bit-identical to an uninterrupted run on the same
platform and device count (the same compiled program on the same inputs). A store made by
another configuration, a chunk file that is truncated or damaged (npz members carry a CRC) or
holds other indices, or stray chunk files without a manifest raise ``SweepStoreError`` naming
the file and field; nothing is mixed or overwritten.

Multi-host. Call ``jax.distributed.initialize()`` on every process first and then ``sweep``
with the same arguments on every process (``xmodal sweep --coordinator ...`` does both): the
mesh spans ``jax.devices()`` of all hosts, each process feeds the shards of its own devices
(``jax.make_array_from_callback``) and results are gathered to every process
(``multihost_utils.process_allgather``). Process 0 alone reads and writes the store (it need not
be on a shared file system): its verdict on the store (an error, or the finished chunks and
their results) is broadcast, so every process computes the same chunks or raises the same
error. Tested with 2 processes of 2 CPU devices each on one machine (collectives over gloo).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from surrogate.files import atomic_write

__all__ = ["Points", "SweepStoreError", "as_points", "grid", "init_multihost", "sweep"]

FORMAT = "xmodal.sweep/1"
MANIFEST = "manifest.json"
_CHUNK = re.compile(r"^chunk-(\d{5,})\.npz$")
#: Share of device memory a chunk may plan for (the rest: other buffers, fragmentation).
MEMORY_FRACTION = 0.5
#: Upper bound on the automatic chunk size per device; on CPU a smaller one, since chunks that
#: outgrow the caches run slower (measured, simulate_batch engine on 2 cores: 230 points/s up to
#: 512 points per device, 167 at 2048, 105 at 8192).
MAX_POINTS_PER_DEVICE = 1 << 16
MAX_POINTS_PER_CPU_DEVICE = 512


class SweepStoreError(ValueError):
    """A sweep store that cannot be used: another configuration, damaged or stray files."""


# ----------------------------------------------------------------------------------- points


@dataclasses.dataclass(frozen=True, eq=False)
class Points:
    """P parameter points: ``columns`` maps each name to a (P,) array.

    Attributes:
        columns: name -> (P,) NumPy array (numeric).
        shape: the grid shape for ``grid`` points (product P), (P,) for a list of points.
        axes: name -> 1-D axis values for ``grid`` points, None for a list.
    """

    columns: Mapping[str, np.ndarray]
    shape: tuple[int, ...]
    axes: Mapping[str, np.ndarray] | None = None

    def __post_init__(self):
        if not self.columns:
            raise ValueError("points need at least one named parameter")
        sizes = {name: np.shape(v) for name, v in self.columns.items()}
        n = math.prod(self.shape)
        for name, shape in sizes.items():
            if shape != (n,):
                raise ValueError(f"points: column {name!r} must have shape ({n},), got {shape}")

    def __len__(self) -> int:
        return math.prod(self.shape)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Point i as a dict of NumPy scalars."""
        return {name: v[i] for name, v in self.columns.items()}

    def unflatten(self, tree):
        """Reshape the leading axis P of every leaf of ``tree`` to ``shape`` (grid layout)."""
        n = len(self)

        def one(x):
            x = np.asarray(x)
            if x.shape[:1] != (n,):
                raise ValueError(f"leaf of shape {x.shape} has no leading axis of {n} points")
            return x.reshape(self.shape + x.shape[1:])

        return jax.tree.map(one, tree)


def _column(name: str, values, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{what} {name!r} must be a non-empty 1-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{what} {name!r} must be numeric, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(
            f"{what} {name!r} has a non-finite value {a[bad].item()!r} at index {bad}")
    return a


def grid(**axes) -> Points:
    """The cartesian product of named 1-D axes, flattened in C order (the last axis fastest).

    ``grid(beta_self=bs, beta_cross=bc)`` has P = len(bs) * len(bc) points; point
    i * len(bc) + j is (bs[i], bc[j]); ``shape`` is (len(bs), len(bc)).
    """
    if not axes:
        raise ValueError("grid needs at least one axis, e.g. grid(beta_self=[0.1, 1.0])")
    cols = {name: _column(name, v, "axis") for name, v in axes.items()}
    mesh = np.meshgrid(*cols.values(), indexing="ij")
    return Points(
        columns={name: m.ravel() for name, m in zip(cols, mesh)},
        shape=tuple(len(v) for v in cols.values()),
        axes=cols,
    )


def as_points(points) -> Points:
    """``Points`` from ``Points`` or a mapping of equal-length 1-D arrays (a list of points)."""
    if isinstance(points, Points):
        return points
    if not isinstance(points, Mapping):
        raise TypeError(f"points must be Points (see grid) or a dict of 1-D arrays, got "
                        f"{type(points).__name__}")
    if not points:
        raise ValueError("points need at least one named parameter")
    cols = {str(name): _column(str(name), v, "points column") for name, v in points.items()}
    lengths = {name: len(v) for name, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"points columns must have equal lengths, got {lengths}")
    return Points(columns=cols, shape=(next(iter(lengths.values())),))


# ------------------------------------------------------------------------------ fingerprint


def _jsonable(obj, path: str = "config"):
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
        return _jsonable(obj.tolist(), path)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{path}: key {k!r} is not a string")
            out[k] = _jsonable(v, f"{path}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{path}: {type(obj).__name__} is not JSON-serialisable")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _points_hash(columns: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(columns):
        a = np.ascontiguousarray(columns[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fn_name(fn) -> str:
    base = getattr(fn, "func", fn)  # functools.partial
    name = getattr(base, "__qualname__", None) or type(base).__qualname__
    return f"{getattr(base, '__module__', '?')}.{name}"


# ------------------------------------------------------------------------------------ store


def _short(value, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _chunk_path(root: Path, k: int) -> Path:
    return root / f"chunk-{k:05d}.npz"


class _Store:
    """The directory of one sweep (see module docstring)."""

    def __init__(self, root, manifest: dict, leaves):
        self.root = Path(root)
        self.manifest = manifest
        self.leaves = leaves  # [(shape per point, dtype)]
        self.previous = None  # the manifest found on disk, if any

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
            old = self.previous = self._read_manifest(mpath)
            if not resume:
                raise SweepStoreError(
                    f"store {root}: already holds a sweep ({len(chunks)} of "
                    f"{old.get('n_chunks', '?')} chunks); pass resume=True (--resume) to "
                    f"continue it, or choose another directory"
                )
            diff = [key for key in self.CHECKED if old.get(key) != self.manifest[key]]
            if len(diff) > 1:
                diff.remove("fingerprint")  # follows from the others
            if diff:
                raise SweepStoreError(
                    f"store {mpath}: made by another configuration; differs in "
                    + "; ".join(f"{self.CHECKED[key]} ({key}: store {_short(old.get(key))}, "
                                f"now {_short(self.manifest[key])})" for key in diff)
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
        for stale in root.glob(".chunk-*.tmp"):  # left by a kill during a write
            stale.unlink(missing_ok=True)
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
    def _read_manifest(path: Path) -> dict:
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
            with np.load(path, allow_pickle=False) as z:
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
        return leaves

    def write_chunk(self, k: int, indices: np.ndarray, leaves: Sequence[np.ndarray]) -> None:
        arrays = {"fingerprint": np.asarray(self.manifest["fingerprint"]), "indices": indices}
        arrays.update({f"leaf_{i:04d}": x for i, x in enumerate(leaves)})
        atomic_write(_chunk_path(self.root, k), lambda f: np.savez(f, **arrays))


# --------------------------------------------------------------------------------- progress


class _Progress:
    """Points done, points per second and ETA on stderr (one updating line on a terminal)."""

    def __init__(self, total: int, done: int, enabled: bool, stream=None):
        self.total, self.done, self.enabled = total, done, enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.start = self.last = None
        self.computed = 0

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"sweep: {text}", file=self.stream, flush=True)

    def begin(self) -> None:
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        self.computed += n
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        if not (self.tty or finished or now - self.last >= 10.0):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.computed / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        line = (f"sweep: {self.done}/{self.total} points ({100 * self.done / self.total:.1f}%), "
                f"{rate:.4g} points/s, ETA {eta_s}")
        if self.tty:
            print("\r" + line, end="\n" if finished else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)


# ------------------------------------------------------------------------------------ sweep


def _device_bytes(devices) -> int | None:
    """Memory one device may use: its allocator limit, or the RAM shared by the local devices."""
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    local = sum(d.process_index == jax.process_index() for d in devices) or 1
    return ram // local


#: Compiled programs, keyed by the hash of the one-point program (what is computed) and the
#: chunk layout and devices: sweeping the same computation again (a resume, a repeated call)
#: reuses the executable; a changed computation lowers to another text, so nothing stale is
#: reused.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 8


def _cached(key, make):
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    value = make()
    _COMPILED[key] = value
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return value


def _auto_chunk_size(one_point, program: str, devices, n_points: int) -> int:
    """Points per chunk from the compiled memory analysis of one point (``one_point``: the
    lowered one-point program) against the memory of one device."""
    n_dev = len(devices)
    stats = _cached((program, "memory"), one_point.compile).memory_analysis()
    per_point = None
    if stats is not None:
        per_point = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
                     + stats.output_size_in_bytes)
    available = _device_bytes(devices)
    most = MAX_POINTS_PER_CPU_DEVICE if devices[0].platform == "cpu" else MAX_POINTS_PER_DEVICE
    cap = min(most, -(-n_points // n_dev))
    if not per_point or not available:
        per_device = cap
    else:
        per_device = max(1, min(cap, int(MEMORY_FRACTION * available // per_point)))
    return per_device * n_dev


#: Bytes of an error message broadcast from process 0.
_MESSAGE_BYTES = 4096


def _from_process_0(decide: Callable[[], Any], like):
    """``decide()`` run on process 0 and its result (a PyTree of NumPy arrays shaped like
    ``like``) given bit for bit to every process; an exception there is raised on every process
    (on the others as a ``SweepStoreError`` quoting it). ``decide()`` itself on one process."""
    if jax.process_count() == 1:
        return decide()
    from jax.experimental import multihost_utils

    message, error, out = np.zeros(_MESSAGE_BYTES, np.uint8), None, like
    if jax.process_index() == 0:
        try:
            out = decide()
        except Exception as err:  # noqa: BLE001 - every process must hear of it
            error = err
            text = f"{type(err).__name__}: {err}".encode()[:_MESSAGE_BYTES]
            message[: len(text)] = np.frombuffer(text, np.uint8)
    flat, treedef = jax.tree.flatten(out)
    raw = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in flat]  # psum of bytes
    message, raw = multihost_utils.broadcast_one_to_all((message, raw))
    if error is not None:
        raise error
    if message.any():
        text = bytes(message).rstrip(b"\0").decode(errors="replace")
        raise SweepStoreError(f"process 0: {text}")
    return jax.tree.unflatten(treedef, [np.array(r).view(x.dtype).reshape(x.shape)
                                        for r, x in zip(raw, flat)])


def init_multihost(coordinator: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` for a multi-host sweep: call it on every process before
    anything else touches JAX. Arguments left None are detected from the cluster (SLURM,
    Open MPI, ...; JAX_COORDINATOR_ADDRESS for the address)."""
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def _gather(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sweep(
    fn: Callable[[dict], Any],
    points,
    *,
    chunk_size: int | None = None,
    store: str | os.PathLike | None = None,
    config: Any = None,
    resume: bool = False,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    batched: bool = False,
):
    """Evaluate ``fn`` at every point; returns its outputs stacked over the points.

    Args:
        fn: ``fn(point) -> PyTree of arrays``; ``point`` maps each parameter name to a scalar
            array. Pure JAX, vmapped over a chunk. Every call traces it for one point (its
            lowered program enters the fingerprint) and once more for the chunk layout unless
            that program was compiled before in this process.
        points: ``Points`` (see ``grid``) or a dict of equal-length 1-D arrays.
        chunk_size: points per chunk (the checkpoint granularity of a store); default from
            device memory, or the store's when resuming.
        store: directory that keeps finished chunks on disk (module docstring).
        config: JSON-serialisable description of what ``fn`` depends on besides the point
            (steps, dt, seeds, ...); it enters the store's fingerprint.
        resume: continue the sweep in ``store`` (or start it if the directory has none).
        progress: report compile time and points/s with ETA on stderr.
        devices: devices to shard the chunk axis over; default all, ``jax.devices()``.
        batched: ``fn`` takes a chunk (each name maps to a 1-D array of points) and returns
            leaves with a leading axis of points, so it is called as is, not vmapped (for
            batch-layout solvers such as ``simulate_batch``). It must treat points
            independently: chunk padding and sharding assume it.

    Returns:
        The PyTree ``fn`` returns with NumPy leaves of shape (P, ...), P = ``len(points)``,
        in the order of the points (``points.unflatten`` gives the grid layout).
    """
    pts = as_points(points)
    n_points = len(pts)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    n_dev = len(devices)
    columns = {k: np.asarray(v, dtype=jax.dtypes.canonicalize_dtype(v.dtype))
               for k, v in pts.columns.items()}
    chunk_fn = fn if batched else jax.vmap(fn)
    one = {k: jax.ShapeDtypeStruct((1,), v.dtype) for k, v in columns.items()}
    traced = jax.jit(chunk_fn).trace(one)  # fn is traced here: its errors surface here
    leaf_specs, treedef = jax.tree.flatten(traced.out_info)
    leaves = [(tuple(s.shape[1:]), np.dtype(s.dtype)) for s in leaf_specs]
    one_point = traced.lower()
    program = _sha256(one_point.as_text().encode())
    config = _jsonable(config)
    if store is not None:
        store = Path(store)
    lead = jax.process_index() == 0  # reads and writes the store, reports progress
    progress_ = _Progress(n_points, 0, progress and lead)

    if chunk_size is None:
        def default_chunk_size():  # the store's when resuming, else from device memory
            if store is not None and resume and (store / MANIFEST).exists():
                size = _Store._read_manifest(store / MANIFEST).get("chunk_size")
                if not isinstance(size, int) or size < 1:
                    raise SweepStoreError(f"{store / MANIFEST}: field 'chunk_size' must be a "
                                          f"positive integer, got {size!r}")
                return np.int64(size)
            return np.int64(_auto_chunk_size(one_point, program, devices, n_points))

        chunk_size = int(_from_process_0(default_chunk_size, np.int64(0)))
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(min(chunk_size, n_points))
    n_chunks = -(-n_points // chunk_size)
    padded = -(-chunk_size // n_dev) * n_dev  # every device gets the same number of rows

    manifest = {
        "format": FORMAT,
        "function": _fn_name(fn),
        "config": config,
        "points_sha256": _points_hash(pts.columns),
        "n_points": n_points,
        "chunk_size": chunk_size,
        "n_chunks": n_chunks,
        "outputs": [[list(s), d.str] for s, d in leaves],
        "program_sha256": program,
    }
    manifest["fingerprint"] = _sha256(json.dumps(manifest, sort_keys=True).encode())
    manifest.update(
        point_names=list(pts.names),
        grid_shape=list(pts.shape),
        axes=None if pts.axes is None else {k: v.tolist() for k, v in pts.axes.items()},
        platform=devices[0].platform,
        n_devices=n_dev,
        jax_version=jax.__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )

    results = [np.empty((n_points,) + s, d) for s, d in leaves]
    done: set[int] = set()
    st = _Store(store, manifest, leaves) if store is not None and lead else None
    if store is not None:
        def load():  # on process 0: check or create the store, read the finished chunks
            finished = np.zeros(n_chunks, np.int8)
            for k, path in sorted(st.open(resume).items()):
                lo, hi = k * chunk_size, min((k + 1) * chunk_size, n_points)
                for out, x in zip(results, st.read_chunk(k, path, np.arange(lo, hi))):
                    out[lo:hi] = x
                finished[k] = 1
            return finished

        finished = _from_process_0(load, np.zeros(n_chunks, np.int8))
        done = set(np.flatnonzero(finished).tolist())
        if done and jax.process_count() > 1:
            results = _from_process_0(lambda: results, results)
        progress_.done = sum(min((k + 1) * chunk_size, n_points) - k * chunk_size
                             for k in done)
        if done and lead:
            progress_.say(f"resuming {store}: {len(done)} of {n_chunks} chunks on disk")
            made_on = (st.previous or {}).get("platform"), (st.previous or {}).get("n_devices")
            if len(done) < n_chunks and made_on != (devices[0].platform, n_dev):
                warnings.warn(
                    f"store {store} was begun on {made_on[1]} {made_on[0]} device(s) and is "
                    f"resumed on {n_dev} {devices[0].platform} device(s): the remaining chunks "
                    f"may differ from an uninterrupted run in the last bits", stacklevel=2)

    todo = [k for k in range(n_chunks) if k not in done]
    if todo:
        mesh = Mesh(np.asarray(devices), ("points",))
        sharding = NamedSharding(mesh, PartitionSpec("points"))
        in_struct = {k: jax.ShapeDtypeStruct((padded,), v.dtype, sharding=sharding)
                     for k, v in columns.items()}
        t0 = time.perf_counter()
        compiled = _cached(
            (program, padded, tuple(d.id for d in devices)),
            lambda: jax.jit(chunk_fn, in_shardings=sharding, out_shardings=sharding)
            .lower(in_struct).compile())
        progress_.say(f"compiled {manifest['function']} for chunks of {chunk_size} points on "
                      f"{n_dev} {devices[0].platform} device(s) in "
                      f"{time.perf_counter() - t0:.1f} s")

        def launch(k):
            lo, hi = k * chunk_size, min((k + 1) * chunk_size, n_points)
            rows = np.minimum(np.arange(lo, lo + padded), hi - 1)  # pad with the last point
            args = {name: jax.make_array_from_callback(
                        (padded,), sharding, lambda idx, a=col[rows]: a[idx])
                    for name, col in columns.items()}
            return k, lo, hi, compiled(args)

        def finish(k, lo, hi, out):
            host = [_gather(x)[: hi - lo] for x in jax.tree.leaves(out)]
            for res, x in zip(results, host):
                res[lo:hi] = x
            if st is not None:
                st.write_chunk(k, np.arange(lo, hi), host)
            progress_.update(hi - lo)

        progress_.begin()
        pending = None
        for k in todo:
            launched = launch(k)  # dispatched asynchronously; the previous one is written now
            if pending is not None:
                finish(*pending)
            pending = launched
        finish(*pending)
    return jax.tree.unflatten(treedef, results)
