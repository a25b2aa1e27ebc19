"""``xmodal lorenz``: the Lorenz observer experiment of the source paper, one command."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from xmodal.commands.simulate import positive_int
from xmodal.report import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npz,
    check_memory,
    prepare_out,
    remove_store,
    seed_int,
)

PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lorenz",
        help="the Lorenz observer experiment: NMSE and Shapley map over the beta plane",
        description="Sweep the (beta_self, beta_cross) plane with the anchored surrogate observer "
        "(X <- x(t), Y <- y(t), readout -> z(t)) under both coupling readings; write "
        "results.json, report.md, arrays.npz and the figures (phase_map_*.png, lyapunov_*.png, "
        "shapley_*.png, anchor.png, echo.png, prediction.png, attractor.png).",
    )
    p.add_argument("--grid", type=positive_int, default=8, help="points per beta axis (>= 2)")
    p.add_argument("--coupling", choices=["tied", "fixed", "both"], default="both",
                   help="reading of 'low beta': tied (K = B), fixed (K = --kappa, only B "
                        "swept), or both (default)")
    p.add_argument("--kappa", type=float, default=0.3,
                   help="coupling K in every block for the fixed reading (default 0.3)")
    p.add_argument("--anchor", type=float, default=4.0,
                   help="input anchoring strength h of every oscillator (default 4; 0: the "
                        "additive drive only)")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="graphs and frequency draws (seed, seed + 1, ...): spreads and the "
                        "verdict over them (default 1)")
    p.add_argument("--out", type=Path, default=Path("results/lorenz"), help="output directory")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="PRNG seed (graph, frequencies, phases)")
    p.add_argument("--device", choices=["auto", *PLATFORMS], default="auto",
                   help="JAX platform (auto: the default backend)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep from the chunks in OUT/sweep")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out (discarding the sweep stored there)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.grid < 2:
        raise ValueError(f"--grid must be >= 2, got {args.grid}")
    for name in ("kappa", "anchor"):
        value = getattr(args, name)
        if not (math.isfinite(value) and 0 <= value <= 1e3):
            raise ValueError(f"--{name} must be a number in [0, 1000], got {value}")
    check_memory(16 * 8 * args.grid**2, f"--grid {args.grid} ({args.grid**2} points)")
    readings = 2 if args.coupling == "both" else 1
    points = args.grid**2 * readings * args.seeds
    if points > 10**6:  # about 0.5 s per point on 2 CPU cores: days
        raise ValueError(f"--grid {args.grid} x --seeds {args.seeds} x {readings} reading(s) is "
                         f"{points} sweep points (about 0.5 s each on 2 CPU cores); at most 1e6")
    out = prepare_out(args.out, force=args.force, resume=args.resume)
    if args.force and not args.resume and (out / "sweep").is_dir():
        for store in sorted((out / "sweep").iterdir()):  # one store per reading and seed
            remove_store(store)
    import jax

    if args.device != "auto":
        jax.config.update("jax_platforms", PLATFORMS[args.device])
        try:
            jax.devices()
        except RuntimeError as err:
            raise ValueError(f"--device {args.device}: no such JAX backend here ({err})") from None
    # Dynamics run in float32; readout statistics are accumulated in float64.
    jax.config.update("jax_enable_x64", True)

    from lorenz.experiment import LorenzConfig, run_experiment
    from lorenz.figures import write_figures
    from lorenz.report import render_report
    from xmodal.report import versions

    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr,
                                                                  flush=True))
    t0 = time.perf_counter()
    config = LorenzConfig(grid=args.grid, seed=args.seed, seeds=args.seeds,
                          coupling=args.coupling, kappa=args.kappa, anchor=args.anchor)
    results, arrays = run_experiment(config, out, resume=args.resume, progress=not args.quiet,
                                     log=log)
    results["versions"] = versions()
    files = write_figures(out, arrays)
    planes = {f"{key}_{reading}": value for reading, plane in arrays["planes"].items()
              for key, value in plane.items()}
    atomic_write_npz(out / "arrays.npz", betas=arrays["betas"], z_true=arrays["series_raw"][:, 2],
                     z_hat_best=arrays["preds"]["best"]["z_hat"],
                     z_hat_worst=arrays["preds"]["worst"]["z_hat"], **planes)
    results["timing_s"]["command"] = time.perf_counter() - t0
    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "report.md", render_report(results).encode())
    for reading, r in results["readings"].items():
        print(f"{reading}: NMSE min {r['best']['nmse']:.4g} max {r['worst']['nmse']:.4g}; "
              f"claim {'holds' if r['claim']['claim_holds'] else 'does not hold'}")
    b, fc = results["baselines"], results["forecast"]
    print(f"baselines: raw {b['raw']['nmse_test']:.3g}, NG-RC {b['ngrc']['nmse_test']:.3g}, "
          f"ESN {b['esn']['nmse_test']:.3g}; VPT (Lyapunov times) surrogate "
          f"{fc['surrogate']['mean']:.2f}, NG-RC {fc['ngrc']['mean']:.2f}, "
          f"ESN {fc['esn']['mean']:.2f}")
    print(f"wrote {out}/results.json, report.md, arrays.npz, {', '.join(files)} "
          f"in {results['timing_s']['command']:.0f} s")
    return 0
