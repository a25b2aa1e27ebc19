"""sin and cos of the phases: ``surrogate.trig.sincos`` against XLA's ``jnp.sin``, ``jnp.cos``.

    PYTHONPATH=. python benchmarks/trig.py [--lanes 192] [--iterations 1000]

One process, float32 phases (N = 100 oscillators x the lanes, uniform in +-200 rad), each
variant inside a ``fori_loop`` of ``--iterations`` updates (so the loop, not the dispatch, is
timed); the median of 5 timed runs after a compiling one; ns per element for sin and cos
together, the ratio, and the largest error of each against float64 numpy. Three variants: XLA's,
``sincos`` as dispatched on this platform, and its CPU polynomial on any platform.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from surrogate.trig import _polynomial, sincos

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--lanes", type=int, default=192)
parser.add_argument("--iterations", type=int, default=1000)
args = parser.parse_args()

x = jnp.asarray(np.random.default_rng(0).uniform(-200, 200, (100, args.lanes)), jnp.float32)


def xla(t):
    return jnp.sin(t), jnp.cos(t)


times = {}
variants = (("XLA sin, cos", xla), ("surrogate.trig.sincos", sincos),
            ("the polynomial (sincos on CPU)", _polynomial))
for name, f in variants:
    def loop(t, f=f):
        def body(_, acc):
            s, c = f(acc)
            return acc + 1e-3 * (s + c)
        return jax.lax.fori_loop(0, args.iterations, body, t)

    run = jax.jit(loop)
    jax.block_until_ready(run(x))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(run(x))
        runs.append(time.perf_counter() - t0)
    times[name] = float(np.median(runs)) / args.iterations / x.size * 1e9
    s, c = f(x)
    x64 = np.asarray(x, np.float64)
    err = max(np.abs(np.asarray(s, np.float64) - np.sin(x64)).max(),
              np.abs(np.asarray(c, np.float64) - np.cos(x64)).max())
    print(f"{name}: {times[name]:.2f} ns per element (sin and cos), largest error {err:.2g}")
for name, _ in variants[1:]:
    print(f"{name} / XLA: {times['XLA sin, cos'] / times[name]:.1f}x faster on "
          f"{jax.devices()[0].platform}")
