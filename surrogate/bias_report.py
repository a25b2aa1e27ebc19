"""The bias-sensitivity report (``xmodal sensitivity``): the gradient table in markdown, the
report around it, and the figure of the gradients and the balancing search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from surrogate.bias import BalancePath, Window

__all__ = ["sensitivity_markdown", "sensitivity_table_markdown", "write_sensitivity_figure"]


def sensitivity_table_markdown(names: Sequence[str], rows: Mapping[str, np.ndarray],
                               values: Mapping[str, float]) -> str:
    """The gradient table (markdown): one row per metric, its value and d/d each parameter."""
    head = "| metric | value | " + " | ".join(f"d/d{n}" for n in names) + " |"
    lines = [head, "| --- | --- |" + " --- |" * len(names)]
    for k, g in rows.items():
        lines.append(f"| {k} | {values[k]:+.4g} | " + " | ".join(f"{x:+.3g}" for x in g) + " |")
    return "\n".join(lines)


def sensitivity_markdown(source: str, drive: str, window: Window, table: str,
                         ridge: float | None, balance: BalancePath | None,
                         figure: str = "sensitivity.png") -> str:
    """The sensitivity report (markdown): what was differentiated, the gradient ``table``
    (``sensitivity_table_markdown``), the outcome of the balancing search and the figure."""
    md = [f"# Bias sensitivity: {source}", "",
          f"Drive: {drive}; window dt {window.dt}, {window.n_steps} steps, {window.n_burn} burn-in"
          + ("" if ridge is None else f"; Shapley readouts with fixed ridge lam = {ridge:g}")
          + ".", "",
          table, ""]
    if balance is not None:
        d = np.asarray(balance.value)
        md += [f"Balancing search (projected Adam on D_01^2, sums of B and K fixed): D_01 "
               f"{d[0]:+.4f} -> {d[-1]:+.4f}; final B = "
               f"{np.round(np.asarray(balance.couplings.B[-1]), 4).tolist()}, K = "
               f"{np.round(np.asarray(balance.couplings.K[-1]), 4).tolist()}.", ""]
    md.append(f"![sensitivity]({figure})")
    return "\n".join(md) + "\n"


def write_sensitivity_figure(path, names: Sequence[str], rows: Mapping[str, np.ndarray],
                             balance: BalancePath | None) -> None:
    """``path`` (png): the gradient table as a heat map (each row scaled by its largest |entry|)
    and, with a balancing search, D_01 along it and its path in the cross couplings."""
    from matplotlib.figure import Figure

    from surrogate.files import atomic_savefig

    grads = np.stack([np.asarray(v) for v in rows.values()])
    fig = Figure(figsize=(16, 4.2), layout="constrained")
    ax = fig.subplots(1, 3 if balance is not None else 1, squeeze=False)
    ax = ax[0]
    scale = np.abs(grads).max(1, keepdims=True)
    im = ax[0].imshow(grads / np.where(scale > 0, scale, 1), cmap="RdBu_r", vmin=-1, vmax=1,
                      aspect="auto")
    ax[0].set_xticks(range(len(names)), names, rotation=60, fontsize=8)
    ax[0].set_yticks(range(len(rows)), list(rows), fontsize=8)
    for i in range(grads.shape[0]):
        for j in range(grads.shape[1]):
            ax[0].text(j, i, f"{grads[i, j]:.2g}", ha="center", va="center", fontsize=6)
    ax[0].set_title("gradient (colour: per row / max |row|)")
    fig.colorbar(im, ax=ax[0])
    if balance is not None:
        d = np.asarray(balance.value)
        ax[1].plot(d, "o-")
        ax[1].axhline(0, color="k", lw=0.8)
        ax[1].set(xlabel="step", ylabel="D_01", title="balancing search")
        B, K = np.asarray(balance.couplings.B), np.asarray(balance.couplings.K)
        ax[2].plot(B[:, 0, 1], B[:, 1, 0], "o-", label="B (cross: [0,1] vs [1,0])")
        ax[2].plot(K[:, 0, 1], K[:, 1, 0], "s-", label="K (cross: [0,1] vs [1,0])")
        ax[2].plot(B[0, 0, 1], B[0, 1, 0], "k*", ms=10)
        ax[2].plot(K[0, 0, 1], K[0, 1, 0], "k*", ms=10, label="start")
        ax[2].set(xlabel="[0,1] (modality 0 attends to 1)",
                  ylabel="[1,0] (modality 1 attends to 0)", title="path at fixed totals")
        ax[2].legend(fontsize=8)
    atomic_savefig(fig, path)
