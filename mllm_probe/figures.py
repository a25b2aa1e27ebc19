"""Attention figure of a bundle: modality-block mass by layer, and a heatmap of one layer.

Needs matplotlib (no backend is set: figures are drawn without pyplot) and no torch.
"""

from __future__ import annotations

import os

import numpy as np

from mllm_probe.bundle import Bundle


def plot_bundle(bundle: Bundle, path: str | os.PathLike, *, layer: int | None = None) -> str:
    """Write a PNG: left, head-mean mass from each query modality present to each key modality
    against layer; right, the (query modality x key modality) head-mean block of ``layer``
    (default: the last). Returns the path."""
    from matplotlib.figure import Figure

    L = bundle.num_layers
    layer = L - 1 if layer is None else int(layer)
    if not 0 <= layer < L:
        raise ValueError(f"figure layer {layer} out of range [0, {L})")
    mods = bundle.modalities
    present = [a for a, n in enumerate(bundle.query_counts()) if n > 0]
    mean = bundle.block_mass.mean(axis=1)  # (L, M, M)
    fig = Figure(figsize=(11, 4.2))
    ax_line, ax_map = fig.subplots(1, 2)
    layers = np.arange(L)
    styles = ("-", "--", ":", "-.")
    for i, a in enumerate(present):  # colour: key modality; line style: query modality
        for b in range(len(mods)):
            ax_line.plot(layers, mean[:, a, b], styles[i % len(styles)], color=f"C{b}",
                         marker="o", ms=3, label=f"{mods[a]} -> {mods[b]}")
    ax_line.set_xticks(layers if L <= 16 else layers[:: max(1, L // 12)])
    ax_line.set_xlabel("layer")
    ax_line.set_ylabel("attention mass (mean over heads)")
    ax_line.set_ylim(0, 1)
    ax_line.legend(fontsize=7, ncol=2)
    ax_line.set_title("modality-block mass by layer")
    block = mean[layer][present]
    im = ax_map.imshow(block, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax_map.set_xticks(range(len(mods)), mods)
    ax_map.set_yticks(range(len(present)), [mods[a] for a in present])
    ax_map.set_xlabel("key modality")
    ax_map.set_ylabel("query modality")
    for i in range(block.shape[0]):
        for j in range(block.shape[1]):
            ax_map.text(j, i, f"{block[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if block[i, j] < 0.5 else "black")
    ax_map.set_title(f"layer {layer} ({bundle.layer_types[layer]})")
    fig.colorbar(im, ax=ax_map)
    title = bundle.model.get("id", "") if bundle.model else ""
    fig.suptitle(f"{title}  query set: {bundle.query_set.get('kind')}", fontsize=9)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=100)
    return path


__all__ = ["plot_bundle"]
