"""Calibration of the emotion claim test (`mllm_probe.emotion.statistics.claim`) on simulated
tables (`mllm_probe.emotion.simulate`): how often it says "supported" / "contradicted" under the
null (one common error process) and how often it detects a planted effect (Face+Voice and
Face-only errors drawn to neutral, Voice-only errors to sad), over error-rate ratios
fv : fo : vo and clip counts. Unperturbed prompt only (the primary analysis), 4 clips per actor.

1. ``--null-tables`` null tables of 100 clips, rates 0.5 : 0.5 : 0.1, strong actor effects
   (Dirichlet concentration 1 of each actor's attractor weights, log-odds sd 1 of its error rate):
   the rate of each verdict, beside the plug-in test the project used before (difference of JS
   distances of the (intended, predicted) error cells, percentile interval over clips,
   `attractors.claim_test`) on the same tables.
2. A table of the null's false-positive rate ("supported" or "contradicted") and the planted
   effect's detection rate ("supported") over ``--runs`` tables per cell, rates scaled so that
   the largest is 0.5, moderate actor effects (concentration 5, log-odds sd 0.5).

Each directed verdict has nominal rate alpha / 2 = 0.025 under the null.

    nice -n 10 python benchmarks/emotion_calibration.py [--null-tables 2000] [--runs 100]
        [--n-perm 500] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mllm_probe.emotion import attractors as A  # noqa: E402
from mllm_probe.emotion import simulate as S  # noqa: E402
from mllm_probe.emotion import statistics as T  # noqa: E402

RATIOS = {"1:1:1": (1, 1, 1), "5:5:1": (5, 5, 1), "1:5:1": (1, 5, 1), "5:1:5": (5, 1, 5)}
CLIPS = (50, 100, 300)


def verdict_counts(process, n_tables, n_clips, *, seed, n_perm, plugin=False) -> dict:
    """{verdict: count} of `statistics.claim` (and of the plug-in test with ``plugin``)."""
    out = {"claim": dict.fromkeys(T.VERDICTS, 0), "plugin": {}}
    for child in np.random.SeedSequence(seed).spawn(n_tables):
        rng = np.random.default_rng(child)
        p = S.simulate(rng, process, n_clips=n_clips)
        out["claim"][T.claim(T.cells(p), rng=rng, n_perm=n_perm, n_boot=10)["verdict"]] += 1
        if plugin:
            _, counts = A.clip_error_counts(p, T.CLAIM_CONDITIONS, "pairs")
            v = A.claim_test(counts, T.CLAIM_CONDITIONS, seed=rng, n_boot=n_perm)["verdict"]
            out["plugin"][v] = out["plugin"].get(v, 0) + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--null-tables", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=100, help="tables per cell of the table")
    ap.add_argument("--n-perm", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    wall, cpu = time.perf_counter(), time.process_time()
    seeds = iter(np.random.SeedSequence(args.seed).generate_state(2 + 2 * len(RATIOS) * 3))

    strong = S.null((0.5, 0.5, 0.1), actor_concentration=1.0, actor_rate_sd=1.0)
    null = verdict_counts(strong, args.null_tables, 100, seed=next(seeds), n_perm=args.n_perm,
                          plugin=True)
    n = args.null_tables
    se = np.sqrt(0.025 * 0.975 / n)
    print(f"## Null: {n} tables, 100 clips, rates 0.5 : 0.5 : 0.1, strong actor effects\n")
    print("| test | supported | contradicted | no detectable effect / inconclusive | "
          "not testable |\n|---|---|---|---|---|")
    c, q = null["claim"], null["plugin"]
    print(f"| permutation (statistics.claim) | {100 * c['supported'] / n:.1f} % | "
          f"{100 * c['contradicted'] / n:.1f} % | {100 * c['no detectable effect'] / n:.1f} % | "
          f"{100 * c['not testable'] / n:.1f} % |")
    print(f"| plug-in JS difference, clip bootstrap | {100 * q.get('supported', 0) / n:.1f} % | "
          f"{100 * q.get('contradicted', 0) / n:.1f} % | {100 * q.get('inconclusive', 0) / n:.1f}"
          f" % | {100 * q.get('not testable', 0) / n:.1f} % |")
    print(f"\nnominal 2.5 % per direction; binomial s.e. at {n} tables {100 * se:.2f} %\n")

    rows = []
    print(f"## Null false positives / planted detection, {args.runs} tables per cell\n")
    print("| fv : fo : vo | rates | " + " | ".join(f"{k} clips: null FP / detected"
                                                 for k in CLIPS) + " |")
    print("|---|---|" + "---|" * len(CLIPS))
    for name, ratio in RATIOS.items():
        rates = tuple(0.5 * r / max(ratio) for r in ratio)
        cells = []
        for k in CLIPS:
            opts = {"actor_concentration": 5.0, "actor_rate_sd": 0.5}
            v0 = verdict_counts(S.null(rates, **opts), args.runs, k, seed=next(seeds),
                                n_perm=args.n_perm)["claim"]
            v1 = verdict_counts(S.planted(rates, **opts), args.runs, k, seed=next(seeds),
                                n_perm=args.n_perm)["claim"]
            fp = (v0["supported"] + v0["contradicted"]) / args.runs
            det = v1["supported"] / args.runs
            rows.append({"ratio": name, "rates": rates, "clips": k, "null": v0, "planted": v1,
                         "false_positive": fp, "detected": det})
            cells.append(f"{100 * fp:.0f} % / {100 * det:.0f} %"
                         + (f" ({v1['not testable']} n.t.)" if v1["not testable"] else ""))
        print(f"| {name} | {' / '.join(f'{r:.2g}' for r in rates)} | " + " | ".join(cells) + " |")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"\nnominal false positives 5 % (both directions); wall {wall:.0f} s, CPU {cpu:.0f} s")
    if args.json:
        print(json.dumps({"null": null, "table": rows, "wall_s": wall, "cpu_s": cpu,
                          "args": vars(args)}))


if __name__ == "__main__":
    main()
