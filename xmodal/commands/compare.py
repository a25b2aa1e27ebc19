"""``xmodal compare``: the measured change of modality attention shares under an intervention
beside the fitted surrogate's prediction for the same block change (docs/interventions.md).

Reads a baseline bundle, a bundle of the same input with one intervention (bundle metadata
``interventions``) and a params.json of `xmodal fit`; writes ``report.md`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmodal.arguments import add_out

#: Bundle fields that must agree for the two runs to be comparable (warned about otherwise).
SAME = ("model", "prompt", "inputs", "layer_types", "query_set", "token_modality")


HELP = "measured vs predicted change of attention shares under an intervention"
DESCRIPTION = (
    "Per layer, the measured change of the modality attention shares between a baseline bundle and"
    " a bundle run with one --intervene (xmodal probe or xmodal emotion), beside the fitted "
    "surrogate's predicted change for the same change of B_ab (finite, and linearised in log "
    "B_ab), with sign agreement and the Spearman rank correlation. Writes report.md and "
    "summary.json.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, metavar="A.bundle", help="bundle without "
                   "intervention")
    p.add_argument("--intervened", required=True, metavar="B.bundle",
                   help="bundle of the same input with one intervention")
    p.add_argument("--params", required=True, metavar="PARAMS.json", help="params.json of "
                   "`xmodal fit` (its modalities must include the intervened block's)")
    add_out(p, help="output folder")


def _differences(a, b) -> list[str]:
    import numpy as np

    out = []
    for name in SAME:
        x, y = getattr(a, name), getattr(b, name)
        same = (np.array_equal(x, y) if isinstance(x, np.ndarray)
                else json.dumps(x, sort_keys=True, default=str)
                == json.dumps(y, sort_keys=True, default=str))
        if not same:
            out.append(f"the bundles' {name} differ: the runs may not be comparable")
    return out


def _inputs(args):
    """Read and check every input before any computation; returns (a, b, intervention, obj)."""
    from mllm_probe.bundle import load_bundle
    from mllm_probe.intervention import Intervention

    for flag in ("baseline", "intervened", "params"):
        path = getattr(args, flag)
        if not Path(path).is_file():
            raise ValueError(f"--{flag}: file {path!r} does not exist")
    a, b = load_bundle(args.baseline), load_bundle(args.intervened)
    if a.interventions:
        raise ValueError(f"--baseline {args.baseline}: field 'interventions': the baseline "
                         f"carries {[i.get('spec') for i in a.interventions]}; compare needs a "
                         f"run without intervention")
    if len(b.interventions) != 1:
        raise ValueError(f"--intervened {args.intervened}: field 'interventions': expected one "
                         f"intervention, got {len(b.interventions)}")
    change = Intervention.from_json(b.interventions[0], f"--intervened {args.intervened}")
    try:
        obj = json.loads(Path(args.params).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--params {args.params}: not JSON ({err})") from None
    mods = obj.get("modalities") if isinstance(obj, dict) else None
    if not isinstance(mods, list):
        raise ValueError(f"--params {args.params}: field 'modalities' missing (not an xmodal fit "
                         f"parameters file)")
    for name in (change.query, change.key):
        if name not in mods:
            raise ValueError(f"--params {args.params}: field 'modalities': the fit's {mods} do "
                             f"not include {name!r}, on which {change.spec()!r} acts (fit with "
                             f"--modalities including it)")
    times = (obj.get("params") or {}).get("times")
    if not isinstance(times, list) or len(times) != a.num_layers:
        raise ValueError(f"--params {args.params}: field 'params.times': the fit has "
                         f"{len(times) if isinstance(times, list) else '?'} layers, the bundles "
                         f"{a.num_layers}")
    return a, b, change, obj


def run(args: argparse.Namespace) -> int:
    a, b, change, obj = _inputs(args)
    from xmodal.report import atomic_write_bytes, atomic_write_json, prepare_out, versions

    out = prepare_out(args.out, force=args.force)
    warnings = _differences(a, b)
    for w in warnings:
        print(f"xmodal compare: warning: {w}", file=sys.stderr)

    import jax

    jax.config.update("jax_enable_x64", True)  # the prediction in float64, as `sensitivity` can
    import jax.numpy as jnp
    import numpy as np

    from mllm_probe.bundle import block_shares
    from surrogate.fitting import model_from_json
    from surrogate.response import agreement, block_response

    mods = tuple(obj["modalities"])
    model, params = model_from_json(obj, source=f"--params {args.params}", dtype=jnp.float64)
    base = block_shares(a, mods, source=args.baseline)
    moved = block_shares(b, mods, source=args.intervened)
    qa, kb = mods.index(change.query), mods.index(change.key)
    r = block_response(model, params, qa, kb, factor=change.factor, knockout=change.knockout,
                       layers=change.layers)
    measured = moved.shares - base.shares                                    # (L, M, M)
    weight = (np.asarray(base.weight) > 0) & (np.asarray(moved.weight) > 0)  # (L, M)
    first = change.layers[0] if change.layers else 0
    pairs = [(x, y) for x in range(len(mods)) for y in range(len(mods)) if x != y]
    finite, linear = np.asarray(r.finite), np.asarray(r.linear)
    rows, sel = [], []
    for layer in range(a.num_layers):
        entry = {"layer": layer, "in_range": change.layers is None
                 or change.layers[0] <= layer <= change.layers[1], "shares": {}}
        for x, y in pairs:
            if not weight[layer, x]:
                continue
            key = f"{mods[x]}<-{mods[y]}"
            entry["shares"][key] = {"baseline": float(base.shares[layer, x, y]),
                                    "measured": float(measured[layer, x, y]),
                                    "finite": float(finite[layer, x, y]),
                                    "linear": None if change.knockout
                                    else float(linear[layer, x, y])}
            if layer >= first:
                sel.append((layer, x, y))
        entry["dominance"] = _dominance_row(base.shares, moved.shares, weight, r, layer, qa, kb,
                                            change.knockout)
        rows.append(entry)
    idx = tuple(np.array(v) for v in zip(*sel, strict=True)) if sel else (np.zeros(0, int),) * 3
    summary = {
        "command": "compare", "baseline": args.baseline, "intervened": args.intervened,
        "params": args.params, "intervention": change.to_json(), "modalities": list(mods),
        "compared": "off-diagonal shares P[a, b] (query a <- key b, renormalised over the "
                    f"fit's modalities) of layers {first}..{a.num_layers - 1}",
        "warnings": warnings, "layers": rows,
        "agreement": {"finite": agreement(measured[idx], finite[idx]),
                      "linear": None if change.knockout else agreement(measured[idx],
                                                                       linear[idx])},
        "versions": versions(),
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "report.md", render(summary).encode())
    ag = summary["agreement"]["linear" if not change.knockout else "finite"]
    rho = "n/a" if ag["rho"] is None else f"{ag['rho']:+.2f}"
    print(f"wrote {out}/report.md, summary.json: sign agreement {ag['sign_agree']}/{ag['n']}, "
          f"Spearman rho {rho} ({'finite' if change.knockout else 'linear'} prediction)")
    return 0


def _dominance_row(base, moved, weight, r, layer, qa, kb, knockout) -> dict | None:
    """Measured and predicted change of D_ab = log(P[b, a] / P[a, b]) at one layer."""
    import numpy as np

    if not (weight[layer, qa] and weight[layer, kb]):
        return None
    pb, pm = np.asarray(base)[layer], np.asarray(moved)[layer]
    if min(pb[kb, qa], pb[qa, kb], pm[kb, qa], pm[qa, kb]) <= 0:
        measured = None
    else:
        measured = float(np.log(pm[kb, qa] / pm[qa, kb]) - np.log(pb[kb, qa] / pb[qa, kb]))
    finite = float(np.asarray(r.dominance_finite)[layer])
    return {"measured": measured, "finite": finite if np.isfinite(finite) else None,
            "linear": None if knockout else float(np.asarray(r.dominance_linear)[layer])}


def _num(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def render(s: dict) -> str:
    """report.md of a comparison summary."""
    i = s["intervention"]
    lines = ["# Intervention: measured against predicted", "",
             (f"Intervention `{i['spec']}`; baseline `{s['baseline']}`, intervened "
              f"`{s['intervened']}`; surrogate `{s['params']}` (modalities "
              f"{', '.join(s['modalities'])})."), ""]
    for w in s["warnings"]:
        lines.append(f"**Warning**: {w}.")
    if s["warnings"]:
        lines.append("")
    lines += [(f"Compared: {s['compared']}. Measured: the change of the bundle's share; "
               "predicted: the surrogate's change for the same change of B_ab in the time "
               "window of the layers (finite), and d/d log B_ab times log f (linear)."), "",
              ("| layer | in range | share | baseline | measured | predicted (finite) | "
               "predicted (linear) |"), "|---|---|---|---|---|---|---|"]
    for row in s["layers"]:
        for key, v in row["shares"].items():
            lines.append(f"| {row['layer']} | {'yes' if row['in_range'] else 'no'} | {key} | "
                         f"{v['baseline']:.4f} | {_num(v['measured'])} | {_num(v['finite'])} | "
                         f"{_num(v['linear'])} |")
    q, k = i["query"], i["key"]
    lines += ["", f"Dominance D = log(P[{k}, {q}] / P[{q}, {k}]), change per layer:", "",
              "| layer | measured | predicted (finite) | predicted (linear) |", "|---|---|---|---|"]
    dominance = [(row["layer"], row["dominance"]) for row in s["layers"] if row["dominance"]]
    for layer, d in dominance:
        lines.append(f"| {layer} | {_num(d['measured'])} | {_num(d['finite'])} | "
                     f"{_num(d['linear'])} |")
    if not dominance:
        lines += ["", (f"(none: the bundles need query rows of both {q} and {k}, e.g. "
                       f"`--query all`)")]
    lines += ["", ("| prediction | entries with a measured change | sign agreement | "
                   "Spearman rho |"), "|---|---|---|---|"]
    for name, ag in s["agreement"].items():
        if ag is not None:
            rho = "n/a" if ag["rho"] is None else f"{ag['rho']:+.2f}"
            lines.append(f"| {name} | {ag['n']} | {ag['sign_agree']} | {rho} |")
    lines += ["", ("One input and one pair of runs: these numbers describe this model on this "
                   "input, not a test of the surrogate in general. A random-weight tiny model has "
                   "no reason to behave as the surrogate predicts."), ""]
    return "\n".join(lines)
