"""Recovery of known couplings by the anchored ensemble fit, honestly: the data are one
realization (graph, frequencies, encodings, phases) of one key, as ``xmodal simulate --bundle``
writes it; the fit's ensemble and its held-out realizations come from other keys.

    python benchmarks/fit_recovery.py [--reading tied|free] [--truths 8] [--realizations 4]
                                      [--rows FILE.jsonl] [--float64]

50 + 50 oscillators, the paper preset's graph (k = 10, p = 0.01, cross density 0.1), anchor
h = 4, omega spread 1, gains 0 (spread, gains and anchor held at the truth: the couplings are
the question), 8 layers at t_l = 4 (l + 1) / 8. Truths on the (beta_self, beta_cross) plane:
tied K = B, or free (K fixed at 0.3 in every block, the Lorenz experiment's fixed reading, and
fitted free). Printed per truth: the fitted B (and K), the simultaneous 90 % intervals,
covered or not, the interval widths (log10 high/low), the marginal intervals from the same
profiles, the rise of the deviance at every truth of the study (``surrogate.fitting.deviance``:
a truth whose rise exceeds the threshold lies outside the joint 90 % region); then whether
(1, 0.1) and (0.1, 1) are separated (each joint region excludes the other truth) and whether
some entry of B has disjoint projected intervals. Wall and CPU time per fit. In the dtype
``xmodal fit`` runs in (float32; ``--float64`` for double). ``--rows FILE``: each truth's row is
appended to FILE as one JSON line when its fit ends, and truths already there are not refitted
(a long study resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

PLANE = [(1.0, 0.1), (0.1, 1.0), (1.0, 1.0), (0.1, 0.1), (0.5, 0.5), (1.0, 0.3), (0.3, 1.0),
         (0.03, 0.3), (0.3, 0.03), (2.0, 0.5)]


def recovery(reading: str, truths, realizations: int = 4, held_out: int = 64, steps: int = 120,
             layers: int = 8, data_seed: int = 0, fit_seed: int = 1000, log=print, done=None,
             on_row=None, sizes=(50, 50)):
    """Rows per truth: dict(truth, B, K, low, high, covered, width, seconds, cpu); ``done``: rows
    already measured (their truths are skipped); ``on_row(row)`` after each fit."""
    from surrogate import fitting as sf
    from surrogate.coupling import Free, Tied

    dtype = jnp.result_type(float)
    config = sf.FitConfig(sizes=sizes, k=10, p=0.01, cross_density=0.1, anchor=4.0,
                          init_spread=1.0, fit_spread=False, fit_gain=False, restarts=2,
                          steps=steps, patience=25, polish_steps=10, coupling=Free(),
                          realizations=realizations, held_out=held_out,
                          init_B=0.3, init_K=0.3, init_noise=0.3)
    if reading == "tied":
        config = config.replace(coupling=Tied())
    rows = list(done or [])

    def params(bs, bc):
        B = jnp.asarray([[bs, bc], [bc, bs]], dtype)
        K = B if reading == "tied" else jnp.full((2, 2), 0.3, dtype)
        return sf.FitParams(B=B, K=K, omega_spread=jnp.asarray(1.0, dtype),
                            gain=jnp.zeros((2,), dtype), anchor=jnp.asarray(4.0, dtype),
                            times=sf.layer_times(jnp.zeros((0,)), layers, config.horizon, dtype))

    every = jax.tree.map(lambda *x: jnp.stack(x), *[params(*t) for t in truths])
    for i, (bs, bc) in enumerate(truths):
        if any(tuple(r["truth"]) == (bs, bc) for r in rows):
            continue
        true = params(bs, bc)
        B, K = true.B, true.K
        shares = sf.synthetic_shares(jax.random.key(data_seed + i), true, config)
        target = sf.make_target(shares)
        t0, c0 = time.perf_counter(), time.process_time()
        res = sf.fit(target, jax.random.key(fit_seed + i), config)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        iv = res.intervals
        row = {"truth": (bs, bc), "loss": float(res.loss), "seconds": sec, "cpu": cpu}
        covered = True
        for name, t in (("B", B), ("K", K)):
            lo, hi = np.asarray(iv.low[name]), np.asarray(iv.high[name])
            t = np.asarray(t)
            row[name] = np.asarray(getattr(res.params, name))
            row[f"{name}_low"], row[f"{name}_high"] = lo, hi
            row[f"{name}_in"] = (lo <= t * (1 + 1e-6)) & (t <= hi * (1 + 1e-6))
            row[f"{name}_width"] = np.log10(hi / lo)
            if name == "B" or reading == "free":
                covered &= bool(row[f"{name}_in"].all())
        row["covered"] = covered
        # beside the library's simultaneous intervals, the marginal ones (chi2_1) from the same
        # traced profiles
        pr = iv.profiles
        box = np.log(np.full(len(iv.profiled), 1e-4)), np.log(np.full(len(iv.profiled), 1e2))
        lo_m, hi_m = pr.bounds(sf.intervals.threshold(iv.level, False, 1), *box)
        lo, hi = row["B"].copy(), row["B"].copy()
        for (a, b), v in np.ndenumerate(row["B"]):
            name = f"B[{a},{b}]"
            if name in iv.profiled:
                c = iv.profiled.index(name)
                lo[a, b], hi[a, b] = min(np.exp(lo_m[c]), v), max(np.exp(hi_m[c]), v)
        row["B_marginal_low"], row["B_marginal_high"] = lo, hi
        t = np.asarray(B)
        row["B_marginal_in"] = (lo <= t * (1 + 1e-6)) & (t <= hi * (1 + 1e-6))
        row["minimum_deviance"] = pr.minimum
        row["misfit"], row["dof"], row["directions"] = pr.misfit, pr.dof, iv.basis.shape[1]
        row["threshold"] = iv.threshold
        # the likelihood-ratio test of every truth of the study: its rise above the minimum
        # (the truth is outside the joint region of B where the rise exceeds the threshold)
        rise = sf.deviance(res, target, every) - pr.minimum
        row["rise"] = {f"{a:g},{b:g}": float(r) for (a, b), r in zip(truths, rise, strict=True)}
        # why the deviance has its log det: Pearson's r^T Sigma^-1 r alone and log det Sigma
        # at the truth and at couplings 20 and 100 everywhere, with the mean realization sd of
        # the free shares there (the noise grows with the couplings)
        probe = {"truth": true, "20": params(20.0, 20.0), "100": params(100.0, 100.0)}
        pred, white = sf.realization_noise(
            res, target, jax.tree.map(lambda *x: jnp.stack(x), *probe.values()))
        pearson = np.sum(white.residuals(np.asarray(target.mass, np.float64), pred) ** 2, -1)
        sd = white.sd[:, white.keep].mean(-1)
        row["noise"] = {k: {"pearson": float(p), "logdet": float(d), "sd": float(v)}
                        for k, p, d, v in zip(probe, pearson, white.logdet, sd, strict=True)}
        rows.append(row)
        if on_row is not None:
            on_row(row)
        log(f"truth (beta_self, beta_cross) = ({bs:g}, {bc:g}): loss {res.loss:.3g}, "
            f"B = {np.round(row['B'], 3).tolist()}, 90 % low {np.round(row['B_low'], 3).tolist()}"
            f" high {np.round(row['B_high'], 3).tolist()}, inside {row['B_in'].tolist()}"
            + (f"; K = {np.round(row['K'], 3).tolist()}, low {np.round(row['K_low'], 3).tolist()}"
               f" high {np.round(row['K_high'], 3).tolist()}, inside {row['K_in'].tolist()}"
               if reading == "free" else "")
            + f"; widths log10(high/low) B {np.round(row['B_width'], 2).tolist()}; inside the "
            f"marginal intervals {row['B_marginal_in'].tolist()}; {sec:.0f} s wall, "
            f"{cpu:.0f} s cpu", flush=True)
    return rows


def separated(a: dict, b: dict) -> bool:
    """Each fit's joint 90 % region of the couplings excludes the other's truth (the
    likelihood-ratio test of the other truth rejects it, both ways)."""
    key = lambda r: ",".join(f"{t:g}" for t in r["truth"])  # noqa: E731
    return bool(a["rise"][key(b)] > a["threshold"] and b["rise"][key(a)] > b["threshold"])


def disjoint(a: dict, b: dict) -> bool:
    """Some entry of B whose projected simultaneous intervals are disjoint between the fits (a
    stricter criterion than ``separated``: the projection of a region is a box around it)."""
    return bool(np.any((a["B_high"] < b["B_low"]) | (b["B_high"] < a["B_low"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reading", choices=("tied", "free"), default="tied")
    ap.add_argument("--truths", type=int, default=8)
    ap.add_argument("--realizations", type=int, default=4)
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rows", help="JSON-lines file the rows are appended to (and resumed from)")
    ap.add_argument("--float64", action="store_true")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", args.float64)
    truths = PLANE[:args.truths]
    done = []
    if args.rows and os.path.exists(args.rows):
        with open(args.rows) as f:
            done = [json.loads(line) for line in f if line.strip()]
        done = [{k: np.asarray(v) if isinstance(v, list) and k != "truth" else v
                 for k, v in r.items()} for r in done if r.get("reading") == args.reading]

    def append(row):
        if args.rows:
            flat = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()}
            with open(args.rows, "a") as f:
                f.write(json.dumps({"reading": args.reading, **flat}, allow_nan=False) + "\n")

    rows = recovery(args.reading, truths, args.realizations, args.held_out, args.steps,
                    done=done, on_row=append)
    rows.sort(key=lambda r: truths.index(tuple(r["truth"])))
    key = lambda r: ",".join(f"{t:g}" for t in r["truth"])  # noqa: E731
    entries = sum(np.asarray(r["B_in"]).size for r in rows)
    print(f"\n{args.reading}: simultaneous 90 % intervals cover the truth in "
          f"{sum(r['covered'] for r in rows)} of {len(rows)} truths (every entry); entries of B "
          f"covered: simultaneous {sum(int(np.sum(r['B_in'])) for r in rows)} of {entries}, "
          f"marginal {sum(int(np.sum(r['B_marginal_in'])) for r in rows)}; truths inside their "
          f"joint 90 % region (the likelihood-ratio test of the truth): "
          f"{sum(r['rise'][key(r)] <= r['threshold'] for r in rows)} of {len(rows)}")
    print("| truth (b_s, b_c) | B[0,0] | B[0,1] | B[1,0] | B[1,1] | covered | rise at the truth "
          "| misfit / dof | median width (log10) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"{r['B'][i, j]:.3g} [{r['B_low'][i, j]:.3g}, {r['B_high'][i, j]:.3g}]"
                 for i in range(2) for j in range(2)]
        fit = f"{r['misfit']:.2f} / {r['dof']}" if "misfit" in r else "-"
        print(f"| {tuple(r['truth'])} | " + " | ".join(cells) + f" | {r['covered']} | "
              f"{r['rise'][key(r)]:.2f} | {fit} | {np.median(r['B_width']):.2f} |")
    a = [r for r in rows if tuple(r["truth"]) == (1.0, 0.1)]
    b = [r for r in rows if tuple(r["truth"]) == (0.1, 1.0)]
    if a and b:
        print(f"(1, 0.1) and (0.1, 1): rise of the other truth {a[0]['rise'][key(b[0])]:.3g} "
              f"and {b[0]['rise'][key(a[0])]:.3g} (threshold {a[0]['threshold']:.3g}): "
              f"separated by the joint regions: {separated(a[0], b[0])}; by disjoint projected "
              f"intervals: {disjoint(a[0], b[0])}")


if __name__ == "__main__":
    main()
