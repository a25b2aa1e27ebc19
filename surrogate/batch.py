"""Batches of systems on one graph in plain XLA, the batch on the minor axis (CPU sweeps).

``simulate_batch(sur, theta0, params=..., dt=..., n_steps=...)`` integrates G systems that share
a graph, a drive and a normalisation but not their parameters (a sweep over B, K, omega, gains),
with the RK4 scheme and the neighbour-slot evaluation of ``simulate(field=Sparse())``,
and returns what ``fused_simulate`` returns: a ``Solution`` of the final phases and, on request,
the means of cos and sin (``PhaseMeans``).

Why a batched function, against the rule "act on one system, vmap at the call site": under
``vmap`` the batch axis is the major one, so each neighbour slot gathers single elements. Here
the state is (N, G): a slot gathers whole rows of G contiguous values and every operation is
elementwise along G, which XLA:CPU vectorises. Measured (benchmarks/sweep.py, one CPU device,
16 x 16 grid, 5000 steps): 1.7x the vmapped fast path, 32x the naive dense baseline. It is the
same arithmetic as ``fold`` (bit-identical on CPU, tests/test_batch.py). The Pallas kernel
(``fused_simulate``) is the GPU counterpart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate import rk4
from surrogate.integrate import driven_step, run_drive
from surrogate.model import (
    NORMALISATIONS,
    CouplingTables,
    Params,
    Sparse,
    Surrogate,
    input_terms,
    slot_sums,
)
from surrogate.rk4 import FixedStep, Solution
from surrogate.trig import sincos

__all__ = ["PhaseMeans", "EdgePairs", "edge_pairs", "fold_batch", "simulate_batch", "batch_leaf",
           "batch_size"]


class PhaseMeans(NamedTuple):
    """``acc`` of a batch run with ``means=True``: the means of cos theta and sin theta over
    the states after steps 1..n_steps, (G, N) each."""

    cos: jax.Array
    sin: jax.Array


def batch_leaf(x, shape, g: int, dtype, name: str) -> jax.Array:
    """(G, *shape) from a per-system leaf of ``shape`` (broadcast) or one batched already."""
    x = jnp.asarray(x, dtype)
    if x.shape == shape:
        return jnp.broadcast_to(x, (g,) + shape)
    if x.shape == (g,) + shape:
        return x
    raise ValueError(f"{name} must have shape {shape} or ({g},) + {shape}, got {x.shape}")


def batch_size(params: Params, theta0) -> int:
    """G of a batch: the leading axis of the batched leaves (1 when none is batched)."""
    sizes = set()
    leaves = [(f"params.{name}", getattr(params, name), 2 if name in ("B", "K") else 1)
              for name in params.__dataclass_fields__ if getattr(params, name) is not None]
    for name, x, base in leaves + [("theta0", theta0, 1)]:
        shape = jnp.shape(x)
        if len(shape) == base + 1:
            sizes.add(shape[0])
        elif len(shape) != base:
            raise ValueError(f"{name} must have {base} or {base + 1} (batched) axes, "
                             f"got shape {shape}")
    if len(sizes) > 1:
        raise ValueError(f"batched parameters disagree on the batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


@struct.dataclass
class EdgePairs:
    """The undirected edges of a graph in C chunks of N: ``first``, ``second`` (C, N) the two
    ends of each edge, ``mask`` (C, N) the real entries (padding: 0, 0), ``slots`` (N, D) the
    entry of each neighbour slot in the chunks flattened (a padding entry for the padding
    slots)."""

    first: jax.Array
    second: jax.Array
    mask: jax.Array
    slots: jax.Array


def edge_pairs(sur: Surrogate, params: Params | None = None) -> EdgePairs | None:
    """``EdgePairs`` of ``sur``'s graph when one exponential per undirected edge gives the
    per-slot ones exactly, else None: the graph must be undirected, and for every system in
    ``params`` (default ``sur.params``; leaves (M, M) or batched (G, M, M)) B must be symmetric
    on the populations that edges link and, under softmax, the rows' shifts max_b |B[a, b]|
    of linked populations equal. Then exp(B[a, b] cos(theta_j - theta_i) - shift) of slot
    (i, j) is bit for bit that of slot (j, i) (products and sums commute). Host-side, from
    concrete arrays; None when any is traced."""
    net = sur.network
    params = sur.params if params is None else params
    try:
        nbr, mask = np.asarray(net.neighbours), np.asarray(net.neighbour_mask, bool)
        pop, B = np.asarray(net.population), np.asarray(params.B)
    except jax.errors.TracerArrayConversionError:
        return None
    n = nbr.shape[0]
    rows = np.repeat(np.arange(n), nbr.shape[1]).reshape(nbr.shape)
    i, j = rows[mask], nbr[mask]
    adj = np.zeros((n, n), bool)
    adj[i, j] = True
    if not np.array_equal(adj, adj.T):
        return None
    m = B.shape[-1]
    linked = np.zeros((m, m), bool)
    linked[pop[i], pop[j]] = True
    if not np.all((B == np.swapaxes(B, -1, -2)) | ~linked):
        return None
    if sur.normalisation == "softmax":
        shift = np.max(np.abs(B), axis=-1)  # (..., M)
        if not np.all((shift[..., :, None] == shift[..., None, :]) | ~linked):
            return None
    first, second = np.nonzero(np.triu(adj))
    e = first.size
    size = (e // n + 1) * n  # at least one padding entry
    index = np.zeros((n, n), int)
    index[first, second] = index[second, first] = np.arange(e)
    slots = np.where(mask, index[rows, nbr], e)

    def chunks(x, fill):
        return jnp.asarray(np.r_[x, np.full(size - e, fill)].reshape(-1, n))

    return EdgePairs(first=chunks(first, 0).astype(jnp.int32),
                     second=chunks(second, 0).astype(jnp.int32),
                     mask=chunks(np.ones(e, bool), False), slots=jnp.asarray(slots, jnp.int32))


def _lanes_rhs(sur: Surrogate, p: Params, field: Sparse, pairs: EdgePairs | None = None):
    """f(theta (N, G), u (M,) or (M, R)) -> dtheta/dt (N, G) for per-system parameters ``p`` on
    lanes (R drives: system g driven by drive g mod R):
    per-oscillator leaves (N, G), B and K (M, M, G); always the neighbour-slot loop, unrolled
    as ``field`` says when the graph has at most ``field.slot_loop_max`` slots. With ``pairs``
    (``edge_pairs``) one exponential per undirected edge, read by both of its slots."""
    net = sur.network
    pop, nbr = net.population, net.neighbours
    pj = pop[nbr]
    tab = CouplingTables.build(p.B, p.K, pop, pj,  # beta, kappa (N, D, G); shift (N, G)
                               net.neighbour_mask.astype(sur.dtype)[:, :, None],  # (N, D, 1)
                               field.unroll_slots and nbr.shape[1] <= field.slot_loop_max)
    if pairs is not None:  # per chunk of edges (C, N, G): beta, shift, mask
        a, b = pairs.first, pairs.second
        edge_xs = (a, b, p.B[pop[a], pop[b]], tab.shift[a],
                   pairs.mask.astype(sur.dtype)[..., None])

    def f(theta, u):  # u (M,) shared or (M, R): R drives
        # computed once: without the barrier XLA fuses the polynomial into the gathers of
        # every neighbour slot (the lanes 1.3x slower)
        s, c = jax.lax.optimization_barrier(sincos(theta))
        exps = None
        if pairs is not None:
            def chunk(_, xs):  # the expression of slot_sums: the same rounding
                i, j, beta, shift, mask = xs
                x = beta * (c[i] * c[j] + s[i] * s[j])
                return None, mask * jnp.exp(x - shift if sur.normalisation == "softmax" else x)

            # a rolled loop: c, s enter it computed (XLA would recompute them in each gather)
            _, e = jax.lax.scan(chunk, None, edge_xs)
            exps = e.reshape(-1, e.shape[-1]), pairs.slots  # (C N, G)
        coupling = slot_sums(c, s, tab, nbr, sur.normalisation, exps)
        if u.ndim == 1:
            return input_terms(theta, u[pop][:, None], p, (c, s)) + coupling
        # R drives (M, R), system g driven by drive g mod R: the lanes seen as (N, G / R, R),
        # so the encodings of shared parameters are computed once per drive, not per system
        r = u.shape[-1]

        def split(x):  # (..., G) -> (..., G / R, R); shared (..., 1) -> (..., 1, 1)
            return x[..., None] if x.shape[-1] == 1 else x.reshape(*x.shape[:-1], -1, r)

        lanes = split(theta)
        terms = input_terms(lanes, u[pop][:, None, :], jax.tree.map(split, p),
                            (split(c), split(s)))
        return jnp.broadcast_to(terms, lanes.shape).reshape(coupling.shape) + coupling

    return f


def _lanes_fold(sur, theta0, init, update, dt, n_steps, t0, params, field, solver,
                pairs, inputs=None) -> Solution:
    """``Solution`` (y1 (N, G), acc) after ``n_steps`` steps; ``update(acc, n, theta (N, G))``."""
    if not isinstance(field, Sparse):
        raise ValueError(f"the batched path evaluates the field by surrogate.Sparse, got {field!r}")
    if not isinstance(solver, FixedStep):
        raise ValueError(f"the batched path needs a surrogate.FixedStep solver, got {solver!r}")
    if sur.normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, "
                         f"got {sur.normalisation!r}")
    rk4.check_steps(dt, n_steps)
    n, m, dtype = sur.network.n, sur.network.n_populations, sur.dtype
    params = sur.params if params is None else params
    g = batch_size(params, theta0)
    if isinstance(pairs, str):
        if pairs != "auto":
            raise ValueError(f"pairs must be 'auto', None or surrogate.EdgePairs, got {pairs!r}")
        pairs = edge_pairs(sur, params)

    def lanes(x, shape, name):  # (G, *shape) -> (*shape, G); shared leaves (*shape, 1)
        if x is None:
            return None
        if jnp.shape(x) == shape:  # broadcast inside the step: sin/cos of a shared input
            return jnp.asarray(x, dtype)[..., None]  # encoding are computed once, not G times
        return jnp.moveaxis(batch_leaf(x, shape, g, dtype, name), 0, -1)

    shapes = {"B": (m, m), "K": (m, m)}
    p = Params(**{name: lanes(getattr(params, name), shapes.get(name, (n,)), f"params.{name}")
                  for name in params.__dataclass_fields__})
    dt = jnp.asarray(dt, dtype)
    step = driven_step(_lanes_rhs(sur, p, field, pairs), dt, m, dtype, solver)
    theta0 = jnp.moveaxis(batch_leaf(theta0, (n,), g, dtype, "theta0"), 0, -1)
    if inputs is None:
        inputs = run_drive(sur, t0, dt, n_steps)
    elif not (jnp.shape(inputs)[:3] == (n_steps, 4, m) and jnp.ndim(inputs) in (3, 4)
              and (jnp.ndim(inputs) == 3 or g % jnp.shape(inputs)[3] == 0)):
        raise ValueError(f"inputs must have shape {(n_steps, 4, m)} or {(n_steps, 4, m)} + "
                         f"(R,) with R dividing the {g} systems, got {jnp.shape(inputs)}")
    return rk4.fold(step, theta0, init, update, inputs, n_steps, unroll=solver.unroll)


def fold_batch(
    sur: Surrogate,
    theta0: jax.Array,
    init,
    update: Callable,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    params: Params | None = None,
    field: Sparse = Sparse(),
    solver: FixedStep = FixedStep(),
    pairs: EdgePairs | str | None = None,
    inputs: jax.Array | None = None,
) -> Solution:
    """``fold`` for a batch of G systems on the shared graph of ``sur``: fold
    ``acc = update(acc, n, theta_n)`` over the states after each RK4 step, ``theta_n`` (G, N) at
    t0 + n dt, n = 1..n_steps (int32). ``theta0``, ``params`` and ``pairs`` as in
    ``simulate_batch``. ``inputs``: the drive at the four RK4 stage times of every step
    instead of ``sur``'s drive (``surrogate.rk4.stage_drive``), (n_steps, 4, M) shared or
    (n_steps, 4, M, R) for R drives, system g driven by drive g mod R (R divides G; P points
    times R drives on one set of lanes, point-major).

    Returns:
        ``Solution`` with ``y1`` (G, N) the phases at t0 + n_steps dt and ``acc``.
    """
    sol = _lanes_fold(sur, theta0, init, lambda a, i, th: update(a, i, th.T), dt, n_steps, t0,
                      params, field, solver, pairs, inputs)
    return sol.replace(y1=sol.y1.T)


def simulate_batch(
    sur: Surrogate,
    theta0: jax.Array,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    params: Params | None = None,
    means: bool = False,
    field: Sparse = Sparse(),
    solver: FixedStep = FixedStep(),
    pairs: EdgePairs | str | None = None,
) -> Solution:
    """Integrate a batch of G systems by fixed-step RK4 on the shared graph of ``sur``.

    Args:
        sur: graph, drive and normalisation shared by all systems (and their parameters when
            ``params`` is not given).
        theta0: (N,) or (G, N) initial phases, radians.
        dt: step, time units; n_steps: number of steps; t0: start time.
        params: the parameters of the G systems, each leaf per system (omega, gain (N,);
            B, K (M, M)) or batched with a leading axis G, for example
            ``sur.params.replace(B=Bs, K=Bs)``; default ``sur.params``.
        means: also return the means of cos theta and sin theta over steps 1..n_steps.
        field, solver: the slot loop's and the RK4 loop's options (``Sparse``, ``FixedStep``).
        pairs: one exponential per undirected edge instead of one per neighbour slot, the
            same numbers: ``EdgePairs`` from ``edge_pairs(sur, params)`` (under ``jit``, where
            the arrays are traced, build them outside for the parameters given here); "auto"
            builds them here when the graph and B are concrete and allow it (else per slot);
            None (the default): per slot. Faster for wide batches only (2 CPU cores: 64
            systems 1.15-1.40x, 25 systems x 3 drives under vmap 0.77x; docs/lorenz.md).

    Returns:
        ``Solution`` with ``y1`` (G, N) the phases at t0 + n_steps dt and, if asked,
        ``acc`` = ``PhaseMeans``.
    """
    if means:
        n, dtype = sur.network.n, sur.dtype
        g = batch_size(sur.params if params is None else params, theta0)
        init = (jnp.zeros((n, g), dtype), jnp.zeros((n, g), dtype))

        def update(acc, _, theta):
            return acc[0] + jnp.cos(theta), acc[1] + jnp.sin(theta)
    else:
        init = ()

        def update(acc, _, theta):
            return acc

    sol = _lanes_fold(sur, theta0, init, update, dt, n_steps, t0, params, field, solver,
                      pairs)
    acc = PhaseMeans(sol.acc[0].T / n_steps, sol.acc[1].T / n_steps) if means else None
    return Solution(y1=sol.y1.T, acc=acc)
