"""Token accounting: how many positions of each modality a prompt holds.

Modality dominance in attention can be plain token dominance (a 2 s video at 2 fps costs hundreds
of vision tokens against 50 audio tokens), so every prediction row records the tokens of its media
prefix per modality, and the summary gives their distribution per condition. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from mllm_probe.modality import MODALITIES

#: Columns of the predictions table: prefix tokens per modality, then the whole prompt.
COLUMNS = tuple(f"tokens_{m}" for m in MODALITIES) + ("tokens_prompt",)


def count(token_modality) -> dict[str, int]:
    """{modality: positions} of a (S,) modality-index array (`mllm_probe.modality` order)."""
    counts = np.bincount(np.asarray(token_modality, dtype=np.int64), minlength=len(MODALITIES))
    return {m: int(c) for m, c in zip(MODALITIES, counts, strict=False)}


def distribution(rows: list[dict], conditions) -> dict:
    """Per condition: for every ``tokens_*`` column, mean/min/median/max over the clip x condition
    units of ``rows`` (table rows; a unit counts once, by its unperturbed prompt, variant 0), and
    the mean share of each modality in the media prefix. Conditions without rows map to None."""
    out = {}
    for cond in conditions:
        units = {}
        for r in rows:
            if (r["condition"] == cond and str(r["variant"]) == "0"
                    and r.get("tokens_text", "") != ""):
                units[r["clip"]] = r
        if not units:
            out[cond] = None
            continue
        stats = {"units": len(units)}
        table = {c: np.array([float(u[c]) for u in units.values()]) for c in COLUMNS}
        for c, v in table.items():
            stats[c[len("tokens_"):]] = {"mean": float(v.mean()), "min": float(v.min()),
                                         "median": float(np.median(v)), "max": float(v.max())}
        prefix = sum(table[f"tokens_{m}"] for m in MODALITIES)
        stats["prefix_share"] = {m: float(np.mean(table[f"tokens_{m}"] / np.maximum(prefix, 1)))
                                 for m in MODALITIES}
        out[cond] = stats
    return out


def markdown(dist: dict) -> list[str]:
    """Report lines: a table of the media-prefix tokens per modality per condition."""
    lines = ["| condition | units | " + " | ".join(MODALITIES) + " | whole prompt | "
             "vision : audio |", "|---|---|" + "---|" * (len(MODALITIES) + 2)]
    for cond, st in dist.items():
        if st is None:
            continue
        cells = [f"{st[m]['mean']:.1f} [{st[m]['min']:.0f}, {st[m]['max']:.0f}]"
                 for m in (*MODALITIES, "prompt")]
        ratio = (f"{st['vision']['mean'] / st['audio']['mean']:.2f}" if st["audio"]["mean"]
                 else "n/a")
        lines.append(f"| {cond} | {st['units']} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


__all__ = ["COLUMNS", "count", "distribution", "markdown"]
