"""Lyapunov spectra of many trajectories at once: the batch laid out on lanes.

The same Benettin/QR method as ``surrogate.lyapunov``, with its code (``benettin``: the
accumulation; ``qr_blocks``: tangent steps by ``jax.linearize``, Gram-Schmidt written out), on
B trajectories held as state arrays of shape (n, L) and tangent frames of shape (n, k, L), L
lanes per block: the batch is the minor (contiguous) axis, so every operation of the RK4 step,
of its tangent map and of the Gram-Schmidt is one vector operation across L trajectories.
``jax.vmap`` of the one-system path keeps the batch on the major axis instead, with (3,)-long
minor axes on Lorenz-63 (5x slower in ``benchmarks/lyapunov.py``).

The field and map keep their one-system signatures, ``f(t, y, args)`` and ``g(y, args)`` with
y of shape (n,); they are vmapped over the lane axis inside. ``args`` is shared by the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from surrogate import rk4
from surrogate._checks import check_count
from surrogate.lyapunov import (
    LyapunovSpectrum,
    _check,
    _check_system,
    benettin,
    cached_jit,
    qr_blocks,
)

__all__ = ["lyapunov_spectrum_batch", "lyapunov_spectrum_map_batch", "LANES"]

#: Trajectories per lane block (the default ``lanes``): each block runs the whole time loop
#: with its states and frames in cache; blocks follow one another (``lax.map``).
LANES = 256


def _run(step, y0s, q0, unit, *, k, n_steps, transient, renorm_every, n_records, lanes):
    """Benettin on lane blocks: ``step(i, Y)`` advances a block of states Y (n, L) by one step.

    y0s (B, n) -> LyapunovSpectrum with exponents (B, k), times (B, R), running (B, R, k).
    """
    b, n = y0s.shape
    dtype = y0s.dtype
    lanes = min(lanes, b)
    n_blocks = -(-b // lanes)
    # pad with copies of the last state (finite, discarded), blocks of (n, L)
    pad = jnp.concatenate([y0s, jnp.broadcast_to(y0s[-1], (n_blocks * lanes - b, n))])
    blocks = pad.reshape(n_blocks, lanes, n).transpose(0, 2, 1)
    q0 = jnp.eye(n, k, dtype=dtype) if q0 is None else q0.astype(dtype)
    frame0 = jnp.broadcast_to(q0[:, :, None], (n, k, lanes))

    def one(y):
        res = benettin(qr_blocks(step, renorm_every), (y, frame0), (k, lanes), dtype, unit,
                       n_steps, transient, renorm_every, n_records)
        return res.exponents, res.running, res.times

    lam, running, times = jax.lax.map(one, blocks)
    # (blocks, k, L) -> (B, k); (blocks, R, k, L) -> (B, R, k)
    lam = lam.transpose(0, 2, 1).reshape(-1, k)[:b]
    running = running.transpose(0, 3, 1, 2).reshape(-1, running.shape[1], k)[:b]
    times = jnp.broadcast_to(times[0], (b,) + times.shape[1:])
    return LyapunovSpectrum(exponents=lam, times=times, running=running)


def _flow(vector_field, y0s, args, dt, t0, q0, **static):
    dtype = y0s.dtype
    dt = jnp.asarray(dt, dtype)
    t0 = jnp.asarray(t0, dtype)
    on_lanes = jax.vmap(vector_field, in_axes=(None, 1, None), out_axes=1)

    def step(i, y):
        return rk4.flow_step(on_lanes, t0 + i.astype(dtype) * dt, y, args, dt)

    return _run(step, y0s, q0, dt, **static)


def _map(map_fn, y0s, args, q0, **static):
    on_lanes = jax.vmap(map_fn, in_axes=(1, None), out_axes=1)
    unit = jnp.asarray(1, y0s.dtype)
    return _run(lambda i, y: on_lanes(y, args), y0s, q0, unit, **static)


_STATIC = ("k", "n_steps", "transient", "renorm_every", "n_records", "lanes")
_flow_jit = jax.jit(_flow, static_argnums=0, static_argnames=_STATIC)
_map_jit = jax.jit(_map, static_argnums=0, static_argnames=_STATIC)


def _check_batch(y0s, fn_out, n_steps, transient, k, renorm_every, n_records, lanes, q0, what):
    y0s = jnp.asarray(y0s)
    if y0s.ndim != 2 or y0s.shape[0] < 1:
        raise ValueError(f"y0s must have shape (B, n) with B >= 1, got shape {y0s.shape}")
    y0, k = _check(y0s[0], n_steps, transient, k, renorm_every, n_records)
    check_count(lanes, "lanes", 1)
    _check_system(what, fn_out(y0), y0, q0, k)
    return y0s.astype(y0.dtype), k


def lyapunov_spectrum_batch(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    y0s: jax.Array,
    args: Any = None,
    *,
    dt: float,
    n_steps: int,
    transient: int = 0,
    k: int | None = None,
    renorm_every: int = 1,
    n_records: int = 100,
    t0: float = 0.0,
    tangent0: jax.Array | None = None,
    lanes: int = LANES,
) -> LyapunovSpectrum:
    """First k Lyapunov exponents of B trajectories of ``dy/dt = vector_field(t, y, args)``.

    As ``jax.vmap`` of ``surrogate.lyapunov_spectrum`` over the initial states (same
    arguments, same steps, the same result up to rounding), on lanes. ``renorm_every``: the
    frame of a low-dimensional flow stays well conditioned over several steps (Lorenz-63 at
    dt = 0.01: 8 steps shrink the third vector against the first by e^-1.2), and every QR
    costs k logarithms and square roots per trajectory, all the transcendental work of a
    polynomial field; ``benchmarks/lyapunov.py`` uses 8.

    Args:
        vector_field: f(t, y, args) -> dy/dt for one state y (n,).
        y0s: (B, n) initial states; their float dtype (float32 or float64) is used throughout.
        args: the field's ``args``, shared by the batch.
        dt, n_steps, transient, k, renorm_every, n_records, t0, tangent0: as
            ``lyapunov_spectrum`` (``tangent0`` (n, k) is shared by the batch).
        lanes: trajectories per lane block (``LANES``; at most B).

    Returns:
        ``LyapunovSpectrum`` with exponents (B, k) in 1 / time unit, times (B, R) and
        running (B, R, k), as the vmapped one-system path returns.
    """
    if isinstance(dt, (int, float)) and not dt > 0:
        raise ValueError(f"dt must be positive, got dt={dt!r}")
    y0s, k = _check_batch(y0s, lambda y: jax.eval_shape(vector_field, t0, y, args), n_steps,
                          transient, k, renorm_every, n_records, lanes, tangent0, "vector_field")
    run = cached_jit(_flow_jit, _flow, vector_field)
    return run(vector_field, y0s, args, dt, t0, tangent0, k=k, n_steps=n_steps,
               transient=transient, renorm_every=renorm_every, n_records=n_records, lanes=lanes)


def lyapunov_spectrum_map_batch(
    map_fn: Callable[[jax.Array, Any], jax.Array],
    y0s: jax.Array,
    args: Any = None,
    *,
    n_steps: int,
    transient: int = 0,
    k: int | None = None,
    renorm_every: int = 1,
    n_records: int = 100,
    tangent0: jax.Array | None = None,
    lanes: int = LANES,
) -> LyapunovSpectrum:
    """First k Lyapunov exponents (per iteration) of B orbits of ``y -> map_fn(y, args)``.

    As ``jax.vmap`` of ``surrogate.lyapunov.lyapunov_spectrum_map`` over y0s (B, n), on lanes (see
    ``lyapunov_spectrum_batch``); exponents (B, k).
    """
    y0s, k = _check_batch(y0s, lambda y: jax.eval_shape(map_fn, y, args), n_steps, transient,
                          k, renorm_every, n_records, lanes, tangent0, "map_fn")
    run = cached_jit(_map_jit, _map, map_fn)
    return run(map_fn, y0s, args, tangent0, k=k, n_steps=n_steps, transient=transient,
               renorm_every=renorm_every, n_records=n_records, lanes=lanes)
