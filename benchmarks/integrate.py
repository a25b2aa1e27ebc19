"""Fast path vs diffrax path: paper preset, a batch of parameter points, one process.

    python benchmarks/integrate.py [--batch 256] [--steps 5000] [--float64]

Each variant is compiled ahead of time (compile time reported apart), run once to warm up, then
timed over ``--repeats`` runs (best). A batch is a vmap over (beta_self, beta_cross) points of
the paper preset (K = B), undriven, from one initial phase vector; the final phases are returned,
so no trajectory is stored. "pair-evals/s" counts 4 N^2 pair evaluations per RK4 step (6 N^2 per
Tsit5 step) per point, dense-equivalent, as in docs/performance.md. The baseline of the
ratio column is the diffrax path with its default solver, Tsit5 at a constant step.
"""

from __future__ import annotations

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg


def variants(dt):
    tsit5 = dict(solver=diffrax.Tsit5())
    return {
        "diffrax Tsit5, constant dt (baseline)": (dict(tsit5, field=sg.Auto()), 6),
        "diffrax Tsit5, reference field": (dict(tsit5, field=sg.Reference()), 6),
        "diffrax RK4 (same scheme as fast)": (dict(solver=sg.RK4()), 4),
        "fast RK4 scan, dense": (dict(field=sg.Dense()), 4),
        "fast RK4 scan, sparse": (dict(field=sg.Sparse()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--dt", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--float64", action="store_true")
    ap.add_argument("--only", nargs="*", help="substrings of variant names to run")
    args = ap.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32

    sur = sg.paper_preset(jax.random.key(0), dtype=dtype)
    theta0 = sg.initial_phases(jax.random.key(1), sur.network.n, dtype)
    side = int(np.ceil(np.sqrt(args.batch)))
    grid = jnp.logspace(-4, 0, side, dtype=dtype)
    bs, bc = (x.ravel()[: args.batch] for x in jnp.meshgrid(grid, grid, indexing="ij"))
    n = sur.network.n
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}, "
          f"{jnp.dtype(dtype).name}, N={n}, density={sur.network.density:.3f}, "
          f"batch={args.batch}, steps={args.steps}")

    rows, finals = [], {}
    for name, (opts, stages) in variants(args.dt).items():
        if args.only and not any(s in name for s in args.only):
            continue

        def final(b_self, b_cross, opts=opts):
            B = sg.block_matrix(b_self, b_cross, 2, dtype)
            traj = sg.simulate(sg.replace(sur, B=B, K=B), theta0, dt=args.dt,
                               n_steps=args.steps, save_every=args.steps, **opts)
            return traj.ys[-1]

        fn = jax.jit(jax.vmap(final))
        t0 = time.perf_counter()
        compiled = fn.lower(bs, bc).compile()
        compile_s = time.perf_counter() - t0
        compiled(bs, bc).block_until_ready()  # warm-up
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = compiled(bs, bc).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        finals[name] = np.asarray(out)
        rate = stages * n * n * args.steps * args.batch / best
        rows.append((name, compile_s, best, rate))
        print(f"  done: {name}: {best:.2f} s", flush=True)

    base = rows[0][2] if rows and "baseline" in rows[0][0] else None
    print("\n| variant | compile s | run s | pair-evals/s | speed-up vs baseline |")
    print("| --- | --- | --- | --- | --- |")
    for name, c, t, r in rows:
        ratio = f"{base / t:.2f}x" if base else "-"
        print(f"| {name} | {c:.1f} | {t:.3f} | {r:.2e} | {ratio} |")
    names = list(finals)
    if len(names) > 1:
        ref = finals[names[-1]]
        print("\nmax |sin(theta) - sin(theta_ref)| against the last variant after all steps "
              "(a chaotic trajectory amplifies rounding: only short runs should agree closely):")
        for k in names[:-1]:
            print(f"  {k}: {np.max(np.abs(np.sin(finals[k]) - np.sin(ref))):.2e}")


if __name__ == "__main__":
    main()
