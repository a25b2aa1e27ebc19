"""Fused GPU kernel for batches of fixed-step RK4 solves (issue 5): the whole time loop in one
Pallas kernel, each program keeping its grid points' state on chip (registers and L1).

``fused_simulate(sur, theta0, dt=..., n_steps=..., params=...)`` integrates a batch of G systems
that share a graph, a drive and a normalisation but not their parameters (a sweep over B, K,
omega, gains), with the classic RK4 scheme of ``simulate(path="fast")`` (the reference it is
tested against), and returns the final phases (G, N) and, on request, the time means of cos theta
and sin theta over the states after steps 1..n_steps (readout features).

All variants use cos(tj - ti) = cj ci + sj si and sin(tj - ti) = sj ci - cj si (one exp per pair,
computed as 2^x, by the single instruction ex2.approx on GPU), carry the graph as exponent biases
(0 on an edge, -inf elsewhere) and apply K after the row sums:

* ``"lanes3d"`` (default), ``"lanes"``: a program integrates GB grid points held on the lanes
  (last axis) of its tiles; rows (oscillators, population-padded order) are processed in chunks
  of RC rows of one population, against D neighbour slots per column population, (RC, D, GB)
  tiles. cos and sin of each stage's input are written to a per-program scratch in device memory
  (L1-resident) and gathered back, contiguous along the lanes; one barrier per stage (two
  buffers). "lanes3d" keeps every value 3-d so one register layout serves the whole stage.
* ``"gather"``: the same neighbour slots with one (or a few) points per program.
* ``"dense"``: one (or a few) points per program, every population padded to P = 2^k and the
  (N, N) pair tile split into M x M masked blocks (P, P) of constant B and K.

Measured on one H100 (JAX 0.11.2, 64 x 64 grid, 1000 steps, the paper's graph): lanes3d 16
points x 4 warps, 16-row chunks 0.245 s; lanes 0.29 s; gather 0.69 s; dense 1.5 s; plain-JAX
fast sparse path 0.46 s. All agree with the fast path to 5e-7..1e-6 in sin(theta) after 200
float32 steps (no matmul, so no TF32).

GPU: Triton backend of ``jax.experimental.pallas``. Elsewhere ``interpret=True`` runs the same
kernel in the Pallas interpreter (the tests). The graph is static: it is laid out on the host
when the kernel is built.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from surrogate.integrate import _stage_drive
from surrogate.model import NORMALISATIONS, Params, Surrogate

__all__ = ["FusedRun", "fused_simulate", "VARIANTS"]

VARIANTS = ("dense", "gather", "lanes", "lanes3d")

#: RK4 stage coefficients and weights, as in surrogate.integrate.
_A = (None, 0.5, 0.5, 1.0)  # stage j > 0 evaluates at theta + dt * _A[j] * k_{j-1}
_W = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


@struct.dataclass
class FusedRun:
    """Result of ``fused_simulate``: ``theta`` (G, N) phases at t0 + n_steps dt, radians, not
    wrapped; ``mean_cos``, ``mean_sin`` (G, N) means over the states after steps 1..n_steps, or
    None when not requested."""

    theta: jax.Array
    mean_cos: jax.Array | None = None
    mean_sin: jax.Array | None = None


def _pow2(n: int, least: int = 1) -> int:
    return max(least, 1 << max(int(n) - 1, 0).bit_length())


# --------------------------------------------------------------------------------------------
# Host-side layouts of the static graph. Edges are carried as exponent biases: 0 on an edge,
# -inf elsewhere, so that exp2(beta' cos + bias - shift') is the masked attention numerator.


def _dense_layout(adj: np.ndarray, pop: np.ndarray, m: int):
    """Population-padded order: oscillator members[a][r] sits at a * P + r."""
    members = [np.flatnonzero(pop == a) for a in range(m)]
    p = _pow2(max(len(x) for x in members), 16)
    pos = np.empty(len(pop), np.int64)
    for a, mem in enumerate(members):
        pos[mem] = a * p + np.arange(len(mem))
    edge = np.zeros((m, m, p, p), bool)
    for a in range(m):
        for b in range(m):
            edge[a, b, : len(members[a]), : len(members[b])] = adj[np.ix_(members[a], members[b])]
    deg = np.ones((m, p), np.float32)  # "mean": Z = degree, 1 where there is none (as the model)
    for a in range(m):
        d = adj[members[a]].sum(1)
        deg[a, : len(d)] = np.where(d > 0, d, 1)
    blocks = tuple((a, b) for a in range(m) for b in range(m) if edge[a, b].any())
    bias = np.where(edge, 0.0, -np.inf).astype(np.float32).reshape(m * m * p, p)
    return p, pos, bias, deg, blocks


def _gather_layout(adj: np.ndarray, pop: np.ndarray, m: int):
    """Rows in the original order padded to R = 2^k; D slots per row and column population b."""
    n = len(pop)
    r = _pow2(n, 16)
    nbrs = [[np.flatnonzero(adj[i] & (pop == b)) for i in range(n)] for b in range(m)]
    d = _pow2(max(len(x) for row in nbrs for x in row), 2)
    idx = np.zeros((m, r, d), np.int32)
    bias = np.full((m, r, d), -np.inf, np.float32)
    for b in range(m):
        for i, js in enumerate(nbrs[b]):
            idx[b, i, : len(js)] = js
            bias[b, i, : len(js)] = 0
    deg = np.ones((r,), np.float32)
    dd = adj.sum(1)
    deg[:n] = np.where(dd > 0, dd, 1)
    blocks = tuple(b for b in range(m) if np.isfinite(bias[b]).any())
    return r, d, idx.reshape(m * r, d), bias.reshape(m * r, d), deg, blocks


# --------------------------------------------------------------------------------------------
# Kernels. Refs are blocks of ``pp`` grid points; every value carries that leading axis.


def _exp2(x, approx: bool):
    """2^x; on GPU in float32 by the single instruction ex2.approx (about 2 ulp; flushes
    subnormal results to 0)."""
    if approx and x.dtype == jnp.float32:
        return plgpu.elementwise_inline_asm(
            "ex2.approx.ftz.f32 $0, $1;", args=[x], constraints="=f,f", pack=1,
            result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])[0]
    return jnp.exp2(x)


def _rk4_loop(field, theta, u_ref, m, n_steps, dt, means):
    """fori_loop of RK4 steps over a list of phase blocks. ``field(ys, u, j) -> (ks, cs, ss)``
    with u the M drive values of stage j and cs, ss cos and sin of ys (reused for the means). The
    drive values of step n + 1 are loaded during step n (u_ref has a spare last step)."""

    def load(n):
        return [u_ref[4 * n + j, a] for j in range(4) for a in range(m)]

    def step(n, carry):
        th, acc_c, acc_s, u = carry
        u_next = load(n + 1)
        ks, cs, ss = field(th, u[:m], 0)
        if means:
            acc_c = [x + c for x, c in zip(acc_c, cs)]
            acc_s = [x + s for x, s in zip(acc_s, ss)]
        total = [_W[0] * k for k in ks]
        for j in (1, 2, 3):
            ys = [t + dt * (_A[j] * k) for t, k in zip(th, ks)]
            ks = field(ys, u[j * m:(j + 1) * m], j)[0]
            total = [x + _W[j] * k for x, k in zip(total, ks)]
        return [t + dt * x for t, x in zip(th, total)], acc_c, acc_s, u_next

    zeros = [jnp.zeros_like(t) for t in theta]
    return jax.lax.fori_loop(0, n_steps, step, (theta, zeros, list(zeros), load(0)))[:3]


def _combine(c, s, z, sw, cw, norm, deg):
    """Coupling c_i sum_j w sj - s_i sum_j w cj with the normalisation's Z."""
    coupling = c * sw - s * cw
    if norm == "softmax":
        return coupling / jnp.where(z > 0, z, 1)
    if norm == "mean":
        return coupling / deg
    return coupling


def _dense_kernel(th_ref, om_ref, g_ref, coef_ref, bias_ref, deg_ref, u_ref, *out_refs,
                  m, p, blocks, norm, n_steps, dt, means, hoist, approx):
    """Program: pp grid points; th/om/g (pp, M P); coef (pp, C) = [log2(e) B (M M), K (M M),
    log2(e) shift (M)]; bias (M M P, P); deg (M, P); u (4 n_steps + 4, M) drive per stage;
    outputs (pp, M P)."""
    dtype = th_ref.dtype
    sl = [slice(a * p, (a + 1) * p) for a in range(m)]
    theta = [th_ref[:, s] for s in sl]
    omega = [om_ref[:, s] for s in sl]
    gain = [g_ref[:, s] for s in sl]
    beta = {ab: coef_ref[:, ab[0] * m + ab[1]][:, None, None] for ab in blocks}
    kappa = {ab: coef_ref[:, m * m + ab[0] * m + ab[1]][:, None] for ab in blocks}
    shift = [coef_ref[:, 2 * m * m + a][:, None, None] if norm == "softmax" else None
             for a in range(m)]
    deg = [deg_ref[a, :][None] for a in range(m)] if norm == "mean" else [None] * m

    def bias(a, b):  # (pp | 1, P, P): edge bias less the row's softmax shift
        k = a * m + b
        x = bias_ref[k * p:(k + 1) * p, :][None]
        return x - shift[a] if norm == "softmax" else x

    tables = {ab: bias(*ab) for ab in blocks} if hoist else None

    def field(ys, u, j):
        del j
        cs = [jnp.cos(y) for y in ys]
        ss = [jnp.sin(y) for y in ys]
        ks = []
        for a in range(m):
            zero = jnp.zeros_like(ys[a])
            z, sw, cw = zero, zero, zero
            for b in range(m):
                if (a, b) not in blocks:
                    continue
                cj, sj = cs[b][:, None, :], ss[b][:, None, :]
                arg = beta[a, b] * (cs[a][:, :, None] * cj + ss[a][:, :, None] * sj)
                e = _exp2(arg + (tables[a, b] if hoist else bias(a, b)), approx)
                if norm == "softmax":
                    z = z + jnp.sum(e, axis=-1)
                sw = sw + kappa[a, b] * jnp.sum(e * sj, axis=-1)
                cw = cw + kappa[a, b] * jnp.sum(e * cj, axis=-1)
            drive = gain[a] * u[a].astype(dtype)
            ks.append(omega[a] + drive + _combine(cs[a], ss[a], z, sw, cw, norm, deg[a]))
        return ks, cs, ss

    th, acc_c, acc_s = _rk4_loop(field, theta, u_ref, m, n_steps, dt, means)
    for a in range(m):
        out_refs[0][:, sl[a]] = th[a]
        if means:
            out_refs[1][:, sl[a]] = (acc_c[a] + jnp.cos(th[a]) - jnp.cos(theta[a])) / n_steps
            out_refs[2][:, sl[a]] = (acc_s[a] + jnp.sin(th[a]) - jnp.sin(theta[a])) / n_steps


def _gather_kernel(th_ref, om_ref, gp_ref, brow_ref, krow_ref, shift_ref, idx_ref, bias_ref,
                   deg_ref, u_ref, *out_refs, m, r, blocks, norm, n_steps, dt, means, hoist,
                   approx, barrier):
    """Program: pp grid points; th/om/shift (pp, R); gp/brow/krow (pp, M R): gain_i [sigma(i) =
    a], log2(e) B[sigma(i), b], K[sigma(i), b]; idx/bias (M R, D) neighbour slots per column
    population; deg (1, R); u (4 n_steps + 4, M); outputs (pp, R), the last one the scratch
    (4 pp R,) through which cos and sin are gathered."""
    dtype = th_ref.dtype
    scratch = out_refs[-1]
    pp = th_ref.shape[0]
    theta = th_ref[...]
    omega = om_ref[...]
    gpop = [gp_ref[:, a * r:(a + 1) * r] for a in range(m)]
    brow = {b: brow_ref[:, b * r:(b + 1) * r][:, :, None] for b in blocks}
    krow = {b: krow_ref[:, b * r:(b + 1) * r] for b in blocks}
    shift = shift_ref[...][:, :, None] if norm == "softmax" else None
    base = (jnp.arange(pp, dtype=jnp.int32) * (4 * r))[:, None]  # (pp, 1) flat scratch offsets
    rows = base + jnp.arange(r, dtype=jnp.int32)[None, :]  # (pp, R)
    deg = deg_ref[...] if norm == "mean" else None

    def slots(b):  # flat scratch index (pp, R, D) and bias less the shift (pp | 1, R, D)
        x = bias_ref[b * r:(b + 1) * r, :][None]
        return (base[:, :, None] + idx_ref[b * r:(b + 1) * r, :][None],
                x - shift if norm == "softmax" else x)

    tables = {b: slots(b) for b in blocks} if hoist else None

    def field(ys, u, j):
        (y,) = ys
        c, s = jnp.cos(y), jnp.sin(y)
        off = (j % 2) * (2 * r)  # two buffers: one barrier per stage suffices
        scratch[rows + off] = c
        scratch[rows + (off + r)] = s
        if barrier:
            plgpu.debug_barrier()
        zero = jnp.zeros_like(y)
        z, sw, cw = zero, zero, zero
        for b in blocks:
            gidx, bias = tables[b] if hoist else slots(b)
            cj = scratch[gidx + off]
            sj = scratch[gidx + (off + r)]
            arg = brow[b] * (c[:, :, None] * cj + s[:, :, None] * sj)
            e = _exp2(arg + bias, approx)
            if norm == "softmax":
                z = z + jnp.sum(e, axis=-1)
            sw = sw + krow[b] * jnp.sum(e * sj, axis=-1)
            cw = cw + krow[b] * jnp.sum(e * cj, axis=-1)
        drive = zero
        for a in range(m):
            drive = drive + gpop[a] * u[a].astype(dtype)
        return [omega + drive + _combine(c, s, z, sw, cw, norm, deg)], [c], [s]

    (th,), (acc_c,), (acc_s,) = _rk4_loop(field, [theta], u_ref, m, n_steps, dt, means)
    out_refs[0][...] = th
    if means:
        out_refs[1][...] = (acc_c + jnp.cos(th) - jnp.cos(theta)) / n_steps
        out_refs[2][...] = (acc_s + jnp.sin(th) - jnp.sin(theta)) / n_steps


def _lanes_layout(adj: np.ndarray, pop: np.ndarray, m: int, rc: int):
    """Population-padded rows (as ``_dense_layout``) in chunks of ``rc`` rows of one population;
    D slots per row and column population b holding padded column positions."""
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


def _lanes_kernel(th0_ref, om_ref, g_ref, coef_ref, idx_ref, bias_ref, deg_ref, chunk_ref, u_ref,
                  *out_refs, m, p, r, rc, blocks, norm, n_steps, dt, means, approx, barrier):
    """Program: GB grid points on the lanes (last axis). th0/om/g (R, GB) in population-padded
    row order; coef (C, GB) rows [log2(e) B (M M), K (M M), log2(e) shift (M)]; idx/bias
    (M R, D) slots; deg (R, 1); chunk (NC,) first rows of the row chunks; u (4 n_steps + 4, M).
    Outputs: theta (R, GB) (the state itself), means (R, GB) (their accumulators), and the
    scratch (5 R GB,): cos and sin of the stage input in two buffers, and the RK4 sum.
    Each stage is a loop over row chunks, (RC, D, GB) tiles, then one barrier."""
    th_ref, scratch = out_refs[0], out_refs[-1]
    gb = th0_ref.shape[1]
    n_chunks = chunk_ref.shape[0]
    lanes = jnp.arange(gb, dtype=jnp.int32)[None, :]  # (1, GB)
    offs = jnp.arange(rc, dtype=jnp.int32)[:, None] * gb + lanes  # (RC, GB)
    total_slab = 4

    def slab(k, row0):  # flat scratch addresses (RC, GB) of rows row0.. of slab k
        return offs + (k * r + row0) * gb

    def sync():
        if barrier:
            plgpu.debug_barrier()

    def init(ci, carry):
        row0 = chunk_ref[ci]
        th = th0_ref[pl.ds(row0, rc), :]
        th_ref[pl.ds(row0, rc), :] = th
        c, s = jnp.cos(th), jnp.sin(th)
        scratch[slab(0, row0)] = c
        scratch[slab(1, row0)] = s
        if means:  # accumulators of cos, sin over steps 0..n-1, less step 0, plus step n at the end
            out_refs[1][pl.ds(row0, rc), :] = -c
            out_refs[2][pl.ds(row0, rc), :] = -s
        return carry

    def stage(j, uvals):
        rb, wb = 2 * (j % 2), 2 * ((j + 1) % 2)  # slabs read (stage input) and written (next)

        def body(ci, carry):
            row0 = chunk_ref[ci]
            a = row0 // p
            rows = pl.ds(row0, rc)
            c = scratch[slab(rb, row0)]
            s = scratch[slab(rb + 1, row0)]
            zero = jnp.zeros_like(c)
            z, sw, cw = zero, zero, zero
            for b in blocks:
                t = pl.ds(b * r + row0, rc)
                addr = (idx_ref[t, :][:, :, None] + rb * r) * gb + lanes[None]  # (RC, D, GB)
                cj = scratch[addr]
                sj = scratch[addr + r * gb]
                beta = coef_ref[pl.ds(a * m + b, 1), :][None]
                arg = beta * (c[:, None, :] * cj + s[:, None, :] * sj) + bias_ref[t, :][:, :, None]
                if norm == "softmax":
                    arg = arg - coef_ref[pl.ds(2 * m * m + a, 1), :][None]
                e = _exp2(arg, approx)
                if norm == "softmax":
                    z = z + jnp.sum(e, axis=1)
                kappa = coef_ref[pl.ds(m * m + a * m + b, 1), :]
                sw = sw + kappa * jnp.sum(e * sj, axis=1)
                cw = cw + kappa * jnp.sum(e * cj, axis=1)
            u = uvals[0]
            for k in range(1, m):
                u = jnp.where(a == k, uvals[k], u)
            deg = deg_ref[rows, :] if norm == "mean" else None
            f = (om_ref[rows, :] + g_ref[rows, :] * u.astype(c.dtype)
                 + _combine(c, s, z, sw, cw, norm, deg))
            theta = th_ref[rows, :]
            if j == 0:
                total = _W[0] * f
                if means:
                    out_refs[1][rows, :] = out_refs[1][rows, :] + c
                    out_refs[2][rows, :] = out_refs[2][rows, :] + s
            else:
                total = scratch[slab(total_slab, row0)] + _W[j] * f
            if j < 3:
                scratch[slab(total_slab, row0)] = total
                y = theta + dt * (_A[j + 1] * f)
            else:
                y = theta + dt * total
                th_ref[rows, :] = y
            scratch[slab(wb, row0)] = jnp.cos(y)
            scratch[slab(wb + 1, row0)] = jnp.sin(y)
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
            rows = pl.ds(row0, rc)
            out_refs[1][rows, :] = (out_refs[1][rows, :] + scratch[slab(0, row0)]) / n_steps
            out_refs[2][rows, :] = (out_refs[2][rows, :] + scratch[slab(1, row0)]) / n_steps
            return carry

        jax.lax.fori_loop(0, n_chunks, finish, 0)


def _lanes3d_kernel(th0_ref, om_ref, g_ref, coef_ref, idx_ref, bias_ref, deg_ref, chunk_ref,
                    u_ref, *out_refs, m, p, r, d, rc, blocks, norm, n_steps, dt, means, approx,
                    barrier, reduce_once=False):
    """``_lanes_kernel`` with every value a 3-d tile (RC, 1 | D, GB) loaded and stored through
    flat addresses, and keepdims reductions, so that one register layout serves the whole stage
    (no layout conversions between the per-row and the per-slot arithmetic). ``reduce_once``:
    the column populations' tiles are summed (K applied per pair) before one reduction over the
    slots, rather than reduced one by one. All refs are flat:
    th0/om/g (R GB,), coef (C GB,), idx/bias (M R D,) with idx = GB x padded column, deg (R,);
    outputs theta (R GB,), means (R GB,), scratch (5 R GB,)."""
    th_ref, scratch = out_refs[0], out_refs[-1]
    gb = th0_ref.shape[0] // r
    n_chunks = chunk_ref.shape[0]
    lanes = jnp.arange(gb, dtype=jnp.int32)[None, None, :]  # (1, 1, GB)
    rows = jnp.arange(rc, dtype=jnp.int32)[:, None, None]  # (RC, 1, 1)
    slots = jnp.arange(d, dtype=jnp.int32)[None, :, None]  # (1, D, 1)
    offs = rows * gb + lanes  # (RC, 1, GB)
    total_slab = 4

    def at(row0, k=0):  # flat addresses (RC, 1, GB) of rows row0.. of slab k
        return offs + (k * r + row0) * gb

    def coef(k):  # (1, 1, GB)
        return coef_ref[lanes + k * gb]

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
        if means:
            out_refs[1][at(row0)] = -c
            out_refs[2][at(row0)] = -s
        return carry

    def stage(j, uvals):
        rb, wb = 2 * (j % 2), 2 * ((j + 1) % 2)

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
                    tiles = new if tiles is None else tuple(x + y for x, y in zip(tiles, new))
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
            f = om_ref[here] + g_ref[here] * u.astype(c.dtype) + _combine(c, s, z, sw, cw, norm,
                                                                            deg)
            theta = th_ref[here]
            if j == 0:
                total = _W[0] * f
                if means:
                    out_refs[1][here] = out_refs[1][here] + c
                    out_refs[2][here] = out_refs[2][here] + s
            else:
                total = scratch[at(row0, total_slab)] + _W[j] * f
            if j < 3:
                scratch[at(row0, total_slab)] = total
                y = theta + dt * (_A[j + 1] * f)
            else:
                y = theta + dt * total
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


# --------------------------------------------------------------------------------------------
# Public entry point


def _batch(x, shape, g, dtype, name):
    x = jnp.asarray(x, dtype)
    if x.shape == shape:
        return jnp.broadcast_to(x, (g,) + shape)
    if x.shape == (g,) + shape:
        return x
    raise ValueError(f"{name} must have shape {shape} or ({g},) + {shape}, got {x.shape}")


def _batch_size(params: Params, theta0) -> int:
    sizes = set()
    for name, x, base in (("params.omega", params.omega, 1), ("params.gain", params.gain, 1),
                          ("params.B", params.B, 2), ("params.K", params.K, 2),
                          ("theta0", theta0, 1)):
        shape = jnp.shape(x)
        if len(shape) == base + 1:
            sizes.add(shape[0])
        elif len(shape) != base:
            raise ValueError(f"{name} must have {base} or {base + 1} (batched) axes, "
                             f"got shape {shape}")
    if len(sizes) > 1:
        raise ValueError(f"batched parameters disagree on the batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def stage_drive(sur: Surrogate, t0, dt, n_steps: int) -> jax.Array:
    """Drive u at the four RK4 stage times of every step, (4 n_steps, M), as the fast path does
    (zeros without a drive)."""
    m = sur.network.n_populations
    u = _stage_drive(sur, t0, jnp.asarray(dt, sur.dtype), n_steps)
    return jnp.zeros((4 * n_steps, m), sur.dtype) if u is None else u.reshape(4 * n_steps, m)


def fused_simulate(
    sur: Surrogate,
    theta0: jax.Array,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    params: Params | None = None,
    means: bool = False,
    variant: str = "lanes3d",
    points_per_program: int | None = None,
    num_warps: int | None = None,
    hoist: bool = True,
    rows_per_chunk: int = 16,
    reduce_once: bool = False,
    approx_exp: bool = True,
    interpret: bool = False,
) -> FusedRun:
    """Integrate a batch of G systems by RK4 (``simulate(path="fast")``'s scheme) in one kernel.

    Args:
        sur: graph, drive and normalisation shared by all systems (and their parameters when
            ``params`` is not given). The graph must be concrete (it is laid out on the host).
        theta0: (N,) or (G, N) initial phases, radians.
        dt: step, time units (a Python number); n_steps: number of steps; t0: start time.
        params: the parameters of the G systems, each leaf per system (omega, gain (N,);
            B, K (M, M)) or batched with a leading axis G ((G, N), (G, M, M)), for example
            ``sur.params.replace(B=Bs, K=Bs)``; default ``sur.params`` (G = 1 unless theta0 is
            batched).
        means: also return the means of cos theta and sin theta over steps 1..n_steps.
        variant: "lanes3d" (default, the fastest measured: neighbour slots, points on the
            lanes, 3-d tiles), "lanes" (the same with 2-d per-row arithmetic), "gather"
            (neighbour slots, one or a few points per program) or "dense" (masked population
            blocks, one or a few points per program).
        points_per_program: grid points per kernel program, a power of two; default 16 for the
            lanes variants, 1 otherwise.
        num_warps: Triton warps per program (default: Triton's choice, 4).
        hoist: "dense", "gather": load the per-pair tables (edge biases, slot indices) once per
            program rather than once per stage (registers against cache traffic).
        rows_per_chunk: lanes variants: rows per tile (a power of two).
        reduce_once: "lanes3d": sum the column populations' tiles before a single reduction
            over the slots (fewer cross-thread reductions, one more multiply per pair).
        approx_exp: on GPU in float32, exp by the ex2.approx instruction (about 2 ulp) rather
            than libdevice's expf.
        interpret: run in the Pallas interpreter (any backend; slow, for tests).

    Returns:
        ``FusedRun`` with ``theta`` (G, N) (and the means (G, N) if asked).
    """
    if sur.normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, "
                         f"got {sur.normalisation!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if isinstance(dt, (int, float)) and not dt > 0:
        raise ValueError(f"dt must be positive, got dt={dt!r}")
    pp = points_per_program
    if pp is None:
        pp = 16 if variant.startswith("lanes") else 1
    if not isinstance(pp, (int, np.integer)) or pp < 1 or pp & (pp - 1):
        raise ValueError(f"points_per_program must be a power of two, got {pp!r}")
    if not isinstance(rows_per_chunk, (int, np.integer)) or rows_per_chunk < 1 or (
            rows_per_chunk & (rows_per_chunk - 1)):
        raise ValueError(f"rows_per_chunk must be a power of two, got {rows_per_chunk!r}")
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
    g = _batch_size(params, theta0)
    gp = -(-g // pp) * pp  # padded to whole programs (copies of the last point)

    def batched(x, shape, name):
        x = _batch(x, shape, g, dtype, name)
        return jnp.concatenate([x, jnp.repeat(x[-1:], gp - g, 0)]) if gp > g else x

    theta0 = batched(theta0, (n,), "theta0")
    omega = batched(params.omega, (n,), "params.omega")
    gain = batched(params.gain, (n,), "params.gain")
    B = batched(params.B, (m, m), "params.B")
    K = batched(params.K, (m, m), "params.K")
    log2e = float(np.log2(np.e))
    shift = log2e * jnp.max(jnp.abs(B), axis=2)  # (G, M): as the model, cancels in the softmax
    B2 = log2e * B  # exp(B x) = 2^(B2 x)
    u = jnp.pad(stage_drive(sur, t0, dt, n_steps), ((0, 4), (0, 0)))  # spare step: prefetch
    static = dict(norm=sur.normalisation, n_steps=int(n_steps), dt=float(dt), means=means,
                  hoist=hoist, approx=approx_exp and not interpret)
    knobs = dict(num_stages=1)  # no software pipelining of the time loop (gather: in-place)
    if num_warps is not None:
        knobs["num_warps"] = num_warps
    call = functools.partial(pl.pallas_call, grid=(gp // pp,), interpret=interpret,
                             compiler_params=plgpu.CompilerParams(**knobs))

    def rows(width):
        return pl.BlockSpec((pp, width), lambda i: (i, 0))

    if variant == "dense":
        p, pos, bias, deg, blocks = _dense_layout(adj, pop, m)
        width = m * p

        def scatter(x):
            return jnp.zeros((gp, width), dtype).at[:, pos].set(x)

        coef = jnp.concatenate([B2.reshape(gp, m * m), K.reshape(gp, m * m), shift], 1)
        coef = jnp.pad(coef, ((0, 0), (0, _pow2(coef.shape[1]) - coef.shape[1])))
        kernel = functools.partial(_dense_kernel, m=m, p=p, blocks=blocks, **static)
        out = call(
            kernel,
            out_shape=[jax.ShapeDtypeStruct((gp, width), dtype)] * (3 if means else 1),
            in_specs=[rows(width)] * 3 + [rows(coef.shape[1])] + [pl.no_block_spec] * 3,
            out_specs=[rows(width)] * (3 if means else 1),
        )(scatter(theta0), scatter(omega), scatter(gain), coef, jnp.asarray(bias, dtype),
          jnp.asarray(deg, dtype), u)
        out = [x[:g, pos] for x in out]
    elif variant == "lanes":
        p, r, d, pos, chunks, idx, bias, deg, blocks = _lanes_layout(adj, pop, m, rows_per_chunk)

        def lanes_in(x):  # (G, N) -> (R, G) population-padded rows, points on the lanes
            return jnp.zeros((r, gp), dtype).at[pos, :].set(x.T)

        coef = jnp.concatenate([B2.reshape(gp, m * m), K.reshape(gp, m * m), shift], 1).T
        coef = jnp.pad(coef, ((0, _pow2(coef.shape[0]) - coef.shape[0]), (0, 0)))
        kernel = functools.partial(_lanes_kernel, m=m, p=p, r=r, rc=rows_per_chunk,
                                   blocks=blocks, barrier=not interpret,
                                   **{k: v for k, v in static.items() if k != "hoist"})
        cols = pl.BlockSpec((r, pp), lambda i: (0, i))
        out = call(
            kernel,
            out_shape=[jax.ShapeDtypeStruct((r, gp), dtype)] * (3 if means else 1)
            + [jax.ShapeDtypeStruct((gp * 5 * r,), dtype)],
            in_specs=[cols] * 3 + [pl.BlockSpec((coef.shape[0], pp), lambda i: (0, i))]
            + [pl.no_block_spec] * 5,
            out_specs=[cols] * (3 if means else 1) + [pl.BlockSpec((pp * 5 * r,),
                                                                   lambda i: (i,))],
        )(lanes_in(theta0), lanes_in(omega), lanes_in(gain), coef, jnp.asarray(idx),
          jnp.asarray(bias, dtype), jnp.asarray(deg, dtype), jnp.asarray(chunks), u)
        out = [x[pos, :g].T for x in out[:-1]]
    elif variant == "lanes3d":
        p, r, d, pos, chunks, idx, bias, deg, blocks = _lanes_layout(adj, pop, m, rows_per_chunk)
        nprog = gp // pp

        def flat(x):  # (G, N) -> (G/GB R GB,): per program, population-padded rows x lanes
            x = jnp.zeros((gp, r), dtype).at[:, pos].set(x)
            return x.reshape(nprog, pp, r).transpose(0, 2, 1).reshape(-1)

        def unflat(x):
            return x.reshape(nprog, r, pp).transpose(0, 2, 1).reshape(gp, r)[:g, pos]

        coef = jnp.concatenate([B2.reshape(gp, m * m), K.reshape(gp, m * m), shift], 1)
        c_rows = _pow2(coef.shape[1])
        coef = jnp.pad(coef, ((0, 0), (0, c_rows - coef.shape[1])))
        coef = coef.reshape(nprog, pp, c_rows).transpose(0, 2, 1).reshape(-1)
        kernel = functools.partial(_lanes3d_kernel, m=m, p=p, r=r, d=d, rc=rows_per_chunk,
                                   blocks=blocks, barrier=not interpret, reduce_once=reduce_once,
                                   **{k: v for k, v in static.items() if k != "hoist"})
        block = pl.BlockSpec((r * pp,), lambda i: (i,))
        out = call(
            kernel,
            out_shape=[jax.ShapeDtypeStruct((gp * r,), dtype)] * (3 if means else 1)
            + [jax.ShapeDtypeStruct((gp * 5 * r,), dtype)],
            in_specs=[block] * 3 + [pl.BlockSpec((c_rows * pp,), lambda i: (i,))]
            + [pl.no_block_spec] * 5,
            out_specs=[block] * (3 if means else 1) + [pl.BlockSpec((pp * 5 * r,),
                                                                    lambda i: (i,))],
        )(flat(theta0), flat(omega), flat(gain), coef, jnp.asarray(idx * pp).reshape(-1),
          jnp.asarray(bias, dtype).reshape(-1), jnp.asarray(deg, dtype).reshape(-1),
          jnp.asarray(chunks), u)
        out = [unflat(x) for x in out[:-1]]
    else:
        r, d, idx, bias, deg, blocks = _gather_layout(adj, pop, m)
        onehot = jnp.asarray(pop[None, :] == np.arange(m)[:, None], dtype)  # (M, N)

        def pad(x):  # (G, ..., N) -> (G, ..., R)
            return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, r - n)])

        gpop = pad(gain[:, None, :] * onehot[None]).reshape(gp, m * r)
        brow = pad(jnp.swapaxes(B2[:, pop, :], 1, 2)).reshape(gp, m * r)  # [g, b, i] = B2[s_i, b]
        krow = pad(jnp.swapaxes(K[:, pop, :], 1, 2)).reshape(gp, m * r)
        kernel = functools.partial(_gather_kernel, m=m, r=r, blocks=blocks,
                                   barrier=not interpret, **static)
        out = call(
            kernel,
            out_shape=[jax.ShapeDtypeStruct((gp, r), dtype)] * (3 if means else 1)
            + [jax.ShapeDtypeStruct((gp * 4 * r,), dtype)],
            in_specs=[rows(r)] * 2 + [rows(m * r)] * 3 + [rows(r)] + [pl.no_block_spec] * 4,
            out_specs=[rows(r)] * (3 if means else 1) + [pl.BlockSpec((pp * 4 * r,),
                                                                      lambda i: (i,))],
        )(pad(theta0), pad(omega), gpop, brow, krow, pad(shift[:, pop]), jnp.asarray(idx),
          jnp.asarray(bias, dtype), jnp.asarray(deg, dtype)[None], u)
        out = [x[:g, :n] for x in out[:-1]]
    return FusedRun(*out) if means else FusedRun(out[0])
