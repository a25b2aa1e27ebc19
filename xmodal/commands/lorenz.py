"""``xmodal lorenz``: the Lorenz observer experiment of the source paper, one command."""

from __future__ import annotations

import argparse
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
        description="Sweep the (beta_self, beta_cross) plane with the surrogate observer "
        "(X <- x(t), Y <- y(t), readout -> z(t)); write results.json, report.md, phase_map.png, "
        "prediction.png, attractor.png, shapley.png.",
    )
    p.add_argument("--grid", type=positive_int, default=16, help="points per beta axis (>= 2)")
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
    check_memory(16 * 8 * args.grid**2, f"--grid {args.grid} ({args.grid**2} points)")
    out = prepare_out(args.out, force=args.force, resume=args.resume)
    if args.force and not args.resume:
        remove_store(out / "sweep")
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
    config = LorenzConfig(grid=args.grid, seed=args.seed)
    results, arrays = run_experiment(config, out, resume=args.resume, progress=not args.quiet,
                                     log=log)
    results["versions"] = versions()
    files = write_figures(out, arrays)
    atomic_write_npz(out / "arrays.npz", betas=arrays["betas"], nmse=arrays["nmse"],
                     phi=arrays["phi"], z_true=arrays["series_raw"][:, 2],
                     z_hat_best=arrays["preds"]["best"]["z_hat"],
                     z_hat_worst=arrays["preds"]["worst"]["z_hat"])
    results["timing_s"]["command"] = time.perf_counter() - t0
    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "report.md", render_report(results).encode())
    c = results["claim"]
    print(f"NMSE min {results['best']['nmse']:.4g} max {results['worst']['nmse']:.4g}; "
          f"baselines: raw {results['baselines']['raw']['nmse_test']:.3g}, "
          f"NG-RC {results['baselines']['ngrc']['nmse_test']:.3g}, "
          f"ESN {results['baselines']['esn']['nmse_test']:.3g}; "
          f"claim {'holds' if c['claim_holds'] else 'does not hold'}")
    print(f"wrote {out}/results.json, report.md, arrays.npz, {', '.join(files)} "
          f"in {results['timing_s']['command']:.0f} s")
    return 0
