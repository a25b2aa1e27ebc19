"""The validation scan behind the Lorenz experiment's defaults (anchor strength, training length).

    python benchmarks/lorenz_scan.py [--anchors 2,3,4,6,8] [--trains 500,1000,2000]

For each anchor strength h and training length: the *validation* NMSE of the observer (never the
test split) at the corners (beta_self, beta_cross) = (1e-4, 1e-4) and (1, 1) of the tied reading,
and the echo-state check: the phase distance of two copies of the network started from
different phases under the same drive, after the washout and at the end of the series. The
rule (docs/lorenz.md): among the settings whose copies agree to < 1e-6 after the washout, the
lowest validation NMSE at the low corner, with the training length bounded by the main job's
2-minute budget on 2 CPU cores. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import surrogate as sg  # noqa: E402
from lorenz.data import lorenz_series  # noqa: E402
from lorenz.experiment import LorenzConfig, point_surrogate  # noqa: E402
from lorenz.observer import driven, observer_point  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--anchors", default="2,3,4,6,8")
    p.add_argument("--trains", default="500,1000,2000")
    p.add_argument("--gain", type=float, default=0.0, help="additive drive gain g")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    anchors = [float(x) for x in args.anchors.split(",")]
    trains = [int(x) for x in args.trains.split(",")]
    config = LorenzConfig()
    k_model, k_theta, _ = jax.random.split(jax.random.key(args.seed), 3)
    theta_b = sg.initial_phases(jax.random.fold_in(jax.random.key(args.seed), 7), 100)
    print("| h | train | val NMSE (1e-4, 1e-4) | val NMSE (1, 1) | distance after washout | "
          "distance at the end | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for train in trains:
        splits = dataclasses.replace(config.splits, train=train)
        series = lorenz_series(splits, dt=config.dt, sample_every=config.sample_every)
        score = jax.jit(lambda sur, th: observer_point(sur, th, series, splits))
        for h in anchors:
            t0 = time.perf_counter()
            base = sg.paper_preset(k_model, anchor=h, gain=args.gain,
                                   encoding_scale=config.encoding_scale)
            theta0 = sg.initial_phases(k_theta, base.network.n)
            vals = [float(score(point_surrogate(base, b, b), theta0).nmse_val)
                    for b in (1e-4, 1.0)]
            sur = driven(point_surrogate(base, 1e-4, 1e-4), series)
            d = np.asarray(sg.echo_distance(sur, theta0, theta_b, dt=series.delta,
                                            n_steps=splits.total - 1).distance)
            print(f"| {h:g} | {train} | {vals[0]:.3g} | {vals[1]:.3g} | "
                  f"{d[splits.washout:].max():.2g} | {d[-1]:.2g} | "
                  f"{time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
