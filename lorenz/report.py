"""The claim check and ``report.md`` of the Lorenz experiment."""

from __future__ import annotations

import numpy as np

__all__ = ["claim_check", "render_report"]


def _imbalance(phi_x, phi_y):
    """|phi_Y - phi_X| / (|phi_X| + |phi_Y|), 0 balanced .. 1 one modality alone."""
    return np.abs(phi_y - phi_x) / np.maximum(np.abs(phi_x) + np.abs(phi_y), 1e-12)


def claim_check(results: dict) -> dict:
    """Test the paper's claim on the grid: low beta -> one modality dominates and NMSE is worse;
    high beta -> balanced attributions and the lowest NMSE.

    "Low" is the corner block where both betas lie in the lowest quarter of the log range,
    "high" the block where both lie in the highest quarter.
    """
    nmse = np.asarray(results["nmse"])
    phi_x, phi_y = np.asarray(results["phi_x"]), np.asarray(results["phi_y"])
    g = nmse.shape[0]
    q = max(1, g // 4)
    low, high = (slice(0, q), slice(0, q)), (slice(g - q, g), slice(g - q, g))
    imb = _imbalance(phi_x, phi_y)
    best = tuple(results["best"]["index"])
    out = {
        "block_size": q,
        "nmse_low": float(nmse[low].mean()),
        "nmse_high": float(nmse[high].mean()),
        "imbalance_low": float(imb[low].mean()),
        "imbalance_high": float(imb[high].mean()),
        "best_in_high_block": bool(best[0] >= g - q and best[1] >= g - q),
        "min_nmse": float(nmse.min()),
    }
    out["nmse_lower_at_high_beta"] = out["nmse_high"] < out["nmse_low"]
    out["more_balanced_at_high_beta"] = out["imbalance_high"] < out["imbalance_low"]
    out["observer_beats_mean_predictor"] = out["min_nmse"] < 0.9
    out["claim_holds"] = bool(out["nmse_lower_at_high_beta"] and out["more_balanced_at_high_beta"]
                              and out["best_in_high_block"] and out["observer_beats_mean_predictor"])
    return out


def _f(x):
    return f"{x:.4g}"


def render_report(results: dict) -> str:
    c = results["claim"]
    cfg = results["config"]
    b = results["baselines"]
    fc = results["forecast"]
    corners = results["corners"]
    lines = [
        "# Lorenz observer experiment",
        "",
        f"Surrogate: paper preset (50 + 50 oscillators, Watts-Strogatz k = 10, p = 0.01, "
        f"cross density 0.1, K = B), omega ~ N(0, {cfg['omega_spread']}^2), gain "
        f"{cfg['gain']}; X <- x(t), Y <- y(t), ridge readout of sin/cos of the phases -> z(t). "
        f"Lorenz-63 by RK4 dt = {cfg['dt']}, samples every {cfg['sample_every']} steps; splits "
        f"(samples) washout {cfg['washout']}, train {cfg['train']}, validation {cfg['val']}, test "
        f"{cfg['test']}. Grid {cfg['grid']} x {cfg['grid']}, beta from {cfg['beta_min']:g} to "
        f"{cfg['beta_max']:g} (log), seed {cfg['seed']}.",
        "",
        "## Findings",
        "",
        f"- Test NMSE over the plane: min {_f(results['best']['nmse'])} at beta_self = "
        f"{results['best']['beta_self']:.3g}, beta_cross = {results['best']['beta_cross']:.3g}; "
        f"max {_f(results['worst']['nmse'])} at beta_self = {results['worst']['beta_self']:.3g}, "
        f"beta_cross = {results['worst']['beta_cross']:.3g}.",
        "- Corners (NMSE, phi_X, phi_Y):",
    ]
    for name, v in corners.items():
        lines.append(f"  - {name} (beta_self {v['beta_self']:.3g}, beta_cross "
                     f"{v['beta_cross']:.3g}): NMSE {_f(v['nmse'])}, phi_X {_f(v['phi_x'])}, "
                     f"phi_Y {_f(v['phi_y'])}")
    lines += [
        "- Largest conditional Lyapunov exponents (same drive, perturbed phases; per time "
        "unit): " + "; ".join(
            f"{name} point: plain {_f(v['plain_largest'])}, transverse to the global phase "
            f"shift {', '.join(_f(e) for e in v['transverse'])}"
            for name, v in results["conditional_lyapunov"].items()) + ".",
        f"- Baselines on the same data (test NMSE): ridge on [x, y] {_f(b['raw']['nmse_test'])}, "
        f"NG-RC (quadratic, delays) {_f(b['ngrc']['nmse_test'])}, echo-state network "
        f"({cfg['esn_size']} units) {_f(b['esn']['nmse_test'])}.",
        f"- Autonomous forecasting, valid prediction time (threshold 0.4, Lyapunov times, mean "
        f"+- sd over {len(fc['starts'])} starts): NG-RC {fc['ngrc']['mean']:.2f} +- "
        f"{fc['ngrc']['std']:.2f}; surrogate at the best point {fc['surrogate']['mean']:.2f} +- "
        f"{fc['surrogate']['std']:.2f}.",
        "",
        "## The paper's claim in this run",
        "",
        "Claim: at low beta one modality dominates and NMSE is worse; at high beta the "
        "attributions balance and NMSE is lowest.",
        "",
        f"- Mean test NMSE, low-beta block ({c['block_size']} x {c['block_size']}): "
        f"{_f(c['nmse_low'])}; high-beta block: {_f(c['nmse_high'])} "
        f"({'lower' if c['nmse_lower_at_high_beta'] else 'not lower'} at high beta).",
        f"- Attribution imbalance |phi_Y - phi_X| / (|phi_X| + |phi_Y|): low {_f(c['imbalance_low'])}, "
        f"high {_f(c['imbalance_high'])} "
        f"({'more' if c['more_balanced_at_high_beta'] else 'not more'} balanced at high beta).",
        f"- Best point in the high-beta block: {'yes' if c['best_in_high_block'] else 'no'}.",
        f"- The observer beats the mean predictor somewhere (min NMSE < 0.9): "
        f"{'yes' if c['observer_beats_mean_predictor'] else 'no'}.",
        "",
        f"**Verdict: the claim {'holds' if c['claim_holds'] else 'does not hold'} in this run.**",
        "",
    ]
    if not c["observer_beats_mean_predictor"]:
        top = max(v["transverse"][0] for v in results["conditional_lyapunov"].values())
        lines += [
            "Why the observer fails here: the drive enters the phase velocity additively "
            "(omega_i + g_i u(t)), so the driven surrogate is invariant under a global phase "
            "shift and its plain largest conditional Lyapunov exponent is 0: the common phase "
            "integrates the drive (theta ~ g * integral of x dt) instead of forgetting it. The "
            f"largest exponent transverse to that shift is {_f(top)} at the points above, not "
            "clearly negative either, so the features sin/cos(theta) carry no echo-state "
            "memory of the recent drive. With test NMSE near 1 the Shapley values are "
            "differences of near-equal numbers and carry little signal.",
            "",
        ]
    lines += [
        "Figures: `phase_map.png` (NMSE heat map; arrows: right = X dominates, up = Y "
        "dominates, 45 degrees = balanced), `shapley.png`, `prediction.png`, `attractor.png`.",
        f"Run time: sweep {results['timing_s']['sweep']:.1f} s, total "
        f"{results['timing_s']['total']:.1f} s on {results['device']['count']} x "
        f"{results['device']['kind']}.",
        "",
    ]
    return "\n".join(lines)
