"""Lyapunov spectra by Benettin's method: tangent vectors, QR re-orthonormalisation.

A fixed-step RK4 step (``surrogate.rk4``) of ``f(t, y, args)`` is linearised with
``jax.linearize`` (a forward-mode ``jvp``); the derivative of the RK4 map equals RK4 applied to
the variational equation
``dv/dt = Df(t, y) v``, so the k tangent vectors advance exactly as the discrete flow does. Every
``renorm_every`` steps the tangent frame is QR-factorised with the diagonal of R made positive; the
logarithms of that diagonal add up to the exponents. Maps ``g(y, args)`` use the same loop with the
map in place of the RK4 step (exponents per iteration).

Because ``f`` is non-autonomous, a driven system whose drive lives in ``args`` gives *conditional*
Lyapunov exponents: the drive is the same for the reference and perturbed states, only the state is
perturbed. ``conditional_lyapunov_exponents`` applies this to the surrogate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate import rk4
from surrogate._checks import check_count, is_count
from surrogate.model import Reference, Sparse, coupling_tables, resolve_field, rhs, vector_field

__all__ = [
    "LyapunovSpectrum",
    "conditional_lyapunov_exponents",
    "kaplan_yorke_dimension",
    "lyapunov_spectrum",
    "lyapunov_spectrum_map",
    "cached_jit",
]


@struct.dataclass
class LyapunovSpectrum:
    """Result of a Benettin run.

    Attributes:
        exponents: (k,) exponents in 1 / time unit of the system (per iteration for maps), in
            the order of the QR columns: descending once converged (nearly equal exponents may
            still be out of order after a short run).
        times: (R,) times (iterations for maps) since the end of the transient at which the
            running estimate was recorded; the last one is the whole measured horizon.
        running: (R, k) running estimate: accumulated log-growth / elapsed time at ``times``.
    """

    exponents: jax.Array
    times: jax.Array
    running: jax.Array

    @property
    def largest(self) -> jax.Array:
        """The largest exponent, shape ()."""
        return self.exponents[..., 0]

    @property
    def sum(self) -> jax.Array:
        """Sum of the computed exponents, shape () (phase-space contraction rate if k = n)."""
        return self.exponents.sum(-1)


#: Frames with at most this many vectors are orthonormalised by unrolled Gram-Schmidt (measured
#: ~9x faster than LAPACK QR per step for a vmapped batch of Lorenz frames on CPU).
GRAM_SCHMIDT_MAX_K = 8


def _qr_log(q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reduced QR of the (n, k, *lanes) frame with diag(R) > 0: the new frame and log diag(R)
    (k, *lanes).

    ``lanes``: trailing batch axes (``lyapunov_spectrum_batch`` keeps trajectories there, so
    every operation below is a vector operation across them). Small k: modified Gram-Schmidt
    with one re-orthogonalisation pass ("twice is enough"), written out column by column, whose
    norms are diag(R); larger k: Householder QR (LAPACK) with the signs fixed, per lane.
    """
    k = q.shape[1]
    if k <= GRAM_SCHMIDT_MAX_K:
        cols, logs = [], []
        for j in range(k):
            v = q[:, j]
            for _ in range(2):
                for c in cols:
                    v = v - jnp.sum(c * v, axis=0, keepdims=True) * c
            norm = jnp.sqrt(jnp.sum(v * v, axis=0, keepdims=True))
            cols.append(v / norm)
            logs.append(jnp.log(norm[0]))
        return jnp.stack(cols, 1), jnp.stack(logs)
    if q.ndim > 2:
        return jax.vmap(_qr_log, in_axes=-1, out_axes=(-1, -1))(q)
    q, r = jnp.linalg.qr(q)
    d = jnp.diagonal(r)
    sign = jnp.where(d < 0, -1, 1).astype(q.dtype)
    return q * sign[None, :], jnp.log(jnp.abs(d))


def _check(y0, n_steps, transient, k, renorm_every, n_records):
    y0 = jnp.asarray(y0)
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(jnp.result_type(float))
    if y0.ndim != 1 or y0.shape[0] < 1:
        raise ValueError(f"y0 must have shape (n,) with n >= 1, got shape {y0.shape}")
    n = y0.shape[0]
    k = n if k is None else k
    if not is_count(k, 1) or k > n:
        raise ValueError(f"k must be an integer in 1..{n} (the state dimension), got k={k!r}")
    for name, value, minimum in (
        ("n_steps", n_steps, 1),
        ("transient", transient, 0),
        ("renorm_every", renorm_every, 1),
        ("n_records", n_records, 1),
    ):
        check_count(value, name, minimum)
    if n_steps % renorm_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of renorm_every={renorm_every}")
    return y0, k


def segments(n_steps: int, transient: int, renorm_every: int, n_records: int):
    """How the run is cut: the transient, then ``n_records`` records of whole QR blocks.

    Returns numpy ``(first, count, steps)``: segment s covers ``count[s]`` QR blocks from block
    ``first[s]`` (segment 0 is the transient, rounded up to whole blocks, possibly empty);
    ``steps`` (R,): measured steps at the end of each record (R = min(n_records, blocks)).
    """
    n_tr = -(-transient // renorm_every)
    n_blocks = n_steps // renorm_every
    n_rec = min(n_records, n_blocks)
    per, rest = divmod(n_blocks, n_rec)
    count = np.array([n_tr, per + rest] + [per] * (n_rec - 1))
    first = np.concatenate([[0], n_tr + np.cumsum(count[1:]) - count[1:]])
    return first, count, renorm_every * (first[1:] + count[1:] - n_tr)


def benettin(block, carry, log_shape, dtype, unit, n_steps, transient, renorm_every,
             n_records) -> LyapunovSpectrum:
    """The accumulation of every Benettin run: ``block(b, carry) -> (carry, logs)`` advances
    QR block b (``renorm_every`` steps and one re-orthonormalisation) and returns the log
    growths ``logs`` of shape ``log_shape`` ((k,) for one system, (k, lanes) for a batch).

    An outer scan over ``segments`` (the transient, then the records), each a loop over its
    blocks: the block appears once in the traced program, and per-segment partial sums keep
    float32 accumulation accurate. ``unit``: time per step. Returns exponents
    ``log_shape``, times (R,) and running (R, *log_shape).
    """
    first, count, steps = segments(n_steps, transient, renorm_every, n_records)

    def body(b, c):
        carry, acc = c
        carry, logs = block(b, carry)
        return carry, acc + logs

    def segment(carry, xs):
        b0, nb = xs
        return jax.lax.fori_loop(b0, b0 + nb, body, (carry, jnp.zeros(log_shape, dtype)))

    _, logs = jax.lax.scan(segment, carry, (jnp.asarray(first), jnp.asarray(count)))
    totals = jnp.cumsum(logs[1:], axis=0)
    times = jnp.asarray(steps, dtype) * unit
    per_time = times.reshape((-1,) + (1,) * len(log_shape))
    return LyapunovSpectrum(exponents=totals[-1] / times[-1], times=times,
                            running=totals / per_time)


def qr_blocks(step, renorm_every: int):
    """The ``block`` of ``benettin`` for ``step(i, y) -> y_next`` (i: global step index, traced
    int): ``renorm_every`` steps of the state y and of its tangent frame q (n, k, *lanes), then
    ``_qr_log``. Each step is linearised (``jax.linearize``) and the k columns of q advance
    with it; y and the columns may carry trailing lane axes (``lyapunov_spectrum_batch``).
    """

    def advance(i, yq):
        y, q = yq
        y_next, tangent = jax.linearize(lambda x: step(i, x), y)
        return y_next, jax.vmap(tangent, in_axes=1, out_axes=1)(q)

    def block(b, yq):
        i0 = b * renorm_every
        if renorm_every == 1:
            yq = advance(i0, yq)
        else:  # rolled: written out, XLA's fusion recomputed shared stages (24x slower at 8)
            yq = jax.lax.fori_loop(0, renorm_every, lambda j, c: advance(i0 + j, c), yq)
        q, logs = _qr_log(yq[1])
        return (yq[0], q), logs

    return block


def _benettin(step, y0, q0, unit, k, n_steps, transient, renorm_every, n_records):
    """Benettin/QR run of one system ``step(i, y) -> y_next``; ``q0``: initial orthonormal
    frame (n, k) or None (the first k unit vectors); ``unit``: time per step."""
    dtype = y0.dtype
    q0 = jnp.eye(y0.shape[0], k, dtype=dtype) if q0 is None else q0.astype(dtype)
    return benettin(qr_blocks(step, renorm_every), (y0, q0), (k,), dtype, unit, n_steps,
                    transient, renorm_every, n_records)


_STATIC = ("k", "n_steps", "transient", "renorm_every", "n_records")


def _flow(vector_field, y0, args, dt, t0, q0, *, k, n_steps, transient, renorm_every, n_records):
    dtype = y0.dtype
    dt = jnp.asarray(dt, dtype)
    t0 = jnp.asarray(t0, dtype)

    def step(i, y):
        return rk4.flow_step(vector_field, t0 + i.astype(dtype) * dt, y, args, dt)

    return _benettin(step, y0, q0, dt, k, n_steps, transient, renorm_every, n_records)


def _map(map_fn, y0, args, q0, *, k, n_steps, transient, renorm_every, n_records):
    unit = jnp.asarray(1, y0.dtype)
    return _benettin(lambda i, y: map_fn(y, args), y0, q0, unit, k, n_steps, transient,
                     renorm_every, n_records)


_flow_jit = jax.jit(_flow, static_argnums=0, static_argnames=_STATIC)
_map_jit = jax.jit(_map, static_argnums=0, static_argnames=_STATIC)


def cached_jit(jitted, plain, fn):
    """The jitted (compiled once per function and static settings) version when fn hashes."""
    try:
        hash(fn)
    except TypeError:  # e.g. a module holding arrays: trace it inline instead
        return plain
    return jitted


def lyapunov_spectrum(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    y0: jax.Array,
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
) -> LyapunovSpectrum:
    """First k Lyapunov exponents of the flow ``dy/dt = vector_field(t, y, args)``.

    The system is integrated by fixed-step RK4 of size ``dt`` from (t0, y0); the first
    ``transient`` steps (rounded up to a multiple of ``renorm_every``) relax the state and the
    tangent frame and are discarded; the next ``n_steps`` are measured, with a QR every
    ``renorm_every`` steps. Acts on one system: batch initial conditions or parameters with
    ``jax.vmap``; works under ``jax.jit`` (and is jit-compiled and cached per vector field and
    static settings when called directly).

    Args:
        vector_field: f(t, y, args) -> dy/dt, (n,) -> (n,).
        y0: (n,) initial state; its float dtype (float32 or float64) is used throughout.
        args: the ``args`` of the vector field (parameters, drive).
        dt: RK4 step, in time units of the system.
        n_steps: measured steps; a multiple of ``renorm_every``.
        transient: steps discarded first.
        k: number of exponents (default all n).
        renorm_every: steps between QR re-orthonormalisations.
        n_records: points of the running estimate kept (at most n_steps / renorm_every).
        t0: initial time (matters for non-autonomous fields).
        tangent0: (n, k) initial tangent frame with orthonormal columns (default: the first k
            unit vectors).

    Returns:
        ``LyapunovSpectrum`` with exponents (k,) in 1 / time unit.
    """
    y0, k = _check(y0, n_steps, transient, k, renorm_every, n_records)
    if isinstance(dt, (int, float)) and not dt > 0:
        raise ValueError(f"dt must be positive, got dt={dt!r}")
    _check_system("vector_field", jax.eval_shape(vector_field, t0, y0, args), y0, tangent0, k)
    run = cached_jit(_flow_jit, _flow, vector_field)
    return run(vector_field, y0, args, dt, t0, tangent0, k=k, n_steps=n_steps,
                 transient=transient, renorm_every=renorm_every, n_records=n_records)


def _check_system(what: str, out, y0, q0, k: int) -> None:
    """ValueError unless the system ``what`` maps y0 to ``out`` (its ``eval_shape``) of y0's
    shape and the tangent frame ``q0`` (or None) is (n, k)."""
    if getattr(out, "shape", None) != y0.shape:
        raise ValueError(f"{what} must map a state of shape {y0.shape} to the same shape, "
                         f"got {getattr(out, 'shape', out)}")
    n = y0.shape[0]
    if q0 is not None and jnp.shape(q0) != (n, k):
        raise ValueError(f"tangent0 must have shape ({n}, {k}), got {jnp.shape(q0)}")


def lyapunov_spectrum_map(
    map_fn: Callable[[jax.Array, Any], jax.Array],
    y0: jax.Array,
    args: Any = None,
    *,
    n_steps: int,
    transient: int = 0,
    k: int | None = None,
    renorm_every: int = 1,
    n_records: int = 100,
    tangent0: jax.Array | None = None,
) -> LyapunovSpectrum:
    """First k Lyapunov exponents (per iteration) of the map ``y -> map_fn(y, args)``.

    Same loop as ``lyapunov_spectrum`` with the map in place of the RK4 step; ``n_steps`` and
    ``transient`` count iterations, ``times`` are iteration counts.
    """
    y0, k = _check(y0, n_steps, transient, k, renorm_every, n_records)
    _check_system("map_fn", jax.eval_shape(map_fn, y0, args), y0, tangent0, k)
    run = cached_jit(_map_jit, _map, map_fn)
    return run(map_fn, y0, args, tangent0, k=k, n_steps=n_steps, transient=transient,
                renorm_every=renorm_every, n_records=n_records)


def conditional_lyapunov_exponents(
    surrogate,
    theta0: jax.Array,
    *,
    dt: float,
    n_steps: int,
    transient: int = 0,
    k: int = 1,
    renorm_every: int = 1,
    n_records: int = 100,
    t0: float = 0.0,
    modulo_phase_shift: bool | None = None,
    field="reference",
    key: jax.Array | None = None,
) -> LyapunovSpectrum:
    """Conditional Lyapunov exponents of the driven surrogate (same drive u(t), perturbed phases).

    ``surrogate`` is a ``Surrogate`` whose ``drive`` (if any) is held fixed; only the phases
    theta0 (N,) are perturbed; ``result.largest < 0`` means the surrogate forgets its initial
    state and follows its drive (echo-state property, generalized synchronization).

    Without anchoring (h = 0) the field depends on phase differences only and the drive enters
    additively, so shifting all phases by one constant is an exact symmetry with exponent 0.
    ``modulo_phase_shift=True`` keeps that neutral direction (1, ..., 1) as the first tangent
    vector, drops it, and returns the k largest exponents *transverse* to it (forgetting up to a
    common phase); ``False`` gives the plain k largest. The default (None) is True when no
    oscillator is anchored and False otherwise (anchoring breaks the symmetry, so the plain
    exponents are the meaningful ones; an uncoupled anchored oscillator relaxes at the rate
    sqrt(h^2 - omega^2)). Exponents in 1 / surrogate time unit.

    ``field``: evaluation of the vector field, ``Reference()`` (default:
    ``surrogate.vector_field``), ``Dense()``, ``Sparse()`` or ``Auto()`` (or their shorthand
    strings) as in ``surrogate.simulate`` (the same function; on CPU the reference compiled and
    ran fastest for N <= 64 in our measurements); a sparse slot loop runs rolled here (25x
    shorter compiles of the tangent dynamics). ``key``: the initial
    tangent frame is random (drawn from ``key``, default ``jax.random.key(0)``) rather than the
    first unit vectors: in a nearly uncoupled network the Jacobian is nearly diagonal and unit
    vectors would measure the first oscillators' own rates, not the largest.
    """
    if modulo_phase_shift is None:
        modulo_phase_shift = not _anchored(surrogate)
    field = resolve_field(surrogate, field)
    if isinstance(field, Sparse):
        field = dataclasses.replace(field, unroll_slots=False)
    vector_field, args = _surrogate_field(field), surrogate
    if not isinstance(field, Reference):  # coupling tables built once, outside the time loop
        args = (surrogate, coupling_tables(surrogate, field))
    theta0 = jnp.asarray(theta0, surrogate.dtype)
    n = theta0.shape[-1] if theta0.ndim else 0
    kw = {"dt": dt, "n_steps": n_steps, "transient": transient, "renorm_every": renorm_every,
          "n_records": n_records, "t0": t0}
    key = jax.random.key(0) if key is None else key
    if not modulo_phase_shift:
        _check(theta0, n_steps, transient, k, renorm_every, n_records)
        frame, _ = _qr_log(jax.random.normal(key, (n, k), theta0.dtype))
        return lyapunov_spectrum(vector_field, theta0, args, k=k, tangent0=frame, **kw)
    if not is_count(k, 1) or k > n - 1:
        raise ValueError(f"k must be an integer in 1..{n - 1} (N - 1 transverse), got k={k!r}")
    # frame: (1, ..., 1)/sqrt(N) first; the invariant neutral direction stays the first column
    frame = jnp.concatenate([jnp.ones((n, 1), theta0.dtype),
                             jax.random.normal(key, (n, k), theta0.dtype)], axis=1)
    q0, _ = _qr_log(frame)
    res = lyapunov_spectrum(vector_field, theta0, args, k=k + 1, tangent0=q0, **kw)
    return LyapunovSpectrum(
        exponents=res.exponents[1:], times=res.times, running=res.running[:, 1:]
    )


def _anchored(surrogate) -> bool:
    """Whether any oscillator of ``surrogate`` has a non-zero anchoring strength."""
    h = surrogate.params.anchor
    if h is None:
        return False
    try:
        return bool(np.any(np.asarray(h) != 0))
    except jax.errors.TracerArrayConversionError:
        raise ValueError("conditional_lyapunov_exponents: the anchor strengths are traced; "
                         "pass modulo_phase_shift=True or False explicitly") from None


@cache
def _surrogate_field(field) -> Callable:
    """The surrogate's vector field by one evaluation (one function object per field, so
    compiled spectra are cached across calls): ``f(t, theta, sur)`` for ``Reference()``,
    ``f(t, theta, (sur, tables))`` otherwise."""
    if isinstance(field, Reference):
        return vector_field

    def f(t, theta, args):
        sur, tables = args
        return rhs(theta, sur.drive_at(t), sur, field, tables)

    return f


def kaplan_yorke_dimension(exponents: jax.Array) -> jax.Array:
    """Kaplan-Yorke (Lyapunov) dimension of a spectrum (k,): j + S_j / |lambda_{j+1}|.

    Exponents are sorted descending; S_j is the sum of the first j, j the largest index with
    S_j >= 0. Gives 0 when lambda_1 < 0 and k when all partial sums are >= 0 (a lower bound then:
    more exponents are needed). Shape ().
    """
    lam = jnp.asarray(exponents)
    if lam.ndim != 1 or lam.shape[0] < 1:
        raise ValueError(f"exponents must have shape (k,), got shape {lam.shape}")
    if not jnp.issubdtype(lam.dtype, jnp.floating):
        lam = lam.astype(jnp.result_type(float))
    lam = -jnp.sort(-lam)
    partial = jnp.cumsum(lam)
    n = lam.shape[0]
    j = jnp.sum(partial >= 0)  # the nonnegative partial sums form a prefix
    s_j = jnp.where(j > 0, partial[jnp.maximum(j - 1, 0)], 0)
    nxt = lam[jnp.minimum(j, n - 1)]
    frac = jnp.where(j < n, s_j / jnp.abs(jnp.where(nxt == 0, 1, nxt)), 0)
    return (j + frac).astype(lam.dtype)
