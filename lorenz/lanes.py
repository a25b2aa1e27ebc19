"""The surrogate observer with many points on lanes: the batched engine, features by block.

``lane_statistics`` integrates P parameter points for R replications (independent Lorenz
series) on the P R lanes of ``surrogate.fold_batch`` (the state is (N, P R), every operation
elementwise along the lanes; lane p R + r driven by series r) in blocks of ``block`` samples.
Each block returns the features sin/cos of the phases of its samples (float32); the host adds
them to the normal equations of every split by one float64 matrix product per block and split
run, X^T X with X = [f, 1, z] (``readout.NormalEquations.from_gram``; off CPU the device sums
them, ``gram_on``). With several devices (``xmodal`` makes one per CPU core) the lanes are split
over them. The statistics are float64 whatever the process-wide JAX flags; the dynamics keep
the surrogate's dtype. The next block is dispatched before the host accumulates the last one,
so the two overlap.

Blocks follow ``lorenz.observer.observer_statistics`` (block k: steps from t0 = k block delta,
samples k block + 1 .. (k + 1) block; samples past the end are dropped), so both paths integrate
the same steps.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.data import Splits
from lorenz.readout import NormalEquations, one_blas_thread
from surrogate.batch import batch_leaf, batch_size
from surrogate.trig import sincos

__all__ = ["LaneStatistics", "lane_statistics", "lane_features", "wrapped_distance"]


@functools.partial(jax.jit, static_argnames=("n_steps", "delta", "on_lanes", "solver"))
def _advance(base: sg.Surrogate, params: sg.Params, theta, ts, xy, k, pairs=None, *,
             n_steps: int, delta: float, on_lanes: bool = True,
             solver: sg.FixedStep = sg.FixedStep()):
    """(theta (R, P, N) after ``n_steps``, features (R, P, n_steps, 2N)) of P lanes and R
    drives xy (R, T, 2) sampled at ts (T,), from theta (R, P, N) at block k (int32; t0 =
    k n_steps delta, computed as ``observer_statistics`` computes it); ``pairs``: the graph's
    ``EdgePairs`` for ``params`` (one exponential per undirected edge) or None."""
    dtype = base.dtype
    t0 = (k * n_steps).astype(dtype) * jnp.asarray(delta, dtype)
    r, p, n = theta.shape

    if on_lanes:  # the replications folded into the lanes: lane p R + r, a drive per lane
        def stage_inputs(xy_r):  # (n_steps, 4, M): the drive at the RK4 stage times
            drive = base.replace(drive=sg.make_drive(ts, xy_r)).drive_at
            return sg.rk4.stage_drive(drive, t0, jnp.asarray(delta, dtype), n_steps, dtype)

        u = jnp.moveaxis(jax.vmap(stage_inputs)(xy), 0, -1)  # (n_steps, 4, M, R)
        lanes = _map_batched(params, lambda v: jnp.repeat(v, r, axis=0))  # a point's R lanes

        def update(acc, i, th):  # th (P R, N)
            return acc.at[i - 1].set(jnp.concatenate(sincos(th), -1))

        sol = sg.fold_batch(base, jnp.swapaxes(theta, 0, 1).reshape(p * r, n),
                            jnp.zeros((n_steps, p * r, 2 * n), dtype), update, dt=delta,
                            n_steps=n_steps, t0=t0, params=lanes, solver=solver, pairs=pairs,
                            inputs=u)
        feats = sol.acc.reshape(n_steps, p, r, 2 * n).transpose(2, 1, 0, 3)
        return jnp.swapaxes(sol.y1.reshape(p, r, n), 0, 1), feats

    def one(theta_r, xy_r):  # the per-point path: sg.fold vmapped over the points
        sur = base.replace(drive=sg.make_drive(ts, xy_r))
        m = base.network.n_populations
        per = sg.Params(**{k: None if v is None else batch_leaf(
            v, (m, m) if k in ("B", "K") else (n,), p, dtype, k) for k, v in
            ((k, getattr(params, k)) for k in params.__dataclass_fields__)})

        def point(pp, th):
            s = sur.replace(params=pp)
            return sg.fold(s, th, jnp.zeros((n_steps, 2 * n), dtype),
                           lambda acc, i, t: acc.at[i - 1].set(
                               jnp.concatenate(sincos(t), -1)),
                           dt=delta, n_steps=n_steps, t0=t0, field=sg.Sparse(),
                           solver=solver)

        sol = jax.vmap(point)(per, theta_r)
        return sol.y1, sol.acc

    return jax.vmap(one)(theta, xy)


def _map_batched(params: sg.Params, fn) -> sg.Params:
    """``params`` with ``fn`` applied to the leaves batched over the points (B, K (P, M, M);
    the others (P, N)); shared leaves and None as they are."""
    def one(name):
        v = getattr(params, name)
        batched = v is not None and jnp.ndim(v) == (3 if name in ("B", "K") else 2)
        return fn(v) if batched else v

    return sg.Params(**{name: one(name) for name in params.__dataclass_fields__})


def _sharded(params: sg.Params, theta, g: int):
    """``params`` leaves batched over the G lanes and theta (R, G, N) split along the lanes
    over the backend's devices (XLA partitions the step; no communication inside it), when
    there are several and they divide G."""
    devices = jax.devices()
    if len(devices) == 1 or g % len(devices):
        return params, theta
    mesh = jax.sharding.Mesh(np.asarray(devices), ("lanes",))
    spec = jax.sharding.PartitionSpec
    params = _map_batched(params, lambda x: jax.device_put(
        x, jax.sharding.NamedSharding(mesh, spec("lanes"))))
    theta = jax.device_put(theta, jax.sharding.NamedSharding(mesh, spec(None, "lanes")))
    return params, theta


def wrapped_distance(sin_a, cos_a, sin_b, cos_b) -> np.ndarray:
    """Largest wrapped phase distance |a - b| (mod 2 pi, in [0, pi]) over the last axis, from
    the sines and cosines of two phase vectors."""
    s = sin_a * cos_b - cos_a * sin_b
    c = cos_a * cos_b + sin_a * sin_b
    return np.abs(np.arctan2(s, c)).max(-1)


@dataclasses.dataclass(frozen=True)
class LaneStatistics:
    """Normal equations (R, P, S, ...) of every replication and lane (float64), the two-copy
    distance (R, P) at the first training sample (largest wrapped phase distance, radians), and
    the process CPU seconds of the host statistics (from the features' arrival to the Gram)."""

    stats: NormalEquations
    distance: np.ndarray | None
    host_seconds: float = 0.0


def _runs(ids: np.ndarray):
    """(value, start, stop) of the runs of equal values in ``ids``."""
    edges = np.flatnonzero(np.diff(ids)) + 1
    starts, stops = np.r_[0, edges], np.r_[edges, ids.size]
    return [(int(ids[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=False)]


def lane_statistics(base: sg.Surrogate, params: sg.Params, theta0, xy, targets, splits: Splits,
                    *, delta: float, block: int = 125, theta_b=None,
                    on_lanes: bool = True, solver: sg.FixedStep = sg.FixedStep(unroll=2),
                    pairs: bool | None = None, gram_on: str | None = None) -> LaneStatistics:
    """Observer statistics of P points (``params`` leaves batched (P, ...)) and R replications.

    Args:
        base: graph, normalisation and dtype (its drive is replaced).
        params: per-lane parameters, leaves (P, ...) or shared.
        theta0: (N,), (P, N) or (R, P, N) phases at sample 0.
        xy: (R, T, 2) standardised x, y per replication (the drive of X and Y).
        targets: (R, T, Z) regression targets (float64 on the host).
        splits: the sample counts (T = ``splits.total``).
        delta: sample spacing = RK4 step, surrogate time units.
        block: samples per block.
        theta_b: phases of a second copy at sample 0 (same shapes as ``theta0``); if given,
            ``distance`` holds the two copies' distance at the first training sample.
        on_lanes: False runs the per-point path (``surrogate.fold`` vmapped over the points,
            bit-identical on CPU): the benchmark's reference.
        solver: the RK4 loop's options (``surrogate.FixedStep``; two steps per scan iteration
            are 10-15 % faster on lanes, benchmarks/lorenz_plane.py).
        pairs: on lanes, one exponential per undirected edge where the graph and every
            point's B allow it (``surrogate.edge_pairs``: the same numbers, bit for bit),
            instead of one per neighbour slot; None: on CPU only (an H200 ran the plane 2.8x
            slower with it, likely since the loop over chunks of edges runs small kernels one
            after the other). The replications share the lanes with the points (lane p R + r,
            each driven by its own series), so a plane of 64 points x 3 replications is one
            block of 192 lanes (benchmarks/lorenz_plane.py).
        gram_on: where the Gram products are summed, in float64: "host" (NumPy's BLAS, one
            product per lane and split run, overlapping the next block's dynamics) or "device"
            (one XLA program per block under a scoped x64 flag, the statistics left on the
            device until the end); None: the host on CPU, the device elsewhere (an H200's
            lanes were bound by the host: benchmarks/lorenz_plane.py).
    """
    xy = jnp.asarray(xy, base.dtype)
    targets = np.asarray(targets, np.float64)
    r, total = xy.shape[0], splits.total
    if xy.shape[1] != total or targets.shape[:2] != (r, total):
        raise ValueError(f"xy and targets must have {r} x {total} samples, got {xy.shape} and "
                         f"{targets.shape}")
    g = batch_size(params, jnp.zeros(base.network.n))
    n, z_dim = base.network.n, targets.shape[-1]
    theta = jnp.broadcast_to(jnp.asarray(theta0, base.dtype), (r, g, n))
    on_cpu = jax.devices()[0].platform == "cpu"
    if pairs is None:
        pairs = on_cpu
    if gram_on is None:
        gram_on = "host" if on_cpu else "device"
    if gram_on not in ("host", "device"):
        raise ValueError(f"gram_on must be 'host', 'device' or None, got {gram_on!r}")
    pairs = sg.edge_pairs(base, params) if pairs and on_lanes else None
    params, theta = _sharded(params, theta, g)
    ts = delta * jnp.arange(total, dtype=base.dtype)
    ids = np.concatenate([splits.ids(), -np.ones(block, int)])
    width = 2 * n + 1 + z_dim
    if gram_on == "device":
        with jax.enable_x64(True):
            gram = jnp.zeros((r, g, 3, width, width), jnp.float64)
    else:
        gram = np.zeros((r, g, 3, width, width))
    first = splits.washout  # the first training sample
    at_first = None
    host = 0.0

    def add(k, feats):  # feats (R, P, block, 2N) float32
        nonlocal at_first, gram, host
        if gram_on == "host":
            feats = np.asarray(feats)  # waits for the block
        c0 = time.thread_time()
        lo = k * block + 1
        if lo <= first < lo + block:
            at_first = np.asarray(feats[:, :, first - lo])
        runs = tuple(run for run in _runs(ids[lo:lo + block]) if run[0] >= 0)
        if gram_on == "device":
            tb = np.zeros((r, block, z_dim))  # the block's targets, zero past the end
            tb[:, :total - lo] = targets[:, lo:lo + block]
            with jax.enable_x64(True):
                gram = _device_gram(gram, feats, tb, runs)
        else:
            for split, a, b in runs:
                x = np.empty((r, g, b - a, width))
                x[..., :2 * n] = feats[:, :, a:b]
                x[..., 2 * n] = 1.0
                x[..., 2 * n + 1:] = targets[:, None, lo + a:lo + b]
                for i in np.ndindex(r, g):  # 2-D products: BLAS on contiguous rows
                    gram[i + (split,)] += x[i].T @ x[i]
        host += time.thread_time() - c0

    pending = None
    n_blocks = -(-(total - 1) // block)
    with one_blas_thread():
        for k in range(n_blocks):
            if ids[k * block + 1:(k + 1) * block + 1].max() < 0:  # washout only: no features
                theta, _ = _advance(base, params, theta, ts, xy, jnp.int32(k), pairs,
                                    n_steps=block, delta=delta, on_lanes=on_lanes,
                                    solver=solver)
                continue
            theta, feats = _advance(base, params, theta, ts, xy, jnp.int32(k), pairs,
                                    n_steps=block, delta=delta, on_lanes=on_lanes,
                                    solver=solver)
            if pending is not None:
                add(*pending)
            pending = (k, feats)
        add(*pending)
    distance = None
    if theta_b is not None:  # the second copy through the same blocks (no other program)
        theta_b = _sharded(params, jnp.broadcast_to(jnp.asarray(theta_b, base.dtype),
                                                    (r, g, n)), g)[1]
        k_first = (first - 1) // block  # the block holding the first training sample
        for k in range(k_first + 1):
            theta_b, fb = _advance(base, params, theta_b, ts, xy, jnp.int32(k), pairs,
                                   n_steps=block, delta=delta, on_lanes=on_lanes,
                                   solver=solver)
        fb = np.asarray(fb)[:, :, first - (k_first * block + 1)]
        distance = wrapped_distance(at_first[..., :n], at_first[..., n:], fb[..., :n],
                                    fb[..., n:])
    return LaneStatistics(stats=NormalEquations.from_gram(np.asarray(gram), z_dim),
                          distance=distance, host_seconds=host)


@functools.partial(jax.jit, static_argnames="runs", donate_argnums=0)
def _device_gram(gram, feats, targets, runs):
    """``gram`` (R, P, S, W, W) float64 plus X^T X of each run (split, a, b) of the block's
    samples, X = [f, 1, z]: feats (R, P, block, 2N), targets (R, block, Z). Under x64."""
    for split, a, b in runs:
        f = feats[:, :, a:b].astype(jnp.float64)
        z = jnp.broadcast_to(targets[:, None, a:b], f.shape[:3] + targets.shape[-1:])
        x = jnp.concatenate([f, jnp.ones(f.shape[:3] + (1,), jnp.float64), z], -1)
        gram = gram.at[:, :, split].add(jnp.einsum("rpti,rptj->rpij", x, x,
                                                   precision="highest"))
    return gram


def lane_features(base: sg.Surrogate, params: sg.Params, theta0, xy, *, delta: float,
                  n_steps: int) -> np.ndarray:
    """Stored features (R, P, n_steps + 1, 2N) of the samples 0..n_steps (figures, forecasts
    of a few points)."""
    xy = jnp.asarray(xy, base.dtype)
    r, n = xy.shape[0], base.network.n
    g = batch_size(params, jnp.zeros(n))
    theta = jnp.broadcast_to(jnp.asarray(theta0, base.dtype), (r, g, n))
    ts = delta * jnp.arange(xy.shape[1], dtype=base.dtype)
    _, feats = _advance(base, params, theta, ts, xy, jnp.int32(0), n_steps=n_steps,
                        delta=delta)
    f0 = jnp.concatenate([jnp.sin(theta), jnp.cos(theta)], -1)[:, :, None]
    return np.asarray(jnp.concatenate([f0, feats], 2))
