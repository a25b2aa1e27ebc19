"""``xmodal fit``: fit the surrogate to attention bundles; write params.json, report.md, figures."""

from __future__ import annotations

import argparse
import os
import sys

from xmodal.arguments import (
    add_float64,
    add_out,
    add_seed,
    int_list,
    names_list,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from xmodal.report import (
    atomic_write_bytes,
    atomic_write_json,
    check_memory,
    check_steps,
    prepare_out,
    versions,
)

#: Structure a bundle written by `xmodal simulate --bundle` records and a fit adopts unless given
#: (the graph and encodings, not the parameters): the fit is then a well-posed recovery.
_DEFAULTS = {"k": 6, "cross_density": 0.15, "horizon": 4.0}


def _structure_hints(args: argparse.Namespace) -> dict:
    """Fill --k, --cross-density, --horizon (and --sizes, p, normalisation, encoding scale when
    not given) from the bundles' ``extra.surrogate`` record when every bundle carries the same;
    else the defaults. Returns the extra FitConfig fields."""
    from mllm_probe.bundle import load_bundle

    records = []
    for path in args.bundles:
        extra = load_bundle(path).extra
        records.append(extra.get("surrogate") if isinstance(extra, dict) else None)
    same = records[0] is not None and all(r == records[0] for r in records)
    rec = records[0] if same else {}
    for name, default in _DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, type(default)(rec.get(name, default)))
    extra = {}
    if same:
        if args.sizes is None and "sizes" in rec:
            args.sizes = tuple(int(x) for x in rec["sizes"])
        extra = {k: rec[k] for k in ("p", "normalisation", "encoding_scale") if k in rec}
        print(f"model structure from the bundle's writer ({rec.get('command', '?')}): sizes "
              f"{list(args.sizes)}, k {args.k}, cross density {args.cross_density}, horizon "
              f"{args.horizon}", file=sys.stderr)
    return extra


HELP = "fit the surrogate to attention bundles (layer depth <-> surrogate time)"
DESCRIPTION = (
    "Fit B, K, the omega spread and the input gains of the anchored surrogate so that its "
    "modality-block attention at times t_l, averaged over --realizations realizations, matches the"
    " bundles' layer-by-layer attention (KL of row-normalised blocks), with restarts, early "
    "stopping and a Levenberg-Marquardt polish; intervals from the profile likelihood under the "
    "noise of held-out realizations. "
    "Writes params.json, report.md, loss.png and residuals.png to --out.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="attention bundle files")
    add_out(p)
    p.add_argument("--modalities", type=names_list, default=("audio", "vision"),
                   help="bundle modalities mapped to surrogate populations 0, 1, ... "
                   "(default audio,vision)")
    p.add_argument("--heads", type=int_list, help="head group (indices) to average (default all)")
    p.add_argument("--sizes", type=int_list, help="oscillators per population (default: "
                   "proportional to the bundles' token counts, --n-total in all)")
    p.add_argument("--n-total", type=positive_int, default=48, help="oscillators in all")
    p.add_argument("--k", type=int, help="Watts-Strogatz degree inside a population (default 6, "
                   "or the writer's for a bundle of `xmodal simulate --bundle`)")
    p.add_argument("--cross-density", type=float, help="cross-link density (default 0.15, or "
                   "the writer's)")
    p.add_argument("--couplings", choices=("free", "tied"), default="free",
                   help="free: fit B and K; tied: K = B (the paper preset)")
    p.add_argument("--time-map", choices=("fixed", "learned"), default="fixed",
                   help="layer -> time: fixed spacing or a learned monotone map")
    p.add_argument("--horizon", type=positive_float,
                   help="time of the last layer (default 4, or "
                   "the writer's)")
    p.add_argument("--dt", type=positive_float, default=0.05, help="RK4 step")
    p.add_argument("--initial", type=positive_int, default=1,
                   help="initial phase draws per realization")
    p.add_argument("--realizations", type=positive_int, default=4,
                   help="R: realizations (graph, frequencies, encodings, phases from independent "
                   "keys) whose mean attention is fitted (default 8)")
    p.add_argument("--anchor", type=nonnegative_float, default=4.0,
                   help="anchoring strength h (default 4, the Lorenz presets); the initial value "
                   "with --fit-anchor")
    p.add_argument("--fit-anchor", action="store_true", help="fit the anchoring strength h")
    p.add_argument("--unanchored", action="store_true",
                   help="the model without the anchoring term (the first release's model)")
    p.add_argument("--held-out", type=int, default=64,
                   help="held-out realizations whose spread sets the intervals' noise "
                   "covariance (default 64; 0: no intervals; else at least 4)")
    p.add_argument("--level", type=positive_float, default=0.9, help="interval coverage")
    p.add_argument("--marginal", action="store_true",
                   help="intervals of each coordinate on its own (default: simultaneous, all "
                   "fitted coordinates inside at once with probability >= --level)")
    p.add_argument("--divergence", choices=("kl", "mse"), default="kl")
    p.add_argument("--restarts", type=positive_int, default=4)
    p.add_argument("--steps", type=positive_int, default=300, help="max Adam steps")
    p.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate")
    p.add_argument("--patience", type=positive_int, default=40, help="early-stopping patience")
    p.add_argument("--polish-steps", type=nonnegative_int, default=15,
                   help="Levenberg-Marquardt steps")
    add_seed(p, "PRNG seed (graph, phases, restarts)")
    add_float64(p, "fit in float64")


def run(args: argparse.Namespace) -> int:
    for path in args.bundles:
        if os.path.isdir(path):
            raise ValueError(f"BUNDLE {path}: is a directory, not a bundle file")
        if not os.path.isfile(path):
            raise ValueError(f"BUNDLE {path}: no such file")
    if args.held_out < 0 or 0 < args.held_out < 4:
        raise ValueError(f"--held-out must be 0 (no intervals) or >= 4, got {args.held_out}")
    if not 0 < args.level < 1:
        raise ValueError(f"--level must be in (0, 1), got {args.level}")
    if args.unanchored and args.fit_anchor:
        raise ValueError("--fit-anchor and --unanchored exclude each other")
    if args.fit_anchor and args.anchor <= 0:
        raise ValueError(f"--anchor must be > 0 with --fit-anchor, got {args.anchor}")
    hints = _structure_hints(args)
    check_steps(round(args.horizon / args.dt), f"--horizon {args.horizon} / --dt {args.dt}")
    steps = args.horizon / args.dt
    if abs(steps - round(steps)) > 1e-6 or round(steps) < 2:
        raise ValueError(f"--horizon {args.horizon} must be a multiple (>= 2) of --dt {args.dt}")
    if args.sizes is not None:
        if len(args.sizes) != len(args.modalities):
            raise ValueError(f"--sizes {','.join(map(str, args.sizes))}: give one size per "
                             f"--modalities entry ({', '.join(args.modalities)})")
        if min(args.sizes) < 1:
            raise ValueError(f"--sizes {','.join(map(str, args.sizes))}: sizes must be >= 1")
    if not 0 <= args.cross_density <= 1:
        raise ValueError(f"--cross-density must be in [0, 1], got {args.cross_density}")
    if args.k < 0 or args.k % 2:
        raise ValueError(f"--k {args.k}: the Watts-Strogatz degree must be even and >= 0")
    n = sum(args.sizes) if args.sizes else args.n_total
    item = 8 if args.float64 else 4  # dense couplings and their gradients, per evaluation
    m = len(args.modalities)
    # half-lines of the coupling profiles, padded to a power of two
    couplings = m * m * (1 if args.couplings == "tied" else 2)
    profiles = 1 << (2 * couplings - 1).bit_length() if args.held_out else 0
    lanes = max(args.restarts, profiles) * args.realizations * args.initial
    check_memory(6 * lanes * n * n * item,
                 f"{n} oscillators x --restarts {args.restarts} x --realizations "
                 f"{args.realizations} x --initial {args.initial} (x {profiles} likelihood "
                 f"profiles with --held-out {args.held_out})")
    out = prepare_out(args.out, force=args.force)

    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    from mllm_probe.bundle import load_block_shares
    from surrogate import fitting as sf
    from surrogate.coupling import Free, Tied

    config = sf.FitConfig(
        modalities=args.modalities, heads=args.heads, sizes=args.sizes, n_total=args.n_total,
        k=args.k, cross_density=args.cross_density,
        coupling=Tied() if args.couplings == "tied" else Free(),
        time_map=args.time_map, horizon=args.horizon, dt=args.dt, n_initial=args.initial,
        divergence=args.divergence, restarts=args.restarts, steps=args.steps,
        learning_rate=args.lr, patience=args.patience, polish_steps=args.polish_steps,
        anchored=not args.unanchored, anchor=args.anchor, fit_anchor=args.fit_anchor,
        realizations=args.realizations, held_out=args.held_out, level=args.level,
        simultaneous=not args.marginal,
        **hints)
    targets = []
    for path in args.bundles:
        s = load_block_shares(path, args.modalities, args.heads)
        targets.append(sf.make_target(s.shares, s.weight, s.modalities, s.token_counts,
                                      (s.source,)))
    target = sf.combine_targets(targets)
    print(f"fitting {len(args.bundles)} bundle(s): {target.num_layers} layers, modalities "
          f"{', '.join(args.modalities)}", file=sys.stderr)

    def progress(step, losses):
        finite = losses[np.isfinite(losses)]
        best = f"{finite.min():.4g}" if finite.size else "-"
        print(f"step {step + 1}/{args.steps}: best loss {best}, {finite.size} of "
              f"{len(losses)} restarts running", file=sys.stderr, flush=True)

    result = sf.fit(target, jax.random.key(args.seed), config, seed=args.seed, progress=progress,
                    log=lambda message: print(message, file=sys.stderr, flush=True))
    obj = result.to_json()
    obj["versions"] = versions()
    atomic_write_json(out / "params.json", obj)
    figures = sf.write_fit_figures(out, result)
    report = sf.fit_report_markdown(result, figures=figures)
    atomic_write_bytes(out / "report.md", report.encode())
    p = result.params
    print(f"loss {result.loss:.4g} after {result.steps_run} steps ({result.seconds:.1f} s)")
    print(f"B = {np.round(np.asarray(p.B), 4).tolist()}, "
          f"K = {np.round(np.asarray(p.K), 4).tolist()}")
    if result.intervals is not None:
        iv = result.intervals
        print(f"{round(100 * iv.level)} % intervals of B: low "
              f"{np.round(np.asarray(iv.low['B']), 4).tolist()}, high "
              f"{np.round(np.asarray(iv.high['B']), 4).tolist()}")
        pr = iv.profiles
        if pr.dof > 0:
            print(f"misfit r^T Sigma^-1 r = {pr.misfit:.4g} on {pr.dof} degrees of freedom "
                  f"(P(chi2 >= misfit) = {pr.misfit_p:.3g})"
                  + ("; the model class does not hold these data: the intervals cover "
                     "realization noise only" if pr.misfit_p < 1e-3 else ""))
        else:
            print(f"misfit r^T Sigma^-1 r = {pr.misfit:.4g}: not testable (the noise has no more "
                  f"principal directions than the fit has trained coordinates)")
    if result.unidentified:
        print(f"not pinned down by the data: {', '.join(result.unidentified)}")
    print(f"wrote {out}/params.json, report.md, loss.png, residuals.png")
    return 0

