"""Benchmark: Lorenz-63 Lyapunov spectrum for a batch of initial conditions.

xmodal's ``surrogate.lyapunov_batch.lyapunov_spectrum_batch`` (the batch on lanes) against
lyapax (PyPI, a JAX-native Benettin/QR tool: https://pypi.org/project/lyapax/, the ``bench``
extra pins it) and
against xmodal's one-system path under ``jax.vmap`` (the previous engine), on the same problem in
the same process: Lorenz-63 s=10 r=28 b=8/3, RK4 dt = 0.01, ``--transient`` steps discarded,
``--steps`` measured steps, all three exponents, the same initial states.

Rows: xmodal batch with a QR every ``--renorm-every`` steps (default 8); xmodal vmapped, lyapax
with a QR every step (lyapax's default, and the issue's baseline); lyapax with a QR every
``--renorm-every`` steps too (the same re-orthonormalisation work as the batch row). Every
engine is jit-compiled (compile time reported apart) and warmed up; then ``--repeats`` rounds
time each engine once per round, in turn, with ``block_until_ready`` (wall and process CPU
time): other processes' load falls on all engines alike, and the ratio is taken per round
(paired) and summarised by its median, range and standard error. The time per trajectory-step
counts the transient steps too (all integrate them). Accuracy: the batch-mean spectrum against
the published (0.9056, 0, -14.5723) (Sprott), with the standard error of the batch mean of
lambda_1, and the sum rule -(s + 1 + b) = -13.6667.

    python benchmarks/lyapunov.py --batch 256 --steps 20000   # the issue's command
    python benchmarks/lyapunov.py --batch 4096                # 4096 x 20000 (e.g. on a GPU)

nolds is not used: it estimates lambda_1 from a scalar time series (its "expected" Lorenz value
2.40 is a Lyapunov-dimension formula, not lambda_1).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from xmodal.arguments import nonnegative_int, positive_int

REFERENCE = np.array([0.9056, 0.0, -14.5723])
TRACE = -(10.0 + 1.0 + 8.0 / 3.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=positive_int, default=4096,
                   help="initial conditions (default 4096)")
    p.add_argument("--steps", type=positive_int, default=20_000,
                   help="measured RK4 steps (default 20000)")
    p.add_argument("--transient", type=nonnegative_int, default=1000,
                   help="discarded steps (default 1000)")
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--renorm-every", type=positive_int, default=8,
                   help="steps between QRs of the batch row and the second lyapax row (default 8)")
    p.add_argument("--lanes", type=positive_int, default=256, help="trajectories per lane block")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed rounds (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-lyapax", action="store_true", help="time xmodal's engines only")
    p.add_argument("--no-vmap", action="store_true", help="skip the vmapped one-system row")
    args = p.parse_args(argv)
    if args.steps % args.renorm_every:
        p.error("--steps must be a multiple of --renorm-every")
    if args.transient % args.renorm_every:
        p.error("--transient must be a multiple of --renorm-every (equal work for all engines)")
    return args


def initial_conditions(key, batch, dtype):
    """(batch, 3) random states in the box around the attractor."""
    lo = jnp.array([-15.0, -20.0, 5.0])
    hi = jnp.array([15.0, 20.0, 40.0])
    return (lo + (hi - lo) * jax.random.uniform(key, (batch, 3))).astype(dtype)


def engines(args, params):
    """[(name, fn(y0s) -> exponents (B, 3))]; lyapax's rows only if it is installed."""
    from lorenz.systems import lorenz63
    from surrogate.lyapunov import lyapunov_spectrum
    from surrogate.lyapunov_batch import lyapunov_spectrum_batch

    dt, n, tr, m = args.dt, args.steps, args.transient, args.renorm_every
    def batch(y0s):
        return lyapunov_spectrum_batch(lorenz63, y0s, params, dt=dt, n_steps=n, transient=tr,
                                       renorm_every=m, n_records=1, lanes=args.lanes).exponents

    def one(y):
        return lyapunov_spectrum(lorenz63, y, params, dt=dt, n_steps=n, transient=tr,
                                 n_records=1).exponents

    rows = [(f"xmodal batch/{m}", batch)]
    if not args.no_vmap:
        rows.append(("xmodal vmap/1", jax.vmap(one)))
    if args.no_lyapax:
        return rows
    import lyapax

    step = lyapax.ode_step(lambda s: lorenz63(0.0, s, params), dt, integrator="rk4")

    def theirs(y, every):
        # lyapax counts its transient in time and rounds it to whole blocks (at least one)
        return lyapax.lyapunov_spectrum(step, y, dt, n, k=3, renorm_every=every,
                                        t_transient=max(tr, every) * dt).exponents

    for every in dict.fromkeys((1, m)):
        run = jax.vmap(functools.partial(theirs, every=every))
        rows.append((f"lyapax {lyapax.__version__}/{every}", run))
    return rows


def measure(rows, y0, repeats):
    """Compile and warm up each engine, then ``repeats`` rounds of one timed call each.

    Returns {name: (compile s, wall (repeats,), cpu (repeats,), exponents (B, 3) numpy)}.
    """
    compiled, out = {}, {}
    for name, fn in rows:
        t = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(y0).compile()
        compile_s = time.perf_counter() - t
        lam = np.asarray(jax.block_until_ready(compiled[name](y0)), np.float64)  # warm-up
        out[name] = (compile_s, [], [], lam)
        print(f"compiled {name} in {compile_s:.1f} s", flush=True)
    for _ in range(repeats):
        for name, _fn in rows:
            c, w = time.process_time(), time.perf_counter()
            jax.block_until_ready(compiled[name](y0))
            out[name][1].append(time.perf_counter() - w)
            out[name][2].append(time.process_time() - c)
    return {k: (c, np.array(w), np.array(u), lam) for k, (c, w, u, lam) in out.items()}


def _summary(ratios) -> str:
    """median [min, max] +- standard error of per-round ratios."""
    r = np.asarray(ratios)
    se = r.std(ddof=1) / np.sqrt(r.size) if r.size > 1 else float("nan")
    return f"{np.median(r):6.1f}x [{r.min():.1f}, {r.max():.1f}] se {se:.1f}"


def main(argv=None):
    args = parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    if not args.no_lyapax:
        try:
            import lyapax  # noqa: F401
        except ImportError:
            print("benchmarks/lyapunov.py: lyapax is not installed: pip install 'xmodal[bench]' "
                  "(or --no-lyapax)", file=sys.stderr)
            return 2

    from lorenz.systems import LorenzParams

    y0 = initial_conditions(jax.random.key(args.seed), args.batch, dtype)
    load0 = os.getloadavg()
    res = measure(engines(args, LorenzParams()), y0, args.repeats)
    load1 = os.getloadavg()

    traj_steps = args.batch * (args.steps + args.transient)
    device = jax.devices()[0]
    print(
        f"\nLorenz-63 Lyapunov spectrum: batch {args.batch}, {args.steps} + {args.transient} RK4 "
        f"steps of dt {args.dt}, {args.dtype}, {device.platform} ({device.device_kind}), "
        f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {load0[0]:.2f} before, "
        f"{load1[0]:.2f} after, {args.repeats} rounds; name/N: a QR every N steps"
    )
    header = (f"{'engine':<17} {'compile s':>9} {'ns/traj-step (median, se)':>26} "
              f"{'CPU ns':>7} {'lambda (batch mean)':>28} {'max|err|':>8} {'se l1':>6} "
              f"{'sum err':>8}")
    print(header)
    print("-" * len(header))
    for name, (compile_s, wall, cpu, lam) in res.items():
        ns, ns_cpu = 1e9 * wall / traj_steps, 1e9 * cpu / traj_steps
        se = ns.std(ddof=1) / np.sqrt(ns.size) if ns.size > 1 else float("nan")
        mean = lam.mean(0)
        spectrum = "(" + ", ".join(f"{v:.4f}" for v in mean) + ")"
        print(
            f"{name:<17} {compile_s:9.2f} {np.median(ns):18.1f} +- {se:4.1f} "
            f"{np.median(ns_cpu):7.1f} {spectrum:>28} {np.abs(mean - REFERENCE).max():8.4f} "
            f"{lam[:, 0].std(ddof=1) / np.sqrt(len(lam)):6.4f} "
            f"{np.abs(lam.sum(1) - TRACE).max():8.1e}"
        )
    base_name = next(iter(res))
    _, base_wall, base_cpu, _ = res[base_name]
    print(f"\nratios to {base_name}, per round: median [min, max] se (wall | CPU time)")
    for name, (_, wall, cpu, _) in list(res.items())[1:]:
        print(f"  {name:<17} wall {_summary(wall / base_wall)} | CPU {_summary(cpu / base_cpu)}")
    print("reference (Sprott): (0.9056, 0.0000, -14.5723), sum "
          f"{TRACE:.4f}; se l1: standard error of the batch mean of lambda_1")
    return res


if __name__ == "__main__":
    sys.exit(0 if isinstance(main(), dict) else 2)
