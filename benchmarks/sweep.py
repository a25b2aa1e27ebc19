"""Benchmark: the paper's (beta_self, beta_cross) sweep with every integration path, one process.

    python benchmarks/sweep.py                                   # the issue's CPU problem
    python benchmarks/sweep.py --grid 64 --steps 5000            # the issue's GPU problem
    python benchmarks/sweep.py --cpu-devices 8 --only engine     # engine on 8 simulated devices
    python benchmarks/sweep.py --grid 64 --only naive pallas --pallas 16:4:rc16  # GPU

Problem (docs/performance.md): 2 x 50 oscillators, Watts-Strogatz k = 10 inside each
modality plus 10 % random cross links, Lorenz drive (x(t) -> modality 0, y(t) -> modality 1,
standardised), RK4 dt = 0.01, ``--steps`` steps from one initial phase vector, a ``--grid`` x
``--grid`` log grid of (beta_self, beta_cross) in 1e-4..1 with K = B, float32. Every variant
returns the final phases of every point, so no trajectory is stored.

Main table, measured side by side: the naive dense baseline written here (exp, cos and sin per
pair, the four RK4 stages unrolled in ``lax.scan``), the diffrax path (``simulate(solver=
surrogate.RK4())`` with the same RK4 scheme, and with Tsit5 at a constant step), the fast path
(``simulate(solver=FixedStep())``, dense and sparse evaluations), ``simulate_batch`` (the same
sparse RK4 on the whole grid at once, points on the minor axis) and the sweep engine
(``surrogate.sweep`` over the fast sparse function, vmapped, and over ``simulate_batch`` with
``batched=True``:
chunking and sharding over all devices included) and, on a GPU (or in the Pallas interpreter
with ``--pallas-interpret``), the fused kernel ``surrogate.fused_simulate`` in the variants named
by ``--pallas`` (rows "pallas ..."; the whole grid in one kernel call, not vmapped). Each is
compiled ahead of time (compile time reported apart; the engine's is its first call minus its
second), run once to warm up (not with ``--no-warmup``), then timed (best of ``--repeats``).
"pair-evals/s" counts 4 N^2 pair evaluations per RK4 step per point (6 N^2 per Tsit5 step),
dense-equivalent, so the sparse figures compare directly; "of limit" divides it by ``--limit``
(on a GPU by default 3e12/s, the H100 figure of issue 5). Then: the engine on one device vs all
devices, and the engine's scaling with grid size and with oscillator count (``--scale-steps``
steps, since only rates are compared there). ``--check`` compares the final phases of all
variants on a short horizon, where float32 paths must agree closely (chaos amplifies rounding
on long ones).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from common import add_cpu_devices, start


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=16, help="points per axis of the main table")
    p.add_argument("--steps", type=int, default=5000, help="RK4 steps of the main table")
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-warmup", action="store_true",
                   help="time the first run of each compiled variant (long CPU runs)")
    p.add_argument("--float64", action="store_true")
    p.add_argument("--only", nargs="*", default=None,
                   help="substrings of variant names to run (naive, diffrax, dense, sparse, "
                        "engine); default all")
    add_cpu_devices(p)
    p.add_argument("--engine", choices=("batch", "fast"), default="batch",
                   help="what the sweep engine runs in the device and scaling tables: "
                        "simulate_batch (batched=True) or the vmapped fast sparse path")
    p.add_argument("--scale-grid", default="16,32,64,128",
                   help="grid sides for scaling ('' = skip)")
    p.add_argument("--scale-n", default="100,200,500,1000",
                   help="oscillator counts for scaling, two equal modalities ('' = skip)")
    p.add_argument("--scale-steps", type=int, default=500, help="steps of the scaling runs")
    p.add_argument("--scale-n-grid", type=int, default=16, help="grid side of the N scaling")
    p.add_argument("--check", type=int, default=0, metavar="STEPS",
                   help="also compare the variants' final phases after STEPS steps")
    p.add_argument("--check-tol", type=float, default=None,
                   help="fail (exit 1) if a variant differs from the reference by more")
    p.add_argument("--knobs", action="store_true",
                   help="also time the fast path with unrolled stages / several steps per loop")
    p.add_argument("--anchor", type=float, default=4.0,
                   help="anchoring strength h of every oscillator (default 4; 0: the model "
                        "without the anchoring term)")
    p.add_argument("--pallas", default=None, metavar="SPECS",
                   help="settings of the fused Pallas kernel (surrogate.kernels), comma-separated "
                        "POINTS_PER_PROGRAM:NUM_WARPS[:expf][:rcN][:r1], e.g. 16:4:rc16,8:2 "
                        "(expf: libdevice exp, not ex2.approx; rcN: N rows per tile, default "
                        "16; r1: one reduction per row chunk); default: a standard set on GPU, "
                        "none elsewhere; '' = none")
    p.add_argument("--limit", type=float, default=None, metavar="PAIRS_PER_S",
                   help="the device's pair-evaluation limit, for the 'of limit' column "
                        "(default on a GPU: 3e12, the H100's one-exp-per-pair figure of issue 5)")
    p.add_argument("--pallas-interpret", action="store_true",
                   help="run the Pallas variants in the interpreter (CPU smoke test, tiny sizes)")
    return p.parse_args(argv)


ARGS = parse_args()
start(ARGS)  # before JAX starts its backends

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import surrogate as sg  # noqa: E402
from lorenz.systems import lorenz63, rk4_trajectory  # noqa: E402

if ARGS.float64:
    jax.config.update("jax_enable_x64", True)
DTYPE = jnp.float64 if ARGS.float64 else jnp.float32


def lorenz_drive(n_steps: int, dt: float):
    """Standardised Lorenz x(t), y(t) sampled at the step times, as a linear interpolation."""
    ys = rk4_trajectory(lorenz63, jnp.ones(3, DTYPE), dt=dt, n_steps=n_steps + 1,
                        transient=2000).ys
    xy = (ys[:, :2] - ys[:, :2].mean(0)[None, :]) / ys[:, :2].std(0)[None, :]
    return sg.make_drive(dt * jnp.arange(n_steps + 2, dtype=DTYPE), xy)


def problem(sizes=(50, 50), steps=None):
    steps = steps or ARGS.steps
    sur = sg.paper_preset(jax.random.key(0), sizes=sizes, dtype=DTYPE, anchor=ARGS.anchor,
                          drive=lorenz_drive(steps, ARGS.dt))
    if ARGS.anchor == 0:  # the model without the anchoring term (and without its cost)
        sur = sg.replace(sur, anchor=None, encoding_gain=None, encoding_offset=None)
    theta0 = sg.initial_phases(jax.random.key(1), sur.network.n, DTYPE)
    return sur, theta0


def plane(side: int) -> sg.sweeping.Points:
    axis = np.logspace(-4, 0, side)
    return sg.grid(beta_self=axis, beta_cross=axis)


def naive_final(sur, theta0, steps, dt):
    """The baseline: dense coupling with exp, cos and sin per pair; RK4 stages unrolled."""
    a = sur.network.adjacency.astype(DTYPE)
    pop = sur.network.population
    stage_t = dt * jnp.arange(steps, dtype=DTYPE)[:, None] + dt * jnp.asarray(
        [0.0, 0.5, 1.0], DTYPE)
    u = jax.vmap(jax.vmap(sur.drive_at))(stage_t)  # (steps, 3, M): drive at t, t + dt/2, t + dt

    def final(b_self, b_cross):
        B = sg.block_matrix(b_self, b_cross, 2, DTYPE)
        beta = B[pop[:, None], pop[None, :]]  # K = B

        def f(theta, u_t):
            d = theta[None, :] - theta[:, None]
            e = a * jnp.exp(beta * jnp.cos(d))
            alpha = e / e.sum(-1, keepdims=True)
            p = sur.params
            out = p.omega + p.gain * u_t[pop] + jnp.sum(beta * alpha * jnp.sin(d), -1)
            if p.anchored:
                out = out + p.anchor * jnp.sin(p.encoding_gain * u_t[pop] + p.encoding_offset
                                               - theta)
            return out

        def step(theta, u3):
            k1 = f(theta, u3[0])
            k2 = f(theta + 0.5 * dt * k1, u3[1])
            k3 = f(theta + 0.5 * dt * k2, u3[1])
            k4 = f(theta + dt * k3, u3[2])
            return theta + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        return jax.lax.scan(step, theta0, u)[0]

    return final


def surrogate_final(sur, theta0, steps, dt, **opts):
    def final(b_self, b_cross):
        B = sg.block_matrix(b_self, b_cross, 2, DTYPE)
        return sg.simulate(sg.replace(sur, B=B, K=B), theta0, dt=dt, n_steps=steps,
                           save_every=steps, **opts).ys[-1]

    return final


def batch_final(sur, theta0, steps, dt):
    """Batched fn(beta_self (G,), beta_cross (G,)) -> final phases (G, N) by simulate_batch."""

    def final(b_self, b_cross):
        B = jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, DTYPE))(b_self, b_cross)
        return sg.simulate_batch(sur, theta0, params=sur.params.replace(B=B, K=B), dt=dt,
                                 n_steps=steps).y1

    final.batched = True
    return final


def engine_final(sur, theta0, steps, dt):
    """The sweep engine's per-chunk function for the tables after the main one (--engine)."""
    if ARGS.engine == "batch":
        return batch_final(sur, theta0, steps, dt)
    return surrogate_final(sur, theta0, steps, dt, field=sg.Sparse())


def variants(sur, theta0, steps, dt):
    """name -> (fn(beta_self, beta_cross) -> final phases, RK stages per step)."""
    sparse = sg.Sparse()
    rk4 = dict(solver=sg.RK4(), field=sparse)
    tsit5 = dict(solver=diffrax.Tsit5(), field=sparse)
    out = {
        "naive dense (baseline)": (naive_final(sur, theta0, steps, dt), 4),
        "diffrax RK4, sparse field": (surrogate_final(sur, theta0, steps, dt, **rk4), 4),
        "diffrax Tsit5, sparse field": (surrogate_final(sur, theta0, steps, dt, **tsit5), 6),
        "fast RK4, dense": (surrogate_final(sur, theta0, steps, dt, field=sg.Dense()), 4),
        "fast RK4, sparse": (surrogate_final(sur, theta0, steps, dt, field=sparse), 4),
        "batched RK4, sparse, points on lanes": (batch_final(sur, theta0, steps, dt), 4),
    }
    if ARGS.knobs:  # loop structure of the RK4 core: surrogate.FixedStep's options
        for label, solver in (("stages unrolled", sg.FixedStep(stage_loop=False)),
                              ("4 steps per iteration", sg.FixedStep(unroll=4)),
                              ("stages unrolled, 4 steps per iteration",
                               sg.FixedStep(stage_loop=False, unroll=4))):
            out[f"fast RK4, sparse, {label}"] = (
                surrogate_final(sur, theta0, steps, dt, field=sparse, solver=solver), 4)
    for spec in pallas_specs():
        out[f"pallas {spec}"] = (pallas_final(sur, theta0, steps, dt, spec), 4)
    return out


#: Pallas settings timed by default on a GPU: POINTS_PER_PROGRAM:NUM_WARPS[:rcN][:r1].
PALLAS_DEFAULT = "16:4:rc16,32:8:rc8,16:4:rc16:r1,8:2:rc16"


def pallas_specs():
    if ARGS.pallas is not None:
        spec = ARGS.pallas
    elif ARGS.pallas_interpret or jax.default_backend() == "gpu":
        spec = PALLAS_DEFAULT if jax.default_backend() == "gpu" else "4:4"
    else:
        spec = ""
    return [s.strip() for s in spec.split(",") if s.strip()]


def pallas_final(sur, theta0, steps, dt, spec):
    """Batched fn(beta_self (G,), beta_cross (G,)) -> final phases (G, N) by the fused kernel."""
    from surrogate.kernels import fused_simulate

    def final(b_self, b_cross):
        pp, warps, *flags = spec.split(":")
        rc = [int(f[2:]) for f in flags if f.startswith("rc")]
        if set(flags) - {"expf", "r1"} - {f"rc{x}" for x in rc}:
            raise ValueError(f"unknown flags in the Pallas spec {spec!r}")
        B = jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, DTYPE))(b_self, b_cross)
        return fused_simulate(sur, theta0, params=sur.params.replace(B=B, K=B), dt=dt,
                              n_steps=steps, points_per_program=int(pp),
                              num_warps=int(warps), approx_exp="expf" not in flags,
                              rows_per_chunk=rc[0] if rc else 16,
                              reduce_once="r1" in flags,
                              interpret=ARGS.pallas_interpret).y1

    final.batched = True
    return final


def selected(name: str) -> bool:
    return ARGS.only is None or any(s in name for s in ARGS.only)


def time_direct(fn, pts):
    bs, bc = (jnp.asarray(pts.columns[k], DTYPE) for k in ("beta_self", "beta_cross"))
    t0 = time.perf_counter()
    batched = fn if getattr(fn, "batched", False) else jax.vmap(fn)
    compiled = jax.jit(batched).lower(bs, bc).compile()
    compile_s = time.perf_counter() - t0
    if not ARGS.no_warmup:
        compiled(bs, bc).block_until_ready()
    best = np.inf
    for _ in range(ARGS.repeats):
        t0 = time.perf_counter()
        out = compiled(bs, bc).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return compile_s, best, np.asarray(out)


def time_engine(fn, pts, devices=None):
    batched = getattr(fn, "batched", False)

    def point_fn(p):
        return fn(p["beta_self"].astype(DTYPE), p["beta_cross"].astype(DTYPE))

    run = dict(progress=False, devices=devices, batched=batched)
    t0 = time.perf_counter()
    out = sg.sweep(point_fn, pts, **run)  # compiles (and runs)
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(ARGS.repeats):
        t0 = time.perf_counter()
        out = sg.sweep(point_fn, pts, **run)  # cached program
        best = min(best, time.perf_counter() - t0)
    return max(first - best, 0.0), best, np.asarray(out)


def rate(stages, n, steps, points, seconds):
    return stages * n * n * steps * points / seconds


def main_table():
    sur, theta0 = problem()
    pts = plane(ARGS.grid)
    n, steps = sur.network.n, ARGS.steps
    print(f"\n## {ARGS.grid} x {ARGS.grid} grid, {steps} steps, N = {n}, density "
          f"{sur.network.density:.3f}, {sur.network.neighbours.shape[1]} neighbour slots")
    rows, finals = [], {}
    todo = dict(variants(sur, theta0, steps, ARGS.dt))
    todo["sweep engine, fast sparse, all devices"] = (todo["fast RK4, sparse"][0], 4, {})
    todo["sweep engine, batched sparse, all devices"] = (
        todo["batched RK4, sparse, points on lanes"][0], 4, {})
    for name, (fn, stages, *_) in todo.items():
        if not selected(name):
            continue
        try:
            if name.startswith("sweep engine"):
                c, t, out = time_engine(fn, pts)
            else:
                c, t, out = time_direct(fn, pts)
        except Exception:  # noqa: BLE001  (one failing variant must not stop the table)
            print(f"  FAILED: {name}:\n{traceback.format_exc()}", flush=True)
            continue
        finals[name] = out
        rows.append((name, c, t, rate(stages, n, steps, len(pts), t)))
        print(f"  done: {name}: {t:.3f} s (compile {c:.1f} s)", flush=True)
    base = next((r[2] for r in rows if "baseline" in r[0]), None)
    limit = ARGS.limit or (3e12 if jax.default_backend() == "gpu" else None)
    print("\n| variant | compile s | run s | pair-evals/s | vs naive dense |"
          + (f" of {limit:.1e} limit |" if limit else ""))
    print("| --- | --- | --- | --- | --- |" + (" --- |" if limit else ""))
    for name, c, t, r in rows:
        print(f"| {name} | {c:.1f} | {t:.3f} | {r:.2e} | "
              f"{f'{base / t:.2f}x' if base else '-'} |" + (f" {r / limit:.1%} |" if limit else ""))
    if rows and (ARGS.grid, steps) == (64, 5000):
        name, _, t, _ = min(rows, key=lambda r: r[2])
        print(f"issue 5's GPU target (64^2 x 5000 steps in <= 0.5 s): fastest {name}, {t:.3f} s: "
              f"{'met' if t <= 0.5 else 'not met'}")
    if any(name.startswith("sweep engine") for name, *_ in rows):
        print("(sweep engine: run time of a whole call, which traces fn and hashes its program "
              "each time; compile = first call minus second)")
    return finals


def devices_table():
    devices = jax.devices()
    if len(devices) < 2 or not selected("engine"):
        return
    sur, theta0 = problem()
    fn = engine_final(sur, theta0, ARGS.steps, ARGS.dt)
    pts = plane(ARGS.grid)
    print(f"\n## sweep engine ({ARGS.engine}): devices ({ARGS.grid} x {ARGS.grid}, "
          f"{ARGS.steps} steps)")
    print("| devices | run s | speed-up |")
    print("| --- | --- | --- |")
    base = None
    for k in sorted({1, len(devices)}):
        _, t, _ = time_engine(fn, pts, devices=devices[:k])
        base = base or t
        print(f"| {k} x {devices[0].device_kind} | {t:.3f} | {base / t:.2f}x |", flush=True)


def scaling_tables():
    steps = ARGS.scale_steps
    if ARGS.scale_grid and selected("engine"):
        sur, theta0 = problem(steps=steps)
        fn = engine_final(sur, theta0, steps, ARGS.dt)
        print(f"\n## sweep engine ({ARGS.engine}): grid size ({steps} steps, N = {sur.network.n})")
        print("| grid | points | compile s | run s | points/s | pair-evals/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for side in (int(s) for s in ARGS.scale_grid.split(",")):
            pts = plane(side)
            c, t, _ = time_engine(fn, pts)
            print(f"| {side}^2 | {len(pts)} | {c:.1f} | {t:.3f} | {len(pts) / t:.4g} | "
                  f"{rate(4, sur.network.n, steps, len(pts), t):.2e} |", flush=True)
    if ARGS.scale_n and selected("engine"):
        pts = plane(ARGS.scale_n_grid)
        print(f"\n## sweep engine ({ARGS.engine}): oscillators ({ARGS.scale_n_grid}^2 grid, "
              f"{steps} steps; k = 10, cross density 0.1, so the degree grows with N)")
        print("| N | slots | density | compile s | run s | pair-evals/s | edge-evals/s |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for n in (int(s) for s in ARGS.scale_n.split(",")):
            sur, theta0 = problem(sizes=(n // 2, n - n // 2), steps=steps)
            fn = engine_final(sur, theta0, steps, ARGS.dt)
            c, t, _ = time_engine(fn, pts)
            edges = float(sur.network.adjacency.sum())
            print(f"| {n} | {sur.network.neighbours.shape[1]} | {sur.network.density:.3f} | "
                  f"{c:.1f} | {t:.3f} | {rate(4, n, steps, len(pts), t):.2e} | "
                  f"{4 * edges * steps * len(pts) / t:.2e} |", flush=True)


def check():
    """Final phases of all variants after ``--check`` steps against the float64-free reference:
    the naive baseline (and the engine against the direct fast sparse path, which must match)."""
    steps = ARGS.check
    sur, theta0 = problem(steps=steps)
    pts = plane(min(ARGS.grid, 8))
    outs = {}
    failed = []
    for name, (fn, _) in variants(sur, theta0, steps, ARGS.dt).items():
        if selected(name):
            try:
                outs[name] = time_direct(fn, pts)[2]
            except Exception:  # noqa: BLE001
                print(f"  FAILED: {name}:\n{traceback.format_exc()}", flush=True)
                failed.append(name)
    if selected("engine"):
        outs["sweep engine"] = time_engine(
            surrogate_final(sur, theta0, steps, ARGS.dt, field=sg.Sparse()), pts)[2]
    ref_name = "naive dense (baseline)" if "naive dense (baseline)" in outs else next(iter(outs))
    ref = outs[ref_name]
    print(f"\n## agreement after {steps} steps ({len(pts)} points): max |sin(theta) - "
          f"sin(theta_ref)|, reference: {ref_name}")
    worst = 0.0
    for name, out in outs.items():
        d = float(np.max(np.abs(np.sin(out) - np.sin(ref))))
        worst = max(worst, d)
        print(f"  {name}: {d:.2e}")
    fast = outs.get("fast RK4, sparse")
    if fast is not None and any(name.startswith("pallas") for name in outs):
        print("  pallas against the fast path (fast RK4, sparse): "
              + ", ".join(f"{name[7:]}: {np.max(np.abs(np.sin(out) - np.sin(fast))):.2e}"
                          for name, out in outs.items() if name.startswith("pallas")))
    if ARGS.check_tol is not None and worst > ARGS.check_tol:
        print(f"FAILED: paths differ by {worst:.2e} > {ARGS.check_tol:g}")
        sys.exit(1)
    if failed:
        print(f"FAILED to run: {', '.join(failed)}")
        sys.exit(1)


def main():
    d = jax.devices()
    print(f"# {d[0].device_kind} x{len(d)} ({d[0].platform}), jax {jax.__version__}, "
          f"{jnp.dtype(DTYPE).name}")
    if ARGS.check:
        check()
    if ARGS.steps:
        main_table()
        devices_table()
    scaling_tables()


if __name__ == "__main__":
    main()
