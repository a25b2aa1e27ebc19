"""Benchmark: the neighbour-slot loop of ``simulate_batch`` rolled against unrolled, by oscillator
count (the choice ``surrogate.Sparse(slot_loop_max=...)`` makes), one process, one device.

    python benchmarks/slot_loop.py                     # N = 100, 500, 1000; 256 points
    python benchmarks/slot_loop.py --n 1000 --steps 50

Paper graph (two equal modalities, k = 10, cross density 0.1, so the slot count D grows with N),
sinusoidal drive, B = K per point on a line of beta_self, float32. Compile time apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import surrogate as sg  # noqa: E402


def run(n: int, points: int, steps: int, unrolled: bool):
    sur = sg.paper_preset(jax.random.key(0), sizes=(n // 2, n - n // 2))
    ts = jnp.linspace(0.0, 0.01 * (steps + 2), steps + 3)
    sur = sur.replace(drive=sg.make_drive(ts, jnp.stack([jnp.sin(ts), jnp.cos(ts)], -1)))
    b = jnp.linspace(0.01, 1.0, points)
    B = jax.vmap(lambda x: sg.block_matrix(x, 0.1 * x, 2))(b)
    params = sur.params.replace(B=B, K=B)
    theta0 = sg.initial_phases(jax.random.key(1), sur.network.n)
    field = sg.Sparse(unroll_slots=unrolled, slot_loop_max=1 << 30)
    t = time.perf_counter()
    compiled = jax.jit(lambda p: sg.simulate_batch(sur, theta0, dt=0.01, n_steps=steps, params=p,
                                                   field=field).y1).lower(params).compile()
    compile_s = time.perf_counter() - t
    compiled(params).block_until_ready()  # warm-up
    t = time.perf_counter()
    out = compiled(params).block_until_ready()
    return sur.network.neighbours.shape[1], compile_s, time.perf_counter() - t, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="100,500,1000", help="oscillator counts")
    p.add_argument("--points", type=int, default=256, help="parameter points (the batch)")
    p.add_argument("--steps", type=int, default=50, help="RK4 steps")
    args = p.parse_args()
    dev = jax.devices()[0]
    print(f"# {dev.device_kind} ({dev.platform}), jax {jax.__version__}; {args.points} points, "
          f"{args.steps} steps; default slot_loop_max = {sg.Sparse().slot_loop_max}")
    print("| N | slots | rolled compile s | rolled run s | unrolled compile s | unrolled run s "
          "| unrolled speed-up | max |diff| |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in (int(x) for x in args.n.split(",")):
        slots, c_r, t_r, out_r = run(n, args.points, args.steps, unrolled=False)
        _, c_u, t_u, out_u = run(n, args.points, args.steps, unrolled=True)
        diff = float(jnp.max(jnp.abs(out_r - out_u)))
        print(f"| {n} | {slots} | {c_r:.1f} | {t_r:.2f} | {c_u:.1f} | {t_u:.2f} | "
              f"{t_r / t_u:.2f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
