"""Fused GPU kernel for batches of fixed-step RK4 solves: the whole time loop in one Pallas
kernel, each program keeping its grid points' state on chip (registers and L1).

``fused_simulate(sur, theta0, dt=..., n_steps=..., params=...)`` integrates a batch of G systems
that share a graph, a drive and a normalisation but not their parameters (a sweep over B, K,
omega, gains, anchoring), with the RK4 scheme of ``surrogate.rk4`` (``simulate_batch`` is the
reference it is tested against), and returns the final phases (G, N) and, on request, the time
means of cos theta and sin theta over the states after steps 1..n_steps (readout features).

A program integrates GB grid points held on the lanes (last axis) of its tiles; rows
(oscillators, population-padded order) are processed in chunks of RC rows of one population,
against D neighbour slots per column population, as 3-d (RC, D, GB) tiles, so that one register
layout serves the whole stage. cos and sin of each stage's input are written to a per-program
scratch in device memory (L1-resident) and gathered back, contiguous along the lanes; one
barrier per stage (two buffers). One exp per pair (computed as 2^x, by the single instruction
ex2.approx on GPU); the graph is carried as exponent biases (0 on an edge, -inf elsewhere); K is
applied after the row sums; the per-oscillator terms are ``surrogate.model.input_terms``.

Measured on one H100 (JAX 0.11.2, 64 x 64 grid, 1000 steps, the paper's graph, before input
anchoring): 16 points x 4 warps, 16-row chunks 0.245 s, the fastest of four variants tried
(a 2-d-tile version 0.29 s, one point per program 0.69 s, masked dense blocks 1.5 s; the
plain-JAX fast sparse path 0.46 s; docs/performance.md). It agreed with the fast path to
5e-7..1e-6 in sin(theta) after 200 float32 steps (no matmul, so no TF32).

GPU: Triton backend of ``jax.experimental.pallas``. Elsewhere ``interpret=True`` runs the same
kernel in the Pallas interpreter (the tests). The graph is static: it is laid out on the host
when the kernel is built. Imported on first use of ``surrogate.fused_simulate``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from surrogate import rk4
from surrogate.batch import PhaseMeans, batch_leaf, batch_size
from surrogate.integrate import run_drive
from surrogate.model import NORMALISATIONS, Params, Surrogate, input_terms
from surrogate.rk4 import Solution

__all__ = ["fused_simulate"]


def _pow2(n: int, least: int = 1) -> int:
    return max(least, 1 << max(int(n) - 1, 0).bit_length())


def _exp2(x, approx: bool):
    """2^x; on GPU in float32 by the single instruction ex2.approx (about 2 ulp; flushes
    subnormal results to 0)."""
    if approx and x.dtype == jnp.float32:
        return plgpu.elementwise_inline_asm(
            "ex2.approx.ftz.f32 $0, $1;", args=[x], constraints="=f,f", pack=1,
            result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])[0]
    return jnp.exp2(x)


def _combine(c, s, z, sw, cw, norm, deg):
    """Coupling c_i sum_j w sj - s_i sum_j w cj with the normalisation's Z."""
    coupling = c * sw - s * cw
    if norm == "softmax":
        return coupling / jnp.where(z > 0, z, 1)
    if norm == "mean":
        return coupling / deg
    return coupling


def _lanes_layout(adj: np.ndarray, pop: np.ndarray, m: int, rc: int):
    """Host-side layout of the static graph: population-padded rows (oscillator k of population
    a at a * P + k, P a power of two) in chunks of ``rc`` rows of one population; D slots per row
    and column population b holding padded column positions, with exponent biases (0 on an
    edge, -inf elsewhere, so exp2(beta' cos + bias - shift') is the masked numerator)."""
    members = [np.flatnonzero(pop == a) for a in range(m)]
    p = _pow2(max(len(x) for x in members), max(16, rc))
    r = m * p
    pos = np.empty(len(pop), np.int64)
    for a, mem in enumerate(members):
        pos[mem] = a * p + np.arange(len(mem))
    chunks = np.array([a * p + q * rc for a in range(m) for q in range(p // rc)
                       if q * rc < len(members[a])], np.int32)
    nbrs = [[pos[np.flatnonzero(adj[i] & (pop == b))] for i in range(len(pop))] for b in range(m)]
    d = _pow2(max(len(x) for row in nbrs for x in row), 2)
    idx = np.zeros((m, r, d), np.int32)
    bias = np.full((m, r, d), -np.inf, np.float32)
    for b in range(m):
        for i, js in enumerate(nbrs[b]):
            idx[b, pos[i], : len(js)] = js
            bias[b, pos[i], : len(js)] = 0
    deg = np.ones((r, 1), np.float32)
    dd = adj.sum(1)
    deg[pos, 0] = np.where(dd > 0, dd, 1)
    blocks = tuple(b for b in range(m) if np.isfinite(bias[b]).any())
    return p, r, d, pos, chunks, idx.reshape(m * r, d), bias.reshape(m * r, d), deg, blocks


def _kernel(th0_ref, local_ref, coef_ref, idx_ref, bias_ref, deg_ref, chunk_ref, u_ref,
            *out_refs, m, p, r, d, rc, blocks, norm, n_steps, dt, means, approx, barrier,
            anchored, reduce_once=False):
    """Program: GB grid points on the lanes. Every value is a 3-d tile (RC, 1 | D, GB) loaded
    and stored through flat addresses, with keepdims reductions. Flat refs: th0 (R GB,);
    local (L R GB,): omega, gain and (``anchored``) anchor, encoding gain, offset; coef (C GB,):
    log2(e) B (M M), K (M M), log2(e) shift (M); idx/bias (M R D,) slots, idx = GB x padded
    column; deg (R,); chunk (NC,) first rows of the row chunks; u (4 n_steps + 4, M). Outputs:
    theta (R GB,), means (R GB,) (their accumulators), scratch (5 R GB,): cos and sin of the
    stage input in two buffers, and the RK4 sum. ``reduce_once``: the column populations'
    tiles are summed (K applied per pair) before one reduction over the slots."""
    th_ref, scratch = out_refs[0], out_refs[-1]
    gb = th0_ref.shape[0] // r
    n_chunks = chunk_ref.shape[0]
    lanes = jnp.arange(gb, dtype=jnp.int32)[None, None, :]  # (1, 1, GB)
    rows = jnp.arange(rc, dtype=jnp.int32)[:, None, None]  # (RC, 1, 1)
    slots = jnp.arange(d, dtype=jnp.int32)[None, :, None]  # (1, D, 1)
    offs = rows * gb + lanes  # (RC, 1, GB)
    total_slab = 4
    dtype = th0_ref.dtype
    stage_dt = [np.asarray(dt, dtype) * np.asarray(a, dtype) for a in rk4.STAGE_A]
    weights = [np.asarray(x, dtype) for x in rk4.WEIGHTS[0]]
    final_dt = np.asarray(dt, dtype) / np.asarray(rk4.WEIGHTS[1], dtype)

    def at(row0, k=0):  # flat addresses (RC, 1, GB) of rows row0.. of slab k
        return offs + (k * r + row0) * gb

    def coef(k):  # (1, 1, GB)
        return coef_ref[lanes + k * gb]

    def local(here):  # the per-oscillator parameters of the rows at ``here``
        names = ("omega", "gain") + (("anchor", "encoding_gain", "encoding_offset")
                                     if anchored else ())
        vals = {name: local_ref[here + k * r * gb] for k, name in enumerate(names)}
        return Params(B=None, K=None, **vals)

    def sync():
        if barrier:
            plgpu.debug_barrier()

    def init(ci, carry):
        row0 = chunk_ref[ci]
        th = th0_ref[at(row0)]
        th_ref[at(row0)] = th
        c, s = jnp.cos(th), jnp.sin(th)
        scratch[at(row0, 0)] = c
        scratch[at(row0, 1)] = s
        if means:  # accumulators of cos, sin over steps 0..n-1, less step 0, plus step n at the end
            out_refs[1][at(row0)] = -c
            out_refs[2][at(row0)] = -s
        return carry

    def stage(j, uvals):
        rb, wb = 2 * (j % 2), 2 * ((j + 1) % 2)  # slabs read (stage input) and written (next)

        def body(ci, carry):
            row0 = chunk_ref[ci]
            a = row0 // p
            c = scratch[at(row0, rb)]
            s = scratch[at(row0, rb + 1)]
            zero = jnp.zeros_like(c)
            z, sw, cw = zero, zero, zero
            tiles = None
            for b in blocks:
                t = (rows + (b * r + row0)) * d + slots  # (RC, D, 1)
                addr = idx_ref[t] + lanes + rb * r * gb  # (RC, D, GB)
                cj = scratch[addr]
                sj = scratch[addr + r * gb]
                arg = coef(a * m + b) * (c * cj + s * sj) + bias_ref[t]
                if norm == "softmax":
                    arg = arg - coef(2 * m * m + a)
                e = _exp2(arg, approx)
                kappa = coef(m * m + a * m + b)
                if reduce_once:
                    w = kappa * e
                    new = (e, w * sj, w * cj)
                    tiles = (new if tiles is None
                             else tuple(x + y for x, y in zip(tiles, new, strict=False)))
                    continue
                if norm == "softmax":
                    z = z + jnp.sum(e, axis=1, keepdims=True)
                sw = sw + kappa * jnp.sum(e * sj, axis=1, keepdims=True)
                cw = cw + kappa * jnp.sum(e * cj, axis=1, keepdims=True)
            if tiles is not None:
                if norm == "softmax":
                    z = jnp.sum(tiles[0], axis=1, keepdims=True)
                sw = jnp.sum(tiles[1], axis=1, keepdims=True)
                cw = jnp.sum(tiles[2], axis=1, keepdims=True)
            u = uvals[0]
            for k in range(1, m):
                u = jnp.where(a == k, uvals[k], u)
            deg = deg_ref[rows + row0] if norm == "mean" else None
            here = at(row0)
            theta = th_ref[here]
            f = (input_terms(None, u.astype(dtype), local(here), (c, s))
                 + _combine(c, s, z, sw, cw, norm, deg))
            if j == 0:
                total = weights[0] * f
                if means:
                    out_refs[1][here] = out_refs[1][here] + c
                    out_refs[2][here] = out_refs[2][here] + s
            else:
                total = scratch[at(row0, total_slab)] + weights[j] * f
            if j < 3:
                scratch[at(row0, total_slab)] = total
                y = theta + stage_dt[j + 1] * f
            else:
                y = theta + final_dt * total
                th_ref[here] = y
            scratch[at(row0, wb)] = jnp.cos(y)
            scratch[at(row0, wb + 1)] = jnp.sin(y)
            return carry

        jax.lax.fori_loop(0, n_chunks, body, 0)
        sync()

    def step(n, carry):
        for j in range(4):
            stage(j, [u_ref[4 * n + j, a] for a in range(m)])
        return carry

    jax.lax.fori_loop(0, n_chunks, init, 0)
    sync()
    jax.lax.fori_loop(0, n_steps, step, 0)
    if means:
        def finish(ci, carry):
            row0 = chunk_ref[ci]
            here = at(row0)
            out_refs[1][here] = (out_refs[1][here] + scratch[at(row0, 0)]) / n_steps
            out_refs[2][here] = (out_refs[2][here] + scratch[at(row0, 1)]) / n_steps
            return carry

        jax.lax.fori_loop(0, n_chunks, finish, 0)


def fused_simulate(
    sur: Surrogate,
    theta0: jax.Array,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    params: Params | None = None,
    means: bool = False,
    points_per_program: int = 16,
    num_warps: int | None = None,
    rows_per_chunk: int = 16,
    reduce_once: bool = False,
    approx_exp: bool = True,
    interpret: bool = False,
) -> Solution:
    """Integrate a batch of G systems by RK4 in one kernel (``simulate_batch`` on a GPU).

    Args:
        sur: graph, drive and normalisation shared by all systems (and their parameters when
            ``params`` is not given). The graph must be concrete (it is laid out on the host).
        theta0: (N,) or (G, N) initial phases, radians.
        dt: step, time units (a Python number: it is compiled in); n_steps: number of steps;
            t0: start time.
        params: the parameters of the G systems, each leaf per system (omega, gain, anchoring
            (N,); B, K (M, M)) or batched with a leading axis G, for example
            ``sur.params.replace(B=Bs, K=Bs)``; default ``sur.params``.
        means: also return the means of cos theta and sin theta over steps 1..n_steps.
        points_per_program: grid points per kernel program (on the lanes), a power of two.
        num_warps: Triton warps per program (default: Triton's choice, 4).
        rows_per_chunk: rows per tile (a power of two).
        reduce_once: sum the column populations' tiles before a single reduction over the
            slots (fewer cross-thread reductions, one more multiply per pair).
        approx_exp: on GPU in float32, exp by the ex2.approx instruction (about 2 ulp) rather
            than libdevice's expf.
        interpret: run in the Pallas interpreter (any backend; slow, for tests).

    Returns:
        ``Solution`` with ``y1`` (G, N) the phases at t0 + n_steps dt and, if asked,
        ``acc`` = ``PhaseMeans``.
    """
    if sur.normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, "
                         f"got {sur.normalisation!r}")
    rk4.check_steps(dt, n_steps)
    pp = points_per_program
    for name, value in (("points_per_program", pp), ("rows_per_chunk", rows_per_chunk)):
        if not isinstance(value, (int, np.integer)) or value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value!r}")
    if num_warps is not None and num_warps not in (1, 2, 4, 8, 16):
        raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16, got {num_warps!r}")
    if not isinstance(dt, (int, float)):
        raise ValueError(f"dt must be a Python number (it is compiled in), got {type(dt)}")
    net = sur.network
    n, m, dtype = net.n, net.n_populations, sur.dtype
    try:
        adj = np.asarray(net.adjacency) > 0
        pop = np.asarray(net.population)
    except jax.errors.TracerArrayConversionError as err:
        raise ValueError("fused_simulate needs a concrete graph (network arrays are traced); "
                         "batch the parameters instead of vmapping over networks") from err
    params = sur.params if params is None else params
    g = batch_size(params, theta0)
    gp = -(-g // pp) * pp  # padded to whole programs (copies of the last point)

    def batched(x, shape, name):
        x = batch_leaf(x, shape, g, dtype, name)
        return jnp.concatenate([x, jnp.repeat(x[-1:], gp - g, 0)]) if gp > g else x

    B = batched(params.B, (m, m), "params.B")
    K = batched(params.K, (m, m), "params.K")
    log2e = float(np.log2(np.e))
    shift = log2e * jnp.max(jnp.abs(B), axis=2)  # (G, M): as the model, cancels in the softmax
    u = run_drive(sur, t0, jnp.asarray(dt, dtype), n_steps)
    u = jnp.zeros((4 * n_steps, m), dtype) if u is None else u.reshape(4 * n_steps, m)
    u = jnp.pad(u, ((0, 4), (0, 0)))  # a spare step
    p, r, d, pos, chunks, idx, bias, deg, blocks = _lanes_layout(adj, pop, m, rows_per_chunk)
    nprog = gp // pp

    def flat(x):  # (G, N) -> (G/GB R GB,): per program, population-padded rows x lanes
        x = jnp.zeros((gp, r), dtype).at[:, pos].set(x)
        return x.reshape(nprog, pp, r).transpose(0, 2, 1).reshape(-1)

    def unflat(x):
        return x.reshape(nprog, r, pp).transpose(0, 2, 1).reshape(gp, r)[:g, pos]

    names = ["omega", "gain"] + (["anchor", "encoding_gain", "encoding_offset"]
                                 if params.anchored else [])
    local = jnp.stack([flat(batched(getattr(params, x), (n,), f"params.{x}")) for x in names])
    local = local.reshape(len(names), nprog, r * pp).transpose(1, 0, 2).reshape(-1)
    coef = jnp.concatenate([log2e * B.reshape(gp, m * m), K.reshape(gp, m * m), shift], 1)
    c_rows = _pow2(coef.shape[1])
    coef = jnp.pad(coef, ((0, 0), (0, c_rows - coef.shape[1])))
    coef = coef.reshape(nprog, pp, c_rows).transpose(0, 2, 1).reshape(-1)
    kernel = functools.partial(
        _kernel, m=m, p=p, r=r, d=d, rc=rows_per_chunk, blocks=blocks, norm=sur.normalisation,
        n_steps=int(n_steps), dt=float(dt), means=means, approx=approx_exp and not interpret,
        barrier=not interpret, anchored=params.anchored, reduce_once=reduce_once)
    knobs = dict(num_stages=1)  # no software pipelining of the time loop
    if num_warps is not None:
        knobs["num_warps"] = num_warps
    block = pl.BlockSpec((r * pp,), lambda i: (i,))
    out = pl.pallas_call(
        kernel,
        grid=(nprog,),
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(**knobs),
        out_shape=[jax.ShapeDtypeStruct((gp * r,), dtype)] * (3 if means else 1)
        + [jax.ShapeDtypeStruct((gp * 5 * r,), dtype)],
        in_specs=[block, pl.BlockSpec((len(names) * r * pp,), lambda i: (i,)),
                  pl.BlockSpec((c_rows * pp,), lambda i: (i,))] + [pl.no_block_spec] * 5,
        out_specs=[block] * (3 if means else 1) + [pl.BlockSpec((pp * 5 * r,), lambda i: (i,))],
    )(flat(batched(theta0, (n,), "theta0")), local, coef, jnp.asarray(idx * pp).reshape(-1),
      jnp.asarray(bias, dtype).reshape(-1), jnp.asarray(deg, dtype).reshape(-1),
      jnp.asarray(chunks), u)
    out = [unflat(x) for x in out[:-1]]
    return Solution(y1=out[0], acc=PhaseMeans(*out[1:]) if means else None)
