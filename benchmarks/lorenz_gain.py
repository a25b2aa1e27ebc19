"""The Lorenz main job with additive input gain g = 0 (the default) and g = 1, all else default.

    python benchmarks/lorenz_gain.py [--gains 0,1]

Prints per gain and coupling reading the range of test NMSE over the plane, the range of the
largest conditional Lyapunov exponent, its maximum where NMSE < 0.1, and the surrogate's mean
valid prediction time (Lyapunov times). About 70 s per gain on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import reservoirpy.nodes  # noqa: F401  (imported before the sweeps, as xmodal lorenz does)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gains", default="0,1")
    args = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)  # as xmodal lorenz
    import numpy as np

    from lorenz.experiment import LorenzConfig, run_experiment

    print("| gain | reading | test NMSE | largest exponent | max exponent at NMSE < 0.1 |")
    print("| --- | --- | --- | --- | --- |")
    for gain in (float(g) for g in args.gains.split(",")):
        res, _ = run_experiment(LorenzConfig(gain=gain), progress=False, log=lambda *a: None)
        for reading, r in res["readings"].items():
            nmse, lyap = np.asarray(r["nmse"]), np.asarray(r["lyapunov"])
            print(f"| {gain:g} | {reading} | {nmse.min():.3g} .. {nmse.max():.3g} | "
                  f"{lyap.min():.3g} .. {lyap.max():.3g} | {lyap[nmse < 0.1].max():.3g} |")
        print(f"surrogate VPT at g = {gain:g}: {res['forecast']['surrogate']['mean']:.2f}")


if __name__ == "__main__":
    main()
