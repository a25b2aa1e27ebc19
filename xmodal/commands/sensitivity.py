"""``xmodal sensitivity``: gradients of the bias metrics with respect to B, K and the drive gains,
a balancing search at fixed total coupling, a table and a figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from surrogate.files import read_json_file
from xmodal.arguments import (
    add_float64,
    add_out,
    add_seed,
    finite_float,
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

HELP = "bias sensitivity: d(dominance, cross share, Shapley diff)/d couplings"
DESCRIPTION = (
    "Differentiate the modality dominance D_01, the cross-modal attention shares and (Lorenz "
    "observer) the Shapley difference phi_Y - phi_X with respect to B, K and the drive gains, at "
    "fitted parameters (PARAMS.json from `xmodal fit`) or at the paper preset; then search the "
    "couplings that minimise D_01^2 at fixed totals of B and K. Writes sensitivity.json, "
    "sensitivity.md and sensitivity.png.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("params", nargs="?", metavar="PARAMS.json", help="params.json of a fit")
    p.add_argument("--preset", choices=("paper",), help="use the paper preset instead of a file")
    p.add_argument("--beta-self", type=finite_float, default=0.5, help="preset beta_self (= K)")
    p.add_argument("--beta-cross", type=finite_float, default=0.1, help="preset beta_cross (= K)")
    p.add_argument("--anchor", type=nonnegative_float, default=4.0,
                   help="preset anchoring strength h (default 4, the Lorenz presets)")
    p.add_argument("--realizations", type=positive_int, default=4,
                   help="realizations of a fit's ensemble whose gradients give the intervals "
                   "(at most the fit's R; default 4)")
    p.add_argument("--max-observer-nmse", type=positive_float, default=0.5,
                   help="refuse the Shapley metric when the Lorenz observer's test NMSE at the "
                   "base couplings exceeds this (its gradient is noise there)")
    add_out(p, default="results/sensitivity")
    p.add_argument("--dt", type=positive_float, default=0.05, help="RK4 step")
    p.add_argument("--steps", type=positive_int, default=400, help="RK4 steps of the window")
    p.add_argument("--burn", type=nonnegative_int, default=200,
                   help="steps discarded before averaging")
    p.add_argument("--drive", choices=("auto", "constant", "lorenz"), default="auto",
                   help="drive of the attention metrics: the fit's constant unit drive, or "
                   "x(t), y(t) of Lorenz-63 (auto: constant for a file, lorenz for the preset)")
    p.add_argument("--no-shapley", action="store_true", help="skip the Lorenz Shapley difference")
    p.add_argument("--ridge", type=positive_float,
                   help="fixed ridge regularisation of the Shapley readouts (default: chosen on "
                   "the validation split at the base couplings, then held fixed)")
    p.add_argument("--balance-steps", type=nonnegative_int, default=30,
                   help="steps of the balancing search")
    p.add_argument("--balance-lr", type=positive_float, default=0.01,
                   help="Adam learning rate of the balancing search")
    add_seed(p, "PRNG seed (preset graph, phases)")
    add_float64(p)


def run(args: argparse.Namespace) -> int:
    if (args.params is None) == (args.preset is None):
        raise ValueError("give either PARAMS.json or --preset paper")
    if args.params is not None and not Path(args.params).exists():
        raise ValueError(f"PARAMS.json {args.params}: no such file")
    if args.burn >= args.steps:
        raise ValueError(f"--burn must be in [0, --steps={args.steps}), got {args.burn}")
    obj = None
    if args.params is not None:
        obj = read_json_file(args.params, f"PARAMS.json {args.params}")
        if not isinstance(obj, dict):
            raise ValueError(f"PARAMS.json {args.params}: expected a JSON object")
        sizes = obj.get("surrogate", {}).get("sizes") if isinstance(obj.get("surrogate"),
                                                                     dict) else None
        if isinstance(sizes, list) and all(type(v) is int and v > 0 for v in sizes):
            n = sum(sizes)  # dense couplings, their gradients and the tangent work, float64
            check_memory(8 * 8 * n * n, f"PARAMS.json {args.params}: field 'surrogate.sizes' "
                         f"({n} oscillators)")
    check_steps(args.steps, f"--steps {args.steps}")
    out = prepare_out(args.out, force=args.force)
    print(f"sensitivity: {args.steps} steps per evaluation; compiling the metrics and their "
          f"gradients", file=sys.stderr, flush=True)

    import jax

    # Dynamics run in float32 unless --float64; the Shapley readouts' normal equations are
    # accumulated in float64 (their quadratic forms cancel strongly), as in `xmodal lorenz`.
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import surrogate as sg
    from lorenz.bias import select_lambda, shapley_difference
    from lorenz.data import Splits, lorenz_series
    from lorenz.observer import driven, observer_statistics
    from surrogate import bias as sb
    from surrogate import bias_report

    dtype = jnp.float64 if args.float64 else jnp.float32
    splits = Splits()  # the Lorenz experiment's split sizes, samples 0.04 apart
    series = None
    if obj is not None:
        from surrogate.fitting import model_from_json

        model, params = model_from_json(obj, source=f"PARAMS.json {args.params}", dtype=dtype)
        n_real = min(args.realizations, model.realizations)
        surs = [model.surrogate(params, r) for r in range(n_real)]
        theta0s = [model.theta0[r, 0] for r in range(n_real)]  # first phase draw of each
        sur, theta0 = surs[0], theta0s[0]
        c = sb.Couplings(B=params.B, K=params.K, gain=jnp.asarray(params.gain, dtype))
        source = f"fit {args.params}"
    else:
        k_model, k_theta = jax.random.split(jax.random.key(args.seed))
        sur = sg.paper_preset(k_model, args.beta_self, args.beta_cross, dtype=dtype,
                              anchor=args.anchor)
        theta0 = sg.initial_phases(k_theta, sur.network.n, dtype)
        surs, theta0s = [sur], [theta0]
        c = sb.couplings_of(sur)
        source = f"paper preset beta_self={args.beta_self:g}, beta_cross={args.beta_cross:g}"
    drive = args.drive if args.drive != "auto" else ("constant" if obj is not None else "lorenz")
    if drive == "lorenz" or not args.no_shapley:
        series = lorenz_series(splits, sample_every=4, dtype=dtype)
    if drive == "lorenz":
        surs = [driven(s, series) for s in surs]  # X <- x(t), Y <- y(t)
    elif obj is None:  # the preset with a constant unit drive
        horizon = args.dt * args.steps
        surs = [s.replace(drive=sg.make_drive(jnp.asarray([0.0, horizon], dtype),
                                              jnp.ones((2, s.network.n_populations), dtype)))
                for s in surs]
    sur = surs[0]
    window = sb.Window(dt=args.dt, n_steps=args.steps, n_burn=args.burn)

    # realizations side by side: their leaves stacked, each surrogate rebuilt inside vmap
    treedef = jax.tree.structure(surs[0])
    stacked = [jnp.stack(xs) for xs in zip(*(jax.tree.leaves(s) for s in surs), strict=False)]
    thetas = jnp.stack(theta0s)

    def per_realization(metric):
        def one(cc, leaves, th):
            return metric(cc, jax.tree.unflatten(treedef, leaves), th, window)

        return lambda cc: jax.vmap(lambda lv, th: one(cc, lv, th))(stacked, thetas)

    attention = {"D_01": per_realization(sb.dominance_metric),
                 "cross_share": per_realization(sb.cross_share_metric)}
    metrics = {}
    if not args.no_shapley:
        if sur.network.n_populations != 2:
            raise ValueError("the Shapley difference needs 2 modalities (use --no-shapley)")
        # Lorenz observer: gains multiply x(t) and y(t); evaluated at the couplings' gains
        # for the preset, at unit gains for a fit (whose gains belong to a constant drive).
        shap_gain = c.gain if obj is None else jnp.ones_like(c.gain)
        base = sb.with_couplings(sur, c.replace(gain=shap_gain))
        observer_nmse = _observer_nmse(base, theta0, series, splits)
        if not observer_nmse <= args.max_observer_nmse:
            raise ValueError(
                f"the Lorenz observer of this model has test NMSE {observer_nmse:.3g} > "
                f"--max-observer-nmse {args.max_observer_nmse:g} at the base couplings: the "
                f"gradient of phi_Y - phi_X would be noise; use --no-shapley"
                + (" or an anchored model (--anchor > 0)" if obj is None else ""))
        lam = args.ridge
        if lam is None:
            stats = jax.jit(lambda s: observer_statistics(s, theta0, series, splits))(base)
            lam = select_lambda(stats)
        metrics["phi_Y-phi_X"] = lambda cc: shapley_difference(
            cc.replace(gain=cc.gain - c.gain + shap_gain), sur, theta0, series, splits, lam=lam)
        print(f"Shapley readouts: fixed ridge lam = {lam:g}", file=sys.stderr)
    print(f"sensitivity at {source} ({drive} drive)", file=sys.stderr)
    names, rows, values, spread = _attention_table(sb, attention, c, len(surs))
    if metrics:  # the Shapley difference, realization 0
        _, shap_rows, shap_values = sb.sensitivity_table(metrics, c)
        rows.update(shap_rows)
        values.update(shap_values)
    print(f"gradients done; balancing search ({args.balance_steps} steps)", file=sys.stderr)
    path = None
    if args.balance_steps:
        path = sb.balance_couplings(lambda cc: jnp.mean(attention["D_01"](cc)), c,
                                    fields=("B", "K"),
                                    steps=args.balance_steps, learning_rate=args.balance_lr)
    table = bias_report.sensitivity_table_markdown(names, rows, values)
    per_log_b = _per_log_b(names, rows, spread, c)
    table += "\n\n" + _per_log_b_markdown(per_log_b)
    if len(surs) > 1:
        table += (f"\n\nD_01 and cross_share rows: mean over {len(surs)} realizations of the "
                  f"fit's ensemble (their range: gradient_min/max in sensitivity.json).")
    result = {
        "command": "sensitivity", "source": source, "drive": drive,
        "window": {"dt": args.dt, "steps": args.steps, "burn": args.burn},
        "ridge": None if args.no_shapley else lam,
        "couplings": {"B": np.asarray(c.B).tolist(), "K": np.asarray(c.K).tolist(),
                      "gain": np.asarray(c.gain).tolist()},
        "parameters": list(names),
        "metrics": {k: {"value": values[k], "gradient": np.asarray(v).tolist(),
                        **spread.get(k, {})} for k, v in rows.items()},
        "per_log_B": per_log_b,
        "realizations": len(surs),
        "observer_nmse": None if args.no_shapley else observer_nmse,
        "versions": versions(),
    }
    if path is not None:
        result["balance"] = {"D_01": np.asarray(path.value).tolist(),
                             "B": np.asarray(path.couplings.B).tolist(),
                             "K": np.asarray(path.couplings.K).tolist()}
    atomic_write_json(out / "sensitivity.json", result)
    ridge = None if args.no_shapley else lam
    atomic_write_bytes(out / "sensitivity.md", bias_report.sensitivity_markdown(
        source, drive, window, table, ridge, path).encode())
    bias_report.write_sensitivity_figure(out / "sensitivity.png", names, rows, path)
    print(table)
    print(f"wrote {out}/sensitivity.json, sensitivity.md, sensitivity.png")
    return 0


def _per_log_b(names, rows, spread, c) -> dict:
    """The predicted change of each attention metric per e-fold of each block B_ab
    (d metric / d log B_ab = B_ab d metric / d B_ab: the linearised response to an intervention
    that scales the block's logits, ``xmodal compare``), with its range over the realizations:
    {"B[a,b]": {metric: {"slope", "min", "max"}}}."""
    import numpy as np

    B = np.asarray(c.B, np.float64)
    out = {}
    for k, name in enumerate(names):
        if not name.startswith("B["):
            continue
        a, b = (int(x) for x in name[2:-1].split(","))
        scale = float(B[a, b])
        out[name] = {
            label: {"slope": scale * float(np.asarray(g)[k]),
                    **({"min": scale * spread[label]["gradient_min"][k],
                        "max": scale * spread[label]["gradient_max"][k]}
                       if label in spread else {})}
            for label, g in rows.items() if label == "D_01" or label.startswith("cross_share")}
    return out


def _per_log_b_markdown(per_log_b: dict) -> str:
    """The ``_per_log_b`` table: a row per block, a column per metric (slope [min, max])."""
    metrics = list(next(iter(per_log_b.values()), {}))
    lines = ["Predicted change per e-fold of a block, d metric / d log B_ab (the linearised "
             "response to scaling that block's logits; [range over realizations]):", "",
             "| block | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for block, cols in per_log_b.items():
        cells = [f"{v['slope']:+.3g}" + (f" [{v['min']:+.3g}, {v['max']:+.3g}]" if "min" in v
                                          else "") for v in cols.values()]
        lines.append(f"| {block} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _attention_table(sb, attention, c, n_real):
    """Gradient rows of the attention metrics, mean over ``n_real`` realizations (vmapped), with
    their range: (names, rows, values, {row: min/max of gradient and value})."""
    import numpy as np

    names, flat_rows, flat_values = sb.sensitivity_table(attention, c)
    rows, values, spread = {}, {}, {}
    for name in attention:
        keys = [k for k in flat_rows if k.split("[")[0] == name]
        per = len(keys) // n_real  # components per realization (row-major (n_real, per))
        for i in range(per):
            label = name if per == 1 else f"{name}[{i}]"
            grads = np.stack([flat_rows[keys[r * per + i]] for r in range(n_real)])
            vals = np.asarray([flat_values[keys[r * per + i]] for r in range(n_real)])
            rows[label], values[label] = grads.mean(0), float(vals.mean())
            if n_real > 1:
                spread[label] = {"gradient_min": grads.min(0).tolist(),
                                 "gradient_max": grads.max(0).tolist(),
                                 "value_min": float(vals.min()), "value_max": float(vals.max())}
    return names, rows, values, spread


def _observer_nmse(sur, theta0, series, splits) -> float:
    """Test NMSE of the Lorenz observer (full readout, ridge chosen on validation) of ``sur``:
    the refusal check."""
    from lorenz.observer import evaluate_observer, modality_features, observer_statistics

    stats = observer_statistics(sur, theta0, series, splits)
    return float(evaluate_observer(stats, modality_features(sur.network)).test[0])
