"""Benchmark: Lorenz-63 Lyapunov spectrum for a batch of initial conditions.

xmodal's ``surrogate.lyapunov_spectrum`` (vmapped) against lyapax (PyPI, a JAX-native Benettin/QR
tool: https://pypi.org/project/lyapax/), on the same problem in the same process: Lorenz-63
s=10 r=28 b=8/3, RK4 dt = 0.01, ``--transient`` steps discarded, ``--steps`` measured steps, QR
every ``--renorm-every`` steps, all three exponents. Both engines are jit-compiled (compile time
reported apart), warmed up, then timed with ``block_until_ready``; the time per trajectory-step
counts the transient steps too (both integrate them). Accuracy: the batch-mean spectrum against the published
(0.9056, 0, -14.5723) (Sprott) and the sum rule -(s + 1 + b) = -13.6667.

    python benchmarks/lyapunov.py                         # the issue's problem: 4096 x 20000
    python benchmarks/lyapunov.py --batch 256 --steps 5000  # quick, e.g. on a laptop CPU

lyapax is installed with pip into the running interpreter if it is missing (``--no-install`` to
skip it; then only xmodal is timed). nolds is not used: it estimates lambda_1 from a scalar time
series (its "expected" Lorenz value 2.40 is a Lyapunov-dimension formula, not lambda_1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

REFERENCE = np.array([0.9056, 0.0, -14.5723])
TRACE = -(10.0 + 1.0 + 8.0 / 3.0)
LYAPAX = "lyapax==0.3.0"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4096, help="initial conditions (default 4096)")
    p.add_argument("--steps", type=int, default=20_000, help="measured RK4 steps (default 20000)")
    p.add_argument("--transient", type=int, default=1000, help="discarded steps (default 1000)")
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--renorm-every", type=int, default=1)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-install", action="store_true", help="do not pip-install lyapax")
    args = p.parse_args(argv)
    for name in ("batch", "steps", "renorm_every", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.transient < 0:
        p.error("--transient must be >= 0")
    if args.steps % args.renorm_every:
        p.error("--steps must be a multiple of --renorm-every")
    return args


def initial_conditions(key, batch, dtype):
    """(batch, 3) random states in the box around the attractor."""
    lo = jnp.array([-15.0, -20.0, 5.0])
    hi = jnp.array([15.0, 20.0, 40.0])
    return (lo + (hi - lo) * jax.random.uniform(key, (batch, 3))).astype(dtype)


def load_lyapax(install: bool):
    try:
        return importlib.import_module("lyapax")
    except ImportError:
        if not install:
            return None
    print(f"installing {LYAPAX} with pip ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", LYAPAX], check=True)
    importlib.invalidate_caches()
    return importlib.import_module("lyapax")


def timed(fn, y0, repeats):
    """(compile seconds, best run seconds, exponents (batch, 3) as numpy)."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(y0).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(y0))  # warm-up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(y0))
        best = min(best, time.perf_counter() - t)
    return compile_s, best, np.asarray(out, dtype=np.float64)


def main(argv=None):
    args = parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)

    from lorenz.systems import LorenzParams, lorenz63
    from surrogate.lyapunov import lyapunov_spectrum

    y0 = initial_conditions(jax.random.key(args.seed), args.batch, dtype)
    params = LorenzParams()
    dt, n, tr, m = args.dt, args.steps, args.transient, args.renorm_every

    def ours(y0s):
        run = lambda y: lyapunov_spectrum(
            lorenz63, y, params, dt=dt, n_steps=n, transient=tr, renorm_every=m, n_records=1
        )
        return jax.vmap(run)(y0s).exponents

    rows = [("xmodal", *timed(ours, y0, args.repeats))]

    lyapax = load_lyapax(not args.no_install)
    if lyapax is not None:

        def rhs(s):
            return lorenz63(0.0, s, params)

        step = lyapax.ode_step(rhs, dt, integrator="rk4")
        t_tr = tr * dt

        def theirs(y0s):
            run = lambda y: lyapax.lyapunov_spectrum(
                step, y, dt, n, k=3, renorm_every=m, t_transient=t_tr
            ).exponents
            return jax.vmap(run)(y0s)

        rows.append((f"lyapax {lyapax.__version__}", *timed(theirs, y0, args.repeats)))

    traj_steps = args.batch * (n + tr)
    device = jax.devices()[0]
    print(
        f"\nLorenz-63 Lyapunov spectrum: batch {args.batch}, {n} + {tr} RK4 steps of dt {dt}, "
        f"QR every {m}, {args.dtype}, {device.platform} ({device.device_kind}), "
        f"jax {jax.__version__}"
    )
    header = (
        f"{'engine':<14} {'compile s':>9} {'run s':>8} {'ns/traj-step':>12} "
        f"{'lambda (batch mean)':>28} {'max|err|':>8} {'sum err':>8} {'time ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    base = rows[0][2]
    for name, compile_s, run_s, lam in rows:
        mean = lam.mean(0)
        err = np.abs(mean - REFERENCE).max()
        sum_err = np.abs(lam.sum(1) - TRACE).max()
        spectrum = "(" + ", ".join(f"{v:.4f}" for v in mean) + ")"
        print(
            f"{name:<14} {compile_s:9.2f} {run_s:8.3f} {1e9 * run_s / traj_steps:12.1f} "
            f"{spectrum:>28} {err:8.4f} {sum_err:8.1e} {run_s / base:9.2f}x"
        )
    print(
        f"reference (Sprott): (0.9056, 0.0000, -14.5723), sum {TRACE:.4f}; time ratio: "
        "run time / xmodal's; lambda spread over the batch (std of lambda_1): "
        + ", ".join(f"{name} {lam[:, 0].std():.4f}" for name, _, _, lam in rows)
    )
    return rows


if __name__ == "__main__":
    main()
