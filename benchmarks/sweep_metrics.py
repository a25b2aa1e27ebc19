"""Benchmark: the metrics of ``xmodal sweep`` on the paper's plane, per point (vmapped, the
reference) against batched (points on the minor axis, what the command runs), one process.

    python benchmarks/sweep_metrics.py                       # 16 x 16 grid, 5000 + 1000 steps
    python benchmarks/sweep_metrics.py --grid 64 --cpu-devices 2

The spec is the command's default model and run (2 x 50 oscillators, 5000 measured steps after
1000 transient ones, order parameters and modality attention sampled every 10 steps, float32)
with the Lorenz drive, over a --grid x --grid log grid of (beta_self, beta_cross) in 1e-4..1.
Both functions go through ``surrogate.sweep`` (chunks, sharding over all devices); compile time
is the first call minus the second, run time the second call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from common import add_cpu_devices, start


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=16, help="points per axis")
    p.add_argument("--steps", type=int, default=5000, help="measured RK4 steps")
    p.add_argument("--transient", type=int, default=1000, help="discarded RK4 steps")
    add_cpu_devices(p)
    return p.parse_args(argv)


ARGS = parse_args()
start(ARGS)  # before JAX starts its backends

import jax  # noqa: E402
import numpy as np  # noqa: E402

import surrogate as sg  # noqa: E402
from lorenz.data import lorenz_xy  # noqa: E402
from surrogate.sweeping import SweepModel, chunk_function, load_spec, point_function  # noqa: E402


def main() -> int:
    side = ARGS.grid
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "plane.json")
        with open(path, "w") as f:
            json.dump({"axes": {"beta_self": {"log": [1e-4, 1.0, side]},
                                "beta_cross": {"log": [1e-4, 1.0, side]}},
                       "run": {"steps": ARGS.steps, "transient": ARGS.transient,
                               "drive": "lorenz"}}, f)
        spec = load_spec(path)
    points = sg.grid(**spec.axis_values)
    dtype = jax.numpy.float64 if spec.run.float64 else jax.numpy.float32
    model = SweepModel(spec, lorenz_xy(spec.run.drive_samples, spec.run.dt, dtype))
    dev = jax.devices()
    print(f"# {len(dev)} x {dev[0].device_kind} ({dev[0].platform}), jax {jax.__version__}; "
          f"{side}^2 grid, N = {sum(spec.model.sizes)}, {ARGS.transient} + {ARGS.steps} steps, "
          f"metrics {', '.join(spec.run.metrics)}", flush=True)
    rows, outs = [], {}
    for name, fn, batched in (("per point, vmapped (reference)", point_function(model), False),
                              ("batched, points on the minor axis", chunk_function(model), True)):
        times = []
        for _ in range(2):
            t = time.perf_counter()
            outs[name] = sg.sweep(fn, points, batched=batched, progress=False)
            times.append(time.perf_counter() - t)
        rows.append((name, times[0] - times[1], times[1]))
        print(f"  done: {name}: {times[1]:.2f} s", flush=True)
    base = rows[0][2]
    print("\n| metric function | compile s | run s | points/s | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for name, c, r in rows:
        print(f"| {name} | {c:.1f} | {r:.2f} | {len(points) / r:.3g} | {base / r:.2f}x |")
    a, b = outs.values()
    diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    print(f"\nlargest difference between the two, over all metrics: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
