"""Error-attractor statistics of emotion predictions (numpy only; no torch).

K = 6 labels (`LABELS` order), N prediction rows. An *error* is a row whose prediction differs from
the intended label (rows whose prompt forbids the intended label are errors by construction; they
show where the model falls back).

- `confusion`: (K, K) counts, rows = intended, columns = predicted.
- `error_graph`: edge t -> p (t != p) weighted by the share of t's errors that go to p; edges below
  ``min_share`` (default 0.10, i.e. fewer than one in ten of the source label's errors) or with
  fewer than ``min_count`` errors are pruned. Self-loops never appear.
- `hierarchy`: the fallback order. Level 1 is the label most predicted over all errors; level k is
  the label most predicted over the errors of the rows whose prompt forbids levels 1..k-1 (so it
  says where errors go once the preferred attractors are forbidden). Ties go to the earlier label.
  It is computed from a `fallback_table` (rows and errors per forbidden-label set), which actor
  resamples reweight (`mllm_probe.emotion.statistics.kept_rank`).
- Error distributions: over the K (K - 1) off-diagonal (intended, predicted) cells ("pairs") or
  over the predicted label of errors ("targets").
- `js_distance`: Jensen-Shannon *distance* (square root of the divergence) with base-2 logarithms:
  0 for identical distributions, 1 for disjoint ones (in nats the divergence of disjoint ones is
  ln 2). `bootstrap_distances` resamples units (actors in `analyze`) with replacement (explicit
  seed) for percentile intervals; distances from finite counts are biased upward, more so with
  fewer errors, so an interval may lie above the point estimate when the distributions are close,
  and a difference of two such distances is no test (`claim_test` is that uncalibrated test, kept
  as the baseline of the calibration benchmark; verdicts come from `statistics.claim`).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from mllm_probe.emotion.datasets import CLIP_NAME
from mllm_probe.emotion.prompts import LABELS

K = len(LABELS)
#: Default pruning threshold of the error graph (share of the source label's errors).
MIN_SHARE = 0.10


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
    """Prediction rows as arrays: clip (N,) str, condition (N,) str, variant (N,) int,
    intended / predicted (N,) int label indices, forbidden / perceived (N, K) bool, actor (N,)
    str (the unit of replication: see `actor_of`)."""

    clip: np.ndarray
    condition: np.ndarray
    variant: np.ndarray
    intended: np.ndarray
    predicted: np.ndarray
    forbidden: np.ndarray
    perceived: np.ndarray
    actor: np.ndarray

    def where(self, mask) -> Predictions:
        return Predictions(**{f.name: getattr(self, f.name)[mask]
                              for f in dataclasses.fields(self)})

    def __len__(self) -> int:
        return int(self.clip.shape[0])


def _labels_mask(text: str) -> np.ndarray:
    parts = {p for p in (text or "").split(":") if p}
    return np.array([label in parts for label in LABELS])


def actor_of(clip: str, given: str = "") -> str:
    """The actor of a clip: ``given`` (a table or manifest column ``actor``) when not empty, else
    the CREMA-D actor id (1001-1091) that starts a CREMA-D clip name, else the clip itself (its own
    cluster)."""
    if given:
        return given
    m = CLIP_NAME.match(clip)
    return m.group(1) if m else clip


def from_rows(rows, predicted_column: str = "predicted", source: str = "predictions table"
              ) -> Predictions:
    """`Predictions` from predictions-table rows (dicts of strings); rows whose
    ``predicted_column`` is empty (e.g. an unparsed generated answer) are left out. A value that
    does not parse raises ValueError naming ``source``, the line (header = line 1) and the field."""
    idx = {label: i for i, label in enumerate(LABELS)}
    kept = []
    for line, r in enumerate(rows, start=2):
        if not r.get(predicted_column):
            continue
        for field in ("intended", predicted_column):
            if r.get(field) not in idx:
                raise ValueError(f"{source} line {line}, field {field!r}: unknown label "
                                 f"{r.get(field)!r} (expected one of {LABELS})")
        for field in ("forbidden", "perceived"):
            bad = [x for x in (r.get(field) or "").split(":") if x and x not in idx]
            if bad:
                raise ValueError(f"{source} line {line}, field {field!r}: unknown label "
                                 f"{bad[0]!r} (expected labels joined by ':')")
        variant = str(r.get("variant", ""))
        if not variant.isdigit():
            raise ValueError(f"{source} line {line}, field 'variant': expected a non-negative "
                             f"integer, got {variant!r}")
        if not r.get("clip") or not r.get("condition"):
            raise ValueError(f"{source} line {line}, field "
                             f"{'clip' if not r.get('clip') else 'condition'!r}: empty")
        kept.append(r)
    return Predictions(
        clip=np.array([r["clip"] for r in kept], dtype=object),
        condition=np.array([r["condition"] for r in kept], dtype=object),
        variant=np.array([int(r["variant"]) for r in kept], dtype=np.int64),
        intended=np.array([idx[r["intended"]] for r in kept], dtype=np.int64),
        predicted=np.array([idx[r[predicted_column]] for r in kept], dtype=np.int64),
        forbidden=np.array([_labels_mask(r["forbidden"]) for r in kept], dtype=bool).reshape(-1, K),
        perceived=np.array([_labels_mask(r["perceived"]) for r in kept], dtype=bool).reshape(-1, K),
        actor=np.array([actor_of(r["clip"], r.get("actor") or "") for r in kept], dtype=object),
    )


def confusion(intended, predicted, k: int = K) -> np.ndarray:
    """(k, k) int64 counts; rows intended, columns predicted."""
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (np.asarray(intended), np.asarray(predicted)), 1)
    return out


def accuracy(p: Predictions) -> dict:
    """Accuracy against the intended label (all rows, unperturbed prompt, rows that allow the
    intended label) and against the perceived labels (prediction in the perceived set; rows
    with a perceived set only). NaN where there are no rows."""
    def frac(mask, ok):
        return float(ok[mask].mean()) if mask.any() else float("nan")

    ok = p.predicted == p.intended
    allowed = ~p.forbidden[np.arange(len(p)), p.intended] if len(p) else np.zeros(0, bool)
    has_perceived = p.perceived.any(1)
    in_perceived = p.perceived[np.arange(len(p)), p.predicted] if len(p) else np.zeros(0, bool)
    return {"intended": frac(np.ones(len(p), bool), ok),
            "intended_unperturbed": frac(p.variant == 0, ok),
            "intended_allowed": frac(allowed, ok),
            "perceived": frac(has_perceived, in_perceived),
            "perceived_unperturbed": frac(has_perceived & (p.variant == 0), in_perceived),
            "rows": len(p)}


def error_graph(conf: np.ndarray, min_share: float = MIN_SHARE, min_count: int = 1) -> list[dict]:
    """Pruned edges {source, target, count, share} of the error graph of a confusion matrix,
    sorted by decreasing share (see the module docstring)."""
    conf = np.asarray(conf)
    errors = conf.sum(1) - np.diag(conf)
    edges = []
    for t, q in itertools.product(range(conf.shape[0]), repeat=2):
        if t == q or conf[t, q] == 0:
            continue
        share = conf[t, q] / errors[t]
        if share >= min_share and conf[t, q] >= min_count:
            edges.append({"source": LABELS[t], "target": LABELS[q], "count": int(conf[t, q]),
                          "share": float(share)})
    return sorted(edges, key=lambda e: (-e["share"], e["source"], e["target"]))


def attractor_strength(conf: np.ndarray) -> np.ndarray:
    """(K,) share of all errors that land on each label (in-flow of the error graph)."""
    off = np.asarray(conf, dtype=float) * (1 - np.eye(len(conf)))
    total = off.sum()
    return off.sum(0) / total if total else np.full(len(conf), np.nan)


def fallback_table(p: Predictions, groups=None, n_groups: int = 1) -> np.ndarray:
    """(n_groups, 2**K, K + 1) float: per group of rows (``groups`` (N,) int in [0, n_groups);
    None: one group) and forbidden-label set (bit k = label k forbidden), the rows (column 0) and
    the errors predicting each label (columns 1..K)."""
    bits = p.forbidden.astype(np.int64) @ (1 << np.arange(K)) if len(p) else np.zeros(0, int)
    g = np.zeros(len(p), np.int64) if groups is None else np.asarray(groups)
    out = np.zeros((n_groups, 1 << K, K + 1))
    np.add.at(out, (g, bits, 0), 1.0)
    err = p.predicted != p.intended
    np.add.at(out, (g[err], bits[err], 1 + p.predicted[err]), 1.0)
    return out


def hierarchy_of_table(table: np.ndarray, max_levels: int = 5) -> list[dict]:
    """The fallback order [{label, share, errors, rows}] of a `fallback_table`."""
    table = np.asarray(table, dtype=float)
    sets = np.arange(table.shape[0])
    chosen: list[int] = []
    levels = []
    for _ in range(max_levels):
        need = sum(1 << c for c in chosen)
        sel = table[(sets & need) == need].sum(0)
        counts = sel[1:].copy()
        errors = counts.sum()
        counts[chosen] = -1  # a forbidden label cannot be a fallback (generated answers may be)
        if errors <= 0 or counts.max() <= 0:
            break
        best = int(np.argmax(counts))
        levels.append({"label": LABELS[best], "share": float(counts[best] / errors),
                       "errors": int(round(errors)), "rows": int(round(sel[0]))})
        chosen.append(best)
    return levels


def hierarchy(p: Predictions, max_levels: int = 5) -> list[dict]:
    """Fallback order of the errors [{label, share, errors, rows}] (see the module docstring)."""
    return hierarchy_of_table(fallback_table(p)[0], max_levels)


def error_counts(p: Predictions, errors: str = "pairs") -> np.ndarray:
    """Error counts: "pairs" -> (K (K - 1),) off-diagonal cells in row-major order,
    "targets" -> (K,) predicted labels of the errors."""
    err = p.predicted != p.intended
    if errors == "targets":
        return np.bincount(p.predicted[err], minlength=K)
    if errors == "pairs":
        conf = confusion(p.intended[err], p.predicted[err])
        return conf[~np.eye(K, dtype=bool)]
    raise ValueError("errors must be 'pairs' (intended -> predicted) or 'targets' "
                     f"(predicted), got {errors!r}")


def js_distance(p, q, axis: int = -1) -> np.ndarray:
    """Jensen-Shannon distance, base 2 (in [0, 1]), of count or probability vectors along
    ``axis``; NaN where either vector sums to 0."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    sp, sq = p.sum(axis, keepdims=True), q.sum(axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p, q = p / sp, q / sq
        m = 0.5 * (p + q)

        def kl(a):
            return np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(m > 0, m, 1)),
                            0.0).sum(axis)

        div = 0.5 * kl(p) + 0.5 * kl(q)
    out = np.sqrt(np.clip(div, 0.0, 1.0))
    bad = (sp == 0).squeeze(axis) | (sq == 0).squeeze(axis)
    return np.where(bad, np.nan, out)


def clip_error_counts(p: Predictions, conditions, errors: str = "pairs", by: str = "clip"):
    """(units, (n_units, C, D) counts): error counts per unit and condition; ``by`` "clip" or
    "actor" (`Predictions.actor`)."""
    if errors not in ("pairs", "targets"):
        raise ValueError("errors must be 'pairs' (intended -> predicted) or 'targets' "
                         f"(predicted), got {errors!r}")
    units, unit = np.unique(np.asarray(p.actor if by == "actor" else p.clip, dtype=str),
                            return_inverse=True)
    D = K * (K - 1) if errors == "pairs" else K
    out = np.zeros((len(units), len(conditions), D), dtype=np.int64)
    offdiag = np.cumsum(~np.eye(K, dtype=bool)).reshape(K, K) - 1  # (t, q) -> pair index
    for j, cond in enumerate(conditions):
        m = (p.condition == cond) & (p.predicted != p.intended)
        code = (offdiag[p.intended[m], p.predicted[m]] if errors == "pairs" else p.predicted[m])
        np.add.at(out, (unit[m], j, code), 1)
    return units.astype(object), out


def resample_weights(rng, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) float multiplicities of ``n`` units drawn with replacement ``n_boot`` times."""
    rng = np.random.default_rng(rng)
    draws = rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)
    mult = np.zeros((n_boot, n))
    np.add.at(mult, (np.arange(n_boot)[:, None], draws), 1.0)
    return mult


def bootstrap_distances(counts: np.ndarray, conditions, *, seed, n_boot: int = 1000,
                        level: float = 0.95) -> dict:
    """JS distances between the conditions' error distributions with bootstrap intervals.

    ``counts`` (n_units, C, D) error counts per unit (clip or actor) and condition; units are
    resampled with replacement ``n_boot`` times with ``np.random.default_rng(seed)`` (an int or a
    Generator). Returns {"a|b": {"distance", "low", "high", "samples"}} for every pair of
    conditions (percentile intervals).
    """
    counts = np.asarray(counts, dtype=float)
    n, C, D = counts.shape
    total = counts.sum(0)
    mult = resample_weights(seed, n, n_boot)
    boot = (mult @ counts.reshape(n, C * D)).reshape(n_boot, C, D)
    alpha = (1 - level) / 2
    out = {}
    for a, b in itertools.combinations(range(C), 2):
        point = float(js_distance(total[a], total[b]))
        samples = js_distance(boot[:, a], boot[:, b])
        ok = samples[np.isfinite(samples)]
        lo, hi = (np.quantile(ok, [alpha, 1 - alpha]) if ok.size else (np.nan, np.nan))
        out[f"{conditions[a]}|{conditions[b]}"] = {"distance": point, "low": float(lo),
                                                   "high": float(hi), "samples": samples}
    return out


def claim_test(counts: np.ndarray, conditions, *, seed: int, n_boot: int = 1000,
               level: float = 0.95) -> dict:
    """The paper's claim as the uncalibrated plug-in test (the baseline of
    ``benchmarks/emotion_calibration.py``; a run's verdict comes from `statistics.claim`).

    Statistic: delta = JS(face_voice, voice_only) - JS(face_voice, face_only) (> 0 supports the
    claim), with a bootstrap interval over clips. Verdict: "supported" if the interval lies above
    0, "contradicted" if below, else "inconclusive"; "not testable" without the three conditions
    or without errors.
    """
    need = ("face_voice", "face_only", "voice_only")
    if not all(c in conditions for c in need):
        return {"verdict": "not testable", "reason": f"needs the conditions {need}"}
    pos = [list(conditions).index(c) for c in need]
    counts = np.asarray(counts)[:, pos]
    dist = bootstrap_distances(counts, need, seed=seed, n_boot=n_boot, level=level)
    fo, vo = dist["face_voice|face_only"], dist["face_voice|voice_only"]
    delta = vo["distance"] - fo["distance"]
    samples = vo["samples"] - fo["samples"]
    ok = samples[np.isfinite(samples)]
    if not np.isfinite(delta) or not ok.size:
        return {"verdict": "not testable", "reason": "a condition has no errors",
                "delta": float(delta)}
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    verdict = "supported" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    return {"verdict": verdict, "delta": float(delta), "low": float(lo), "high": float(hi),
            "js_face_voice_face_only": fo["distance"], "js_face_voice_voice_only": vo["distance"],
            "level": level, "n_boot": n_boot, "seed": seed}


def analyze(p: Predictions, conditions, *, seed: int = 0, n_boot: int = 1000,
            n_perm: int = 1000, min_share: float = MIN_SHARE, level: float = 0.95,
            alpha: float = 0.05) -> dict:
    """All statistics of a run, JSON-able: per condition accuracy, confusion, error graph,
    attractor strength, hierarchy (with its kept-rank fractions over actor resamples); between
    conditions JS distances (pairs and targets, all rows pooled, descriptive) with intervals over
    actors; the three analyses of `statistics.analyses` and the primary claim verdict."""
    from mllm_probe.emotion import statistics  # it builds on this module's primitives

    seeds = np.random.SeedSequence(seed).spawn(3)
    per = {}
    for cond in conditions:
        sub = p.where(p.condition == cond)
        conf = confusion(sub.intended, sub.predicted)
        per[cond] = {"accuracy": accuracy(sub), "confusion": conf.tolist(),
                     "error_graph": error_graph(conf, min_share),
                     "attractor_strength": dict(zip(LABELS, attractor_strength(conf).tolist(),
                                                     strict=True)),
                     "hierarchy": statistics.kept_rank(sub, rng=np.random.default_rng(seeds[0]),
                                                       n_boot=n_boot),
                     "errors": int((sub.predicted != sub.intended).sum())}
    between = {}
    rng = np.random.default_rng(seeds[1])
    for errors in ("pairs", "targets"):
        _, counts = clip_error_counts(p, conditions, errors, by="actor")
        dist = bootstrap_distances(counts, conditions, seed=rng, n_boot=n_boot, level=level)
        between[errors] = {k: {n: v[n] for n in ("distance", "low", "high")}
                           for k, v in dist.items()}
    analyses = statistics.analyses(p, conditions, rng=np.random.default_rng(seeds[2]),
                                   n_perm=n_perm, n_boot=n_boot, alpha=alpha, level=level)
    return {"labels": list(LABELS), "conditions": list(conditions), "per_condition": per,
            "js_distance": between, "analyses": analyses,
            "claim": analyses[statistics.PRIMARY.name]["claim"],
            "actors": int(len(set(p.actor))),
            "settings": {"seed": seed, "n_boot": n_boot, "n_perm": n_perm, "level": level,
                         "alpha": alpha, "min_share": min_share, "resampled": "actors",
                         "js": "Jensen-Shannon distance, base 2 (0 identical, 1 disjoint)"}}


__all__ = [
    "MIN_SHARE",
    "K",
    "Predictions",
    "accuracy",
    "actor_of",
    "analyze",
    "attractor_strength",
    "bootstrap_distances",
    "claim_test",
    "clip_error_counts",
    "confusion",
    "error_counts",
    "error_graph",
    "fallback_table",
    "from_rows",
    "hierarchy",
    "hierarchy_of_table",
    "js_distance",
    "resample_weights",
]
