"""``xmodal lorenz``: the Lorenz observer experiment of the source paper, one command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from xmodal.arguments import add_out, add_quiet, add_seed, float_in, int_at_least, positive_int
from xmodal.report import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npz,
    check_jax_environment,
    check_memory,
    hold_lock,
    prepare_out,
)

PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


HELP = "the Lorenz observer experiment: NMSE and Shapley map over the beta plane"
DESCRIPTION = (
    "Sweep the (beta_self, beta_cross) plane with the anchored surrogate observer (X <- x(t), Y <-"
    " y(t), readout -> z(t)) under both coupling readings; write results.json, report.md, "
    "arrays.npz and the figures (phase_map_*.png, lyapunov_*.png, shapley_*.png, anchor.png, "
    "echo.png, prediction.png, attractor.png).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", type=int_at_least(2), default=8, help="points per beta axis (>= 2)")
    p.add_argument("--coupling", choices=["tied", "fixed", "both"], default="both",
                   help="reading of 'low beta': tied (K = B), fixed (K = --kappa, only B "
                        "swept), or both (default)")
    p.add_argument("--kappa", type=float_in(0, 1000), default=0.3,
                   help="coupling K in every block for the fixed reading (default 0.3)")
    p.add_argument("--anchor", type=float_in(0, 1000), default=None,
                   help="input anchoring strength h of every oscillator (default: chosen on "
                        "validation from 4, 8, 16; 0: the additive drive only)")
    p.add_argument("--encoding-scale", type=float_in(0, 1000), default=None,
                   help="encoding scale s, c_i ~ N(0, s^2) (default: chosen on validation "
                        "from 0.5, pi/4, pi/2)")
    p.add_argument("--replications", type=int_at_least(2), default=3,
                   help="independent Lorenz trajectories (>= 2; default 3): every figure of "
                        "merit is a mean with an interval over them")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="graphs and frequency draws (seed, seed + 1, ...), replications too "
                        "(default 1)")
    p.add_argument("--lyapunov", action="store_true",
                   help="also map the largest conditional Lyapunov exponent over the plane")
    add_seed(p)
    p.add_argument("--device", choices=["auto", *PLATFORMS], default="auto",
                   help="JAX platform (auto: the default backend)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run in --out: its finished planes (OUT/planes) are "
                        "read back, the rest computed")
    add_out(p, default="results/lorenz",
            force="write into a non-empty --out (overwriting the files there)")
    add_quiet(p)
    p.add_argument("--mark", type=Path, action="append", default=[], metavar="PARAMS_JSON",
                   help="draw the (beta_self, beta_cross) of a two-modality fit (xmodal fit's "
                        "params.json, with its 90 %% intervals) on the phase maps; repeatable")


def fit_mark(path: Path) -> dict:
    """The plane point of a fit's params.json: beta_self and beta_cross the means of the
    diagonal and off-diagonal entries of B (arithmetic: an entry the data do not bound from
    below sits at the box floor 1e-4, and a geometric mean would follow it there), their
    ranges the span of those entries' intervals (when the file has them); ValueError naming
    the file and field."""
    from surrogate.files import read_json_file

    obj = read_json_file(path)

    def matrix(value, field):
        a = np.asarray(value, dtype=float) if isinstance(value, list) else None
        if a is None or a.shape != (2, 2) or not (np.isfinite(a).all() and (a > 0).all()):
            raise ValueError(f"{path}: field '{field}' must be a 2 x 2 matrix of positive "
                             f"numbers (the plane has two modalities), got {value!r}")
        return a

    if not isinstance(obj, dict) or obj.get("format") != "xmodal-fit":
        raise ValueError(f"{path}: not a params.json of xmodal fit (field 'format' must be "
                         f"'xmodal-fit')")
    if not isinstance(obj.get("params"), dict):
        raise ValueError(f"{path}: field 'params' is missing")
    B = matrix(obj["params"].get("B"), "params.B")
    off = ~np.eye(2, dtype=bool)
    mark = {"label": f"fit {path.name}", "beta_self": float(B.diagonal().mean()),
            "beta_cross": float(B[off].mean())}
    iv = (obj.get("intervals") or {}).get("B")
    if iv is not None:
        if not isinstance(iv, dict):
            raise ValueError(f"{path}: field 'intervals.B' must be an object")
        low = matrix(iv.get("low"), "intervals.B.low")
        high = matrix(iv.get("high"), "intervals.B.high")
        mark["self_range"] = (float(low.diagonal().min()), float(high.diagonal().max()))
        mark["cross_range"] = (float(low[off].min()), float(high[off].max()))
    return mark


def run(args: argparse.Namespace) -> int:
    marks = [fit_mark(path) for path in args.mark]
    check_memory(16 * 8 * args.grid**2, f"--grid {args.grid} ({args.grid**2} points)")
    readings = 2 if args.coupling == "both" else 1
    points = args.grid**2 * readings * args.seeds * args.replications
    if points > 10**6:  # about 0.5 s per point on 2 CPU cores: days
        raise ValueError(f"--grid {args.grid} x --seeds {args.seeds} x --replications "
                         f"{args.replications} x {readings} reading(s) is {points} points "
                         f"(about 0.05 s each on 2 CPU cores); at most 1e6")
    check_jax_environment(None if args.device == "auto" else PLATFORMS[args.device],
                          arg=f"--device {args.device}")
    out = prepare_out(args.out, force=args.force, resume=args.resume)
    hold_lock(out)
    import jax

    if args.device != "auto":
        jax.config.update("jax_platforms", PLATFORMS[args.device])
        try:
            jax.devices()
        except RuntimeError as err:
            raise ValueError(f"--device {args.device}: no such JAX backend here ({err})") from None
    # Dynamics run in float32; readout statistics are float64 NumPy whatever the x64 flag.
    from lorenz.experiment import LorenzConfig, run_experiment
    from lorenz.figures import write_figures
    from lorenz.report import render_report, to_json
    from xmodal.report import versions

    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr,
                                                                  flush=True))
    t0 = time.perf_counter()
    config = LorenzConfig(grid=args.grid, seed=args.seed, seeds=args.seeds,
                          replications=args.replications, coupling=args.coupling,
                          kappa=args.kappa, anchor=args.anchor,
                          encoding_scale=args.encoding_scale, lyapunov=args.lyapunov)
    log(f"xmodal lorenz on {jax.device_count()} {jax.devices()[0].platform} device(s)")
    res = run_experiment(config, out, resume=args.resume, log=log)
    results = to_json(res)
    results["versions"] = versions()
    t_fig = time.perf_counter()
    files = write_figures(out, res, marks)
    results["timing_s"]["figures"] = time.perf_counter() - t_fig
    planes = {}
    for reading, plane in res.planes.items():
        planes[f"nmse_{reading}"] = plane.obs.nmse
        planes[f"lambda_{reading}"] = plane.obs.lam
        planes[f"distance_{reading}"] = plane.distance
    atomic_write_npz(out / "arrays.npz", betas=res.betas, z_true=res.series_raw[:, 2],
                     z_hat_best=res.preds["best"]["z_hat"],
                     z_hat_worst=res.preds["worst"]["z_hat"], **planes)
    results["timing_s"]["command"] = time.perf_counter() - t0
    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "report.md", render_report(results).encode())
    for reading, r in results["readings"].items():
        words = "; ".join(f"{k} {v['word']}" for k, v in r["verdicts"].items())
        print(f"{reading}: best (validation) test NMSE {r['best']['nmse_test']['mean']:.3g}; "
              f"{words}")
    b, fc = results["baselines"], results["forecast"]
    print(f"baselines: raw {b['raw']['nmse_test']['mean']:.3g}, NG-RC "
          f"{b['ngrc']['nmse_test']['mean']:.3g}, ESN {b['esn']['nmse_test']['mean']:.3g}; "
          f"VPT (Lyapunov times) surrogate {fc['surrogate']['mean']:.2f}, NG-RC "
          f"{fc['ngrc']['mean']:.2f}, ESN {fc['esn']['mean']:.2f}")
    print(f"wrote {out}/results.json, report.md, arrays.npz, {', '.join(files)} "
          f"in {results['timing_s']['command']:.0f} s")
    return 0
