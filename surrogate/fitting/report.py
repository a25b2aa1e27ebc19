"""The fit report: markdown (data, settings, loss, parameters with their restart spread,
per-layer residuals, identifiability) and the figures of the loss curves and residuals.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from surrogate.fitting.result import FitResult

__all__ = ["fit_report_markdown", "write_fit_figures"]


def fit_report_markdown(result: FitResult, figures: Sequence[str] = ()) -> str:
    """The fit report (markdown): data, settings, loss, parameters with restart spread, per-layer
    residuals, identifiability."""
    c, p, t = result.config, result.params, result.target
    mods = list(t.modalities)

    def mat(name):
        a, s = np.asarray(getattr(p, name)), np.asarray(result.spread[name], float)
        rows = [f"| {name} | " + " | ".join(mods) + " |", "| --- |" + " --- |" * len(mods)]
        for i, qm in enumerate(mods):
            rows.append(f"| {qm} | " + " | ".join(
                f"{a[i, j]:.4g} +- {s[i, j]:.2g}" for j in range(len(mods))) + " |")
        return "\n".join(rows)

    gain_s = np.asarray(result.spread["gain"], float)
    lines = [
        "# Surrogate fit report", "",
        f"Sources: {', '.join(t.sources)}", "",
        f"Modalities -> populations: {', '.join(f'{m} -> {i}' for i, m in enumerate(mods))}; "
        f"sizes {list(result.sizes)} (token counts {[round(x) for x in t.token_counts]}); "
        f"{t.num_layers} layers; heads "
        f"{'all (mean)' if c.heads is None else list(c.heads)}.", "",
        f"Time map: {c.time_map}, horizon {c.horizon}, dt {c.dt}; divergence {c.divergence}; "
        f"{c.restarts} restarts x up to {c.steps} Adam steps (lr {c.learning_rate}, patience "
        f"{c.patience}); {result.steps_run} steps run, {result.seconds:.1f} s.", "",
        f"**Loss** {result.loss:.4g} (best restart {result.best_restart}; restart losses "
        f"{', '.join(f'{x:.3g}' for x in result.restart_loss)}; "
        f"{int(result.converged.sum())} converged: loss <= 1.5 x best + "
        f"{c.converged_within:g}).", "",
        "## Parameters (value +- std over converged restarts)", "",
        "Rows: query modality, columns: key modality.", "",
        mat("B"), "", mat("K"), "",
        "Model: " + (f"anchored, h = {float(p.anchor):.4g}" if c.anchored else "unanchored") +
        f"{' (fitted)' if c.anchored and c.fit_anchor else ''}; mean over {c.realizations} "
        f"realizations (graph, frequencies, encodings, phases) x {c.n_initial} initial "
        f"phase draws.", "",
        f"omega_spread = {float(p.omega_spread):.4g} +- "
        f"{float(np.asarray(result.spread['omega_spread'])):.2g} rad/unit", "",
        "gain = " + ", ".join(f"{m}: {g:.4g} +- {s:.2g}"
                              for m, g, s in zip(mods, np.asarray(p.gain), gain_s,
                                                 strict=False)), "",
        "layer times t_l = " + ", ".join(f"{x:.3g}" for x in np.asarray(p.times)), "",
        "## Per-layer residuals", "",
        "| layer | t_l | residual | target row shares (cross) | model row shares (cross) |",
        "| --- | --- | --- | --- | --- |",
    ]
    tm, mm = np.asarray(t.mass), result.model_mass
    for layer in range(t.num_layers):
        cross_t = [f"{tm[layer, a, b]:.3f}" for a in range(len(mods)) for b in range(len(mods))
                   if a != b]
        cross_m = [f"{mm[layer, a, b]:.3f}" for a in range(len(mods)) for b in range(len(mods))
                   if a != b]
        lines.append(f"| {layer} | {float(np.asarray(p.times)[layer]):.3g} | "
                     f"{result.layer_residual[layer]:.3g} | {', '.join(cross_t)} | "
                     f"{', '.join(cross_m)} |")
    lines += _interval_lines(result)
    ev = result.hessian_eigvals
    lines += [
        "", "## Identifiability", "",
        f"Hessian of the loss in log coordinates (B, K, omega_spread) and raw gains/time logits: "
        f"eigenvalues {', '.join(f'{x:.2e}' for x in ev)}.", "",
        f"Directions with eigenvalue below {c.sloppy_ratio:g} x the largest are not pinned down "
        f"by the data:", "",
    ]
    lines += [f"- {d}" for d in result.sloppy_directions] or ["- none"]
    lines += ["", "Parameters mostly inside that sloppy subspace: "
              + (", ".join(result.unidentified) if result.unidentified else "none") + ".", ""]
    lines += [f"![{os.path.splitext(f)[0]}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _interval_lines(result: FitResult) -> list[str]:
    iv, c = result.intervals, result.config
    if iv is None:
        return ["", "## Intervals", "", "No intervals (held_out 0)."]
    kind = (f"simultaneous (chi2_{len(iv.profiled)})" if iv.simultaneous else "marginal (chi2_1)")
    lines = ["", f"## {round(100 * iv.level)} % intervals", "",
             f"Couplings: profile likelihood under the realization noise, the Gaussian deviance "
             f"of the free shares projected on the {iv.basis.shape[1]} principal directions of "
             f"their noise, with the covariance of {iv.draws} held-out realizations at each "
             f"point (x (1 + 1/R) for the {c.realizations}-realization "
             f"mean); an interval holds the values whose profile (the other coordinates "
             f"re-optimised) rises by at most {iv.threshold:.3g} above the minimum "
             f"{iv.profiles.minimum:.3g}, {kind}, within 1e-4 .. 1e2 (a bound at the box: the "
             f"data do not bound it). Spread, gains and anchor: linearised, +- sqrt(q) x their "
             f"sd under the same noise. They cover realization noise, not a model that cannot "
             f"fit the data: the misfit r^T Sigma^-1 r at the fit is {iv.profiles.misfit:.4g} "
             + (f"on {iv.profiles.dof} degrees of freedom (P(chi2 >= misfit) = "
                f"{iv.profiles.misfit_p:.3g}; a small value says the model class does not hold "
                f"the data and the intervals do not mean what they say)."
                if iv.profiles.dof > 0 else
                "(not testable: the noise has no more principal directions than the fit has "
                "trained coordinates)."), "",
             "| parameter | value | low | high | interval | linearised sd (raw) |",
             "| --- | --- | --- | --- | --- | --- |"]
    flat = {n: i for i, n in enumerate(result.param_names)}
    for name in ("B", "K", "omega_spread", "gain", "anchor"):
        value = np.asarray(getattr(result.params, name))
        lo, hi = np.asarray(iv.low[name]), np.asarray(iv.high[name])
        for idx in np.ndindex(value.shape):
            label = name + (f"[{','.join(map(str, idx))}]" if idx else "")
            i = flat.get(label)
            fs = f"{iv.fisher_sd[i]:.3g}" if i is not None else "fixed"
            how = ("profile" if label in iv.profiled else "linearised" if i is not None
                   else "tied to B" if name == "K" else "fixed")
            lines.append(f"| {label} | {value[idx]:.4g} | {lo[idx]:.4g} | {hi[idx]:.4g} | "
                         f"{how} | {fs} |")
    return lines


def write_fit_figures(out: str | os.PathLike, result: FitResult) -> tuple[str, str]:
    """Write ``loss.png`` (loss per Adam step of every restart, the polished best) and
    ``residuals.png`` (target vs fitted cross-modal shares per layer, per-layer residual) into
    the directory ``out``; returns their file names."""
    from matplotlib.figure import Figure

    from surrogate.files import atomic_savefig

    out = Path(out)
    fig = Figure(figsize=(6, 4), constrained_layout=True)
    ax = fig.subplots()
    for r, curve in enumerate(result.curves):
        ax.semilogy(np.arange(1, curve.size + 1), curve, label=f"restart {r}",
                    lw=2 if r == result.best_restart else 1)
    ax.axhline(result.loss, color="k", ls=":", label="after polish (best)")
    ax.set(xlabel="Adam step", ylabel=f"loss ({result.config.divergence})", title="fit loss")
    ax.legend(fontsize=8)
    atomic_savefig(fig, out / "loss.png")

    t, m = np.asarray(result.target.mass), result.model_mass
    w = np.asarray(result.target.weight)
    mods = result.target.modalities
    layers = np.arange(t.shape[0])
    fig = Figure(figsize=(11, 4), constrained_layout=True)
    ax = fig.subplots(1, 2)
    for a in range(len(mods)):
        for b in range(len(mods)):
            if a == b:
                continue
            present = w[:, a] > 0
            line, = ax[0].plot(layers[present], t[present, a, b], "o",
                               label=f"{mods[a]} -> {mods[b]} (bundle)")
            ax[0].plot(layers, m[:, a, b], "-", color=line.get_color(),
                       label=f"{mods[a]} -> {mods[b]} (surrogate)")
    ax[0].set(xlabel="layer", ylabel="cross-modal share of the row", title="target vs fit")
    ax[0].legend(fontsize=8)
    ax[1].bar(layers, result.layer_residual)
    ax[1].set(xlabel="layer", ylabel=f"residual ({result.config.divergence})",
              title="per-layer residual")
    atomic_savefig(fig, out / "residuals.png")
    return "loss.png", "residuals.png"
