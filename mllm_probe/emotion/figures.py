"""Figures of the emotion experiment (matplotlib Figures, no pyplot: no backend is set):
confusion matrices, error-attractor graphs, an alluvial (Sankey) plot of errors and the JS
distances between conditions.

Each function takes the JSON-able statistics of `mllm_probe.emotion.attractors.analyze` and
returns a matplotlib Figure; the caller saves it.
"""

from __future__ import annotations

import numpy as np

from mllm_probe.emotion.prompts import LABELS

COLORS = ("#d62728", "#8c564b", "#9467bd", "#ff7f0e", "#7f7f7f", "#1f77b4")


def _panels(stats: dict, width: float, height: float):
    """Figure with one panel per condition (one empty panel saying so when there is none)."""
    from matplotlib.figure import Figure

    conds = list(stats["conditions"])
    fig = Figure(figsize=(width * max(1, len(conds)), height))
    axes = fig.subplots(1, max(1, len(conds)), squeeze=False)
    if not conds:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no predictions", ha="center", va="center")
    return fig, list(zip(axes[0], conds, strict=False))


def confusion_figure(stats: dict):
    """Row-normalised confusion matrix per condition (counts written in the cells)."""
    fig, panels = _panels(stats, 4.2, 4)
    for ax, cond in panels:
        conf = np.asarray(stats["per_condition"][cond]["confusion"], dtype=float)
        rows = conf.sum(1, keepdims=True)
        norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(conf):
            if v:
                ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(LABELS)), LABELS, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("intended")
        acc = stats["per_condition"][cond]["accuracy"]["intended"]
        ax.set_title(f"{cond} (accuracy {acc:.2f})", fontsize=10)
    fig.tight_layout()
    return fig


def attractor_graph_figure(stats: dict):
    """Error graph per condition: labels on a circle, arrows true -> predicted, width ~ share."""
    fig, panels = _panels(stats, 4, 4)
    angles = np.pi / 2 - 2 * np.pi * np.arange(len(LABELS)) / len(LABELS)
    xy = {label: np.array([np.cos(a), np.sin(a)]) for label, a in zip(LABELS, angles, strict=False)}
    for ax, cond in panels:
        per = stats["per_condition"][cond]
        strength = per["attractor_strength"]
        for e in per["error_graph"]:
            a, b = xy[e["source"]], xy[e["target"]]
            ax.annotate("", xy=b * 0.85, xytext=a * 0.85,
                        arrowprops={"arrowstyle": "-|>", "lw": 0.5 + 5 * e["share"],
                                    "color": COLORS[LABELS.index(e["source"])], "alpha": 0.7,
                                    "connectionstyle": "arc3,rad=0.15"})
        for i, label in enumerate(LABELS):
            s = strength[label]
            size = 200 + 2500 * (0 if s is None or not np.isfinite(s) else s)
            ax.scatter(*xy[label], s=size, color=COLORS[i], zorder=3, alpha=0.9)
            ax.text(*(xy[label] * 1.22), label, ha="center", va="center", fontsize=9)
        ax.set_xlim(-1.5, 1.5)
        ax.set_ylim(-1.5, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{cond}: errors true -> predicted", fontsize=10)
    fig.text(0.5, 0.01, f"node size: share of errors received; edges below "
             f"{stats['settings']['min_share']:.0%} of the source's errors pruned",
             ha="center", fontsize=8)
    return fig


def _band(ax, x0, x1, y0a, y0b, y1a, y1b, color):
    t = np.linspace(0, 1, 50)
    s = 3 * t ** 2 - 2 * t ** 3
    x = x0 + (x1 - x0) * t
    ax.fill_between(x, y0a + (y1a - y0a) * s, y0b + (y1b - y0b) * s, color=color, alpha=0.45,
                    lw=0)


def sankey_figure(stats: dict):
    """Alluvial plot per condition: intended label (left) -> predicted label (right), errors
    only."""
    from matplotlib.patches import Rectangle

    fig, panels = _panels(stats, 4, 4.5)
    gap = 0.02
    for ax, cond in panels:
        conf = np.asarray(stats["per_condition"][cond]["confusion"], dtype=float)
        conf = conf * (1 - np.eye(len(LABELS)))
        total = conf.sum()
        ax.axis("off")
        ax.set_title(f"{cond}: {int(total)} errors", fontsize=10)
        if total == 0:
            continue
        flows = conf / total
        left = flows.sum(1)
        right = flows.sum(0)

        def tops(sizes):
            return 1 - np.concatenate([[0], np.cumsum(sizes + gap)[:-1]])

        ltop, rtop = tops(left), tops(right)
        lcur, rcur = ltop.copy(), rtop.copy()
        for i in range(len(LABELS)):
            for j in range(len(LABELS)):
                f = flows[i, j]
                if f <= 0:
                    continue
                _band(ax, 0.1, 0.9, lcur[i], lcur[i] - f, rcur[j], rcur[j] - f, COLORS[i])
                lcur[i] -= f
                rcur[j] -= f
        for k, label in enumerate(LABELS):
            for x, top, size, ha, xt in ((0.05, ltop[k], left[k], "right", 0.03),
                                         (0.9, rtop[k], right[k], "left", 0.97)):
                if size > 0:
                    ax.add_patch(Rectangle((x, top - size), 0.05, size, color=COLORS[k]))
                    ax.text(xt, top - size / 2, label, ha=ha, va="center", fontsize=8)
        ax.text(0.075, 1.05, "intended", ha="center", fontsize=8)
        ax.text(0.925, 1.05, "predicted", ha="center", fontsize=8)
        ax.set_xlim(-0.25, 1.25)
        ax.set_ylim(min(ltop[-1] - left[-1], rtop[-1] - right[-1]) - 0.02, 1.1)
    fig.tight_layout()
    return fig


def distance_figure(stats: dict):
    """JS distances between the conditions' error distributions with intervals over actors
    (descriptive: the claim's verdict comes from `statistics.claim`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    width = 0.38
    for k, (errors, offset) in enumerate((("pairs", -width / 2), ("targets", width / 2))):
        items = list(stats["js_distance"][errors].items())
        d = np.array([v["distance"] for _, v in items], dtype=float)
        lo = np.array([v["low"] for _, v in items], dtype=float)
        hi = np.array([v["high"] for _, v in items], dtype=float)
        x = np.arange(len(items)) + offset
        err = np.nan_to_num(np.stack([d - lo, hi - d]), nan=0.0).clip(0)
        ax.bar(x, np.nan_to_num(d), width, yerr=err, capsize=3, label=f"error {errors}",
               color=("#4c72b0", "#dd8452")[k])
        ax.set_xticks(np.arange(len(items)), [name.replace("|", "\nvs ") for name, _ in items],
                      fontsize=8)
    ax.set_ylabel("Jensen-Shannon distance (base 2)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    level = stats["settings"]["level"]
    ax.set_title(f"error distributions between conditions, all variants ({level:.0%} intervals "
                 f"over actors)", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {"confusion.png": confusion_figure, "attractor_graph.png": attractor_graph_figure,
           "sankey.png": sankey_figure, "js_distance.png": distance_figure}

__all__ = ["FIGURES", "attractor_graph_figure", "confusion_figure", "distance_figure",
           "sankey_figure"]
