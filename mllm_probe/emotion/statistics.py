"""The claim "Face+Voice errors track Face-only, not Voice-only", tested under its null (numpy).

Cells: one clip x prompt variant with a prediction under each of the three conditions
(face_voice, face_only, voice_only); a cell lacking one is left out. Analyses (`Analysis`) keep
apart the unperturbed prompt (variant 0, `PRIMARY`: the paper's claim is about what the model
perceives), the perturbed prompts that allow the intended label (misperceptions) and those that
forbid it (forced fallbacks: every row is an error, the attractor structure proper).

Statistic: delta = JSD(fv, vo) - JSD(fv, fo), Jensen-Shannon divergences (base 2, bits; the
squares of `attractors.js_distance`) between the conditions' pooled error targets (the predicted
labels of the errors: where errors go, K bins); delta > 0: Face+Voice errors look more like
Face-only's. (The divergence, not the distance: the square root is steep near 0 and adds noise;
on simulated tables of 100 clips the distance detected the planted effect of `simulate` in 78 %
of runs, the divergence in 97 %.) Plug-in divergences are biased upward, more for the condition
with fewer errors, so delta alone is no test. Null: one common error process; within a cell,
the labels of the conditions that erred are exchangeable. `claim` permutes them within every cell
(each condition keeps its error count in every cell, so the null distribution carries the same
bias) and gives the one-sided p-values p_supported = (1 + #{delta* >= delta}) / (1 + n_perm)
and p_contradicted (<=); p = min(1, 2 min(...)). Verdict at level ``alpha``: "supported" /
"contradicted" when p <= alpha (each direction one-sided at alpha / 2), else "no detectable
effect"; "not testable" when a condition has fewer than ``min_errors`` errors or fewer than
``min_errors`` cells hold two or more errors (the permutation has nothing to move). The
permutation is valid however cells depend on each other (actors), as the labels are exchanged
within cells only.

Intervals are percentile intervals over actors resampled with replacement (the unit of
replication: clips of one actor are not independent; `attractors.actor_of`): delta minus its
null mean, the paired agreement P(fv = fo) - P(fv = vo) on the same cell, and the hierarchy's
kept-rank fractions. The two secondary analyses are Holm-corrected together; the primary is not.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from mllm_probe.emotion.attractors import (
    K,
    Predictions,
    bootstrap_distances,
    fallback_table,
    hierarchy_of_table,
    js_distance,
    resample_weights,
)

#: The conditions of the claim, in the order of a cell's columns.
CLAIM_CONDITIONS = ("face_voice", "face_only", "voice_only")
#: Verdicts of `claim`.
VERDICTS = ("supported", "contradicted", "no detectable effect", "not testable")
D = K  # error codes: the predicted label of an error


@dataclasses.dataclass(frozen=True)
class Analysis:
    """A subset of prediction rows: ``perturbed`` selects variant 0 (False) or the others (True);
    ``intended_allowed`` (perturbed only) whether the prompt allows the intended label."""

    name: str
    perturbed: bool
    intended_allowed: bool = True
    description: str = ""

    def mask(self, p: Predictions) -> np.ndarray:
        """(N,) bool: the rows of this analysis."""
        if not self.perturbed:
            return p.variant == 0
        allowed = ~p.forbidden[np.arange(len(p)), p.intended]
        return (p.variant != 0) & (allowed == self.intended_allowed)


PRIMARY = Analysis("unperturbed", False, description="unperturbed prompt (variant 0); primary")
MISPERCEPTIONS = Analysis("misperceptions", True, True,
                          description="perturbed prompts that allow the intended label")
FORCED_FALLBACKS = Analysis("forced_fallbacks", True, False,
                            description="perturbed prompts that forbid the intended label")
ANALYSES = (PRIMARY, MISPERCEPTIONS, FORCED_FALLBACKS)


@dataclasses.dataclass(frozen=True)
class Cells:
    """Paired predictions: intended (n,) label index, predicted (n, 3) label index per condition
    (`CLAIM_CONDITIONS` order), actor (n,) index into actors (A,) str."""

    intended: np.ndarray
    predicted: np.ndarray
    actor: np.ndarray
    actors: np.ndarray

    @property
    def codes(self) -> np.ndarray:
        """(n, 3) error codes: the predicted label where it is an error, -1 where correct."""
        err = self.predicted != self.intended[:, None]
        return np.where(err, self.predicted, -1)

    def __len__(self) -> int:
        return int(self.intended.shape[0])


def cells(p: Predictions) -> Cells:
    """The complete clip x variant cells of ``p`` (actors: all actors of ``p``, so resamples of
    different analyses share them)."""
    actors, actor = np.unique(np.asarray(p.actor, dtype=str), return_inverse=True)
    _, clip = np.unique(np.asarray(p.clip, dtype=str), return_inverse=True)
    _, cell = np.unique(clip * (int(p.variant.max(initial=0)) + 1) + p.variant,
                        return_inverse=True)
    n = int(cell.max(initial=-1)) + 1
    pred = np.full((n, 3), -1)
    for j, cond in enumerate(CLAIM_CONDITIONS):
        m = p.condition == cond
        pred[cell[m], j] = p.predicted[m]
    intended, who = np.zeros(n, np.int64), np.zeros(n, np.int64)
    intended[cell], who[cell] = p.intended, actor
    ok = (pred >= 0).all(1)
    return Cells(intended[ok], pred[ok], who[ok], actors.astype(object))


def _perm_table() -> np.ndarray:
    """(8, 6, 3): for every error mask of a cell (bit j: condition j erred) six permutations of
    its 3 slots that fix the correct slots, each allowed permutation equally often (1, 2 or 6 of
    them), so a uniform draw of one of the six is uniform over the allowed ones."""
    out = np.empty((8, 6, 3), np.int64)
    for mask in range(8):
        allowed = [q for q in itertools.permutations(range(3))
                   if all(q[j] == j for j in range(3) if not mask >> j & 1)]
        out[mask] = [allowed[k % len(allowed)] for k in range(6)]
    return out


_PERMS = _perm_table()


def _counts(codes: np.ndarray) -> np.ndarray:
    """(..., 3, D) counts of (..., m, 3) error codes (-1 ignored)."""
    lead = codes.shape[:-2]
    flat = codes.reshape(int(np.prod(lead)), *codes.shape[-2:])
    base = (np.arange(flat.shape[0])[:, None, None] * 3 + np.arange(3)[:, None].T) * D
    idx = (base + flat)[flat >= 0]
    return np.bincount(idx, minlength=flat.shape[0] * 3 * D).reshape(*lead, 3, D)


def _delta(counts: np.ndarray) -> np.ndarray:
    """delta = JSD(fv, vo) - JSD(fv, fo) of (..., 3, D) counts (divergences in bits)."""
    return (js_distance(counts[..., 0, :], counts[..., 2, :]) ** 2
            - js_distance(counts[..., 0, :], counts[..., 1, :]) ** 2)


def permutation_null(c: Cells, rng, n_perm: int) -> np.ndarray:
    """(n_perm,) delta under the null: error labels permuted within every cell."""
    codes = c.codes
    mask = (codes >= 0) @ np.array([1, 2, 4])
    movable = np.isin(mask, (3, 5, 6, 7))
    fixed = _counts(codes[~movable])
    free, free_mask = codes[movable], mask[movable]
    out = np.empty(n_perm)
    chunk = max(1, 4_000_000 // max(1, 3 * len(free)))
    for start in range(0, n_perm, chunk):
        n = min(chunk, n_perm - start)
        perm = _PERMS[free_mask, rng.integers(0, 6, size=(n, len(free)))]  # (n, m, 3)
        shuffled = np.take_along_axis(np.broadcast_to(free, perm.shape), perm, axis=-1)
        out[start:start + n] = _delta(fixed + _counts(shuffled))
    return out


def claim(c: Cells, *, rng, n_perm: int = 1000, n_boot: int = 1000, alpha: float = 0.05,
          level: float = 0.95, min_errors: int = 5) -> dict:
    """The permutation test of the module docstring on cells ``c``, with delta's actor-bootstrap
    interval (minus the null mean: a bias-corrected delta). JSON-able."""
    codes = c.codes
    errors = (codes >= 0).sum(0)
    informative = int(((codes >= 0).sum(1) >= 2).sum())
    base = {"cells": len(c), "errors": dict(zip(CLAIM_CONDITIONS, errors.tolist(), strict=True)),
            "informative_cells": informative, "alpha": alpha, "n_perm": n_perm}
    if len(c) == 0 or errors.min() < min_errors or informative < min_errors:
        return {**base, "verdict": "not testable",
                "reason": (f"too few errors: needs at least {min_errors} errors per condition "
                           f"and {min_errors} cells where two or more conditions err "
                           f"(errors {dict(zip(CLAIM_CONDITIONS, errors.tolist(), strict=True))}, "
                           f"{informative} such cells)")}
    delta = float(_delta(_counts(codes)))
    null = permutation_null(c, rng, n_perm)
    tol = 1e-12
    p_sup = (1 + np.sum(null >= delta - tol)) / (1 + n_perm)
    p_con = (1 + np.sum(null <= delta + tol)) / (1 + n_perm)
    p = min(1.0, 2 * min(p_sup, p_con))
    by_actor = np.zeros((len(c.actors), 3, D))
    np.add.at(by_actor, (c.actor[:, None], np.arange(3), np.maximum(codes, 0)),
              (codes >= 0).astype(float))
    boot = bootstrap_distances(by_actor, CLAIM_CONDITIONS, seed=rng, n_boot=n_boot, level=level)
    samples = (boot["face_voice|voice_only"]["samples"] ** 2
               - boot["face_voice|face_only"]["samples"] ** 2)
    samples = samples[np.isfinite(samples)] - null.mean()
    lo, hi = (np.quantile(samples, [(1 - level) / 2, (1 + level) / 2]) if samples.size
              else (np.nan, np.nan))
    return {**base, "delta": delta, "null_mean": float(null.mean()), "null_sd": float(null.std()),
            "excess": delta - float(null.mean()), "excess_low": float(lo),
            "excess_high": float(hi), "js_face_voice_face_only": boot["face_voice|face_only"][
                "distance"], "js_face_voice_voice_only": boot["face_voice|voice_only"]["distance"],
            "p_supported": float(p_sup), "p_contradicted": float(p_con), "p_value": float(p),
            "p_adjusted": float(p), "verdict": verdict(p, p_sup, p_con, alpha)}


def verdict(p: float, p_sup: float, p_con: float, alpha: float) -> str:
    """"supported" / "contradicted" when the (adjusted) p <= alpha, by the smaller one-sided p."""
    if p > alpha:
        return "no detectable effect"
    return "supported" if p_sup <= p_con else "contradicted"


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values of (m,) p-values (family-wise error rate)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def agreement(c: Cells, *, rng, n_boot: int = 1000, level: float = 0.95) -> dict:
    """P(fv = fo) - P(fv = vo) over the cells (same clip and variant), and the same among cells
    where Face+Voice errs, with percentile intervals over actors. JSON-able."""
    err = c.predicted[:, 0] != c.intended
    fo = c.predicted[:, 0] == c.predicted[:, 1]
    vo = c.predicted[:, 0] == c.predicted[:, 2]
    weights = resample_weights(rng, len(c.actors), n_boot)
    out = {}
    for name, rows in (("all", np.ones(len(c), bool)), ("face_voice_errors", err)):
        per_actor = np.zeros((len(c.actors), 3))
        np.add.at(per_actor, c.actor[rows], np.stack([np.ones(rows.sum()), fo[rows], vo[rows]], 1))
        n, a, b = per_actor.sum(0)
        boot = weights @ per_actor
        with np.errstate(invalid="ignore", divide="ignore"):
            samples = (boot[:, 1] - boot[:, 2]) / boot[:, 0]
        samples = samples[np.isfinite(samples)]
        lo, hi = (np.quantile(samples, [(1 - level) / 2, (1 + level) / 2]) if samples.size
                  else (np.nan, np.nan))
        out[name] = {"cells": int(n), "p_fv_fo": a / n if n else np.nan,
                     "p_fv_vo": b / n if n else np.nan,
                     "difference": (a - b) / n if n else np.nan, "low": float(lo),
                     "high": float(hi)}
    return out


def kept_rank(p: Predictions, *, rng, n_boot: int = 1000, max_levels: int = 5) -> list[dict]:
    """`attractors.hierarchy` of ``p`` with, per level, ``kept``: the fraction of actor resamples
    whose hierarchy has the same label at that level."""
    actors, actor = np.unique(np.asarray(p.actor, dtype=str), return_inverse=True)
    tables = fallback_table(p, actor, len(actors))
    point = hierarchy_of_table(tables.sum(0), max_levels)
    weights = resample_weights(rng, len(actors), n_boot)
    boot = np.tensordot(weights, tables, axes=1)
    kept = np.zeros(len(point))
    for table in boot:
        labels = [x["label"] for x in hierarchy_of_table(table, len(point))]
        kept += [k < len(labels) and labels[k] == x["label"] for k, x in enumerate(point)]
    return [{**x, "kept": float(k / n_boot)} for x, k in zip(point, kept, strict=True)]


def analyses(p: Predictions, conditions, *, rng, n_perm: int = 1000, n_boot: int = 1000,
             alpha: float = 0.05, level: float = 0.95, min_errors: int = 5) -> dict:
    """{analysis name: {"description", "rows", "claim", "agreement"}} for `ANALYSES`; the
    secondary analyses' p-values Holm-adjusted together (their verdicts from the adjusted p)."""
    rng = np.random.default_rng(rng)
    out = {}
    for a in ANALYSES:
        sub = p.where(a.mask(p))
        entry = {"description": a.description, "rows": len(sub), "primary": a is PRIMARY}
        if not all(c in conditions for c in CLAIM_CONDITIONS):
            reason = f"needs the conditions {CLAIM_CONDITIONS}"
            entry.update(claim={"verdict": "not testable", "reason": reason},
                         agreement={"verdict": "not testable", "reason": reason})
        else:
            c = cells(sub)
            entry.update(claim=claim(c, rng=rng, n_perm=n_perm, n_boot=n_boot, alpha=alpha,
                                     level=level, min_errors=min_errors),
                         agreement=agreement(c, rng=rng, n_boot=n_boot, level=level))
        out[a.name] = entry
    tested = [a.name for a in ANALYSES if a is not PRIMARY and "p_value" in out[a.name]["claim"]]
    for name, adj in zip(tested, holm([out[n]["claim"]["p_value"] for n in tested]),
                        strict=True):
        cl = out[name]["claim"]
        cl.update(p_adjusted=float(adj), correction=f"Holm over {len(tested)} secondary analyses",
                  verdict=verdict(adj, cl["p_supported"], cl["p_contradicted"], alpha))
    return out


__all__ = [
    "ANALYSES",
    "CLAIM_CONDITIONS",
    "FORCED_FALLBACKS",
    "MISPERCEPTIONS",
    "PRIMARY",
    "VERDICTS",
    "Analysis",
    "Cells",
    "agreement",
    "analyses",
    "cells",
    "claim",
    "holm",
    "kept_rank",
    "permutation_null",
    "verdict",
]
