"""The sweep engine: a per-point function over parameter points, chunked, sharded over devices,
resumable from a store on disk.

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

Resume. With ``store=DIR`` every finished chunk is kept (``surrogate.sweeping.store``);
``resume=True`` loads the finished chunks and computes only the others; the result is
bit-identical to an uninterrupted run on the same platform and device count (the same compiled
program on the same inputs). Multi-host runs: ``surrogate.sweeping.multihost``. See docs/sweep.md.

Progress: compile and resume messages on stderr, and a tqdm bar of the points done when stderr
is a terminal; elsewhere (logs, pipes) a line every 30 s and one when the sweep has finished
(``surrogate.progress``).
"""

from __future__ import annotations

import collections
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from surrogate._checks import check_count
from surrogate.progress import Progress
from surrogate.sweeping.multihost import from_process_0, gather
from surrogate.sweeping.points import as_points
from surrogate.sweeping.store import (
    MANIFEST,
    Store,
    SweepStoreError,
    function_name,
    jsonable,
    new_manifest,
    sha256,
)

__all__ = ["MAX_POINTS_PER_CPU_DEVICE", "MAX_POINTS_PER_DEVICE", "MEMORY_FRACTION", "sweep"]

#: Share of device memory a chunk may plan for (the rest: other buffers, fragmentation).
MEMORY_FRACTION = 0.5
#: Upper bound on the automatic chunk size per device; on CPU a smaller one, since chunks that
#: outgrow the caches run slower (measured, simulate_batch engine on 2 cores: 230 points/s up to
#: 512 points per device, 167 at 2048, 105 at 8192).
MAX_POINTS_PER_DEVICE = 1 << 16
MAX_POINTS_PER_CPU_DEVICE = 512


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
    program = sha256(one_point.as_text().encode())
    config = jsonable(config)
    if store is not None:
        store = Path(store)
    lead = jax.process_index() == 0  # reads and writes the store, reports progress
    progress_ = Progress(n_points, desc="sweep", unit="points", enabled=progress and lead)

    if chunk_size is None:
        def default_chunk_size():  # the store's when resuming, else from device memory
            if store is not None and resume and (store / MANIFEST).exists():
                size = Store.read_manifest(store / MANIFEST).get("chunk_size")
                if not isinstance(size, int) or size < 1:
                    raise SweepStoreError(f"{store / MANIFEST}: field 'chunk_size' must be a "
                                          f"positive integer, got {size!r}")
                return np.int64(size)
            return np.int64(_auto_chunk_size(one_point, program, devices, n_points))

        chunk_size = int(from_process_0(default_chunk_size, np.int64(0)))
    chunk_size = min(check_count(chunk_size, "chunk_size", 1), n_points)
    n_chunks = -(-n_points // chunk_size)
    padded = -(-chunk_size // n_dev) * n_dev  # every device gets the same number of rows

    manifest = new_manifest(function_name(fn), config, pts, chunk_size, n_chunks, leaves,
                            program, devices)

    results = [np.empty((n_points,) + s, d) for s, d in leaves]
    done: set[int] = set()
    st = Store(store, manifest, leaves) if store is not None and lead else None
    if store is not None:
        def load():  # on process 0: check or create the store, read the finished chunks
            finished = np.zeros(n_chunks, np.int8)
            for k, path in sorted(st.open(resume).items()):
                lo, hi = k * chunk_size, min((k + 1) * chunk_size, n_points)
                for out, x in zip(results, st.read_chunk(k, path, np.arange(lo, hi)), strict=True):
                    out[lo:hi] = x
                finished[k] = 1
            return finished

        finished = from_process_0(load, np.zeros(n_chunks, np.int8))
        done = set(np.flatnonzero(finished).tolist())
        if done and jax.process_count() > 1:
            results = from_process_0(lambda: results, results)
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
            host = [gather(x)[: hi - lo] for x in jax.tree.leaves(out)]
            for res, x in zip(results, host, strict=True):
                res[lo:hi] = x
            if st is not None:
                st.write_chunk(k, np.arange(lo, hi), host)
            progress_.update(hi - lo)

        progress_.begin()
        try:
            pending = None
            for k in todo:
                launched = launch(k)  # dispatched asynchronously; the previous one is written now
                if pending is not None:
                    finish(*pending)
                pending = launched
            finish(*pending)
        finally:
            progress_.close()
            if st is not None:
                st.flush()  # the digests of the chunks written
    return jax.tree.unflatten(treedef, results)
