"""Simulated prediction tables with a known answer, for calibrating `statistics` (numpy only).

A table holds ``n_clips`` CREMA-D-named clips (``{actor}_{sentence}_{CODE}_XX``, actors from 1001,
clips dealt to actors in turn), intended labels uniform, the three conditions and the chosen prompt
variants. A row that allows its intended label errs with its condition's rate (shifted on the
log-odds scale by the actor's effect); a row that forbids it always errs. An error's label is drawn
from the condition's attractor weights over the allowed labels other than the intended one (each
actor's own weights, Dirichlet around them, when ``actor_concentration`` is set; conditions that
share attractor weights share the actor's draw).

`null`: one attractor for the three conditions (the claim's null, whatever the rates).
`planted`: Face+Voice and Face-only errors from one attractor, Voice-only from another (the claim).
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from mllm_probe.emotion.attractors import K, Predictions
from mllm_probe.emotion.prompts import CODES, LABELS, variants
from mllm_probe.emotion.statistics import CLAIM_CONDITIONS
from mllm_probe.emotion.table import COLUMNS

#: Attractor weights (K,) in `LABELS` order: errors drawn mostly to neutral, or to sad.
TO_NEUTRAL = (1.0, 1.0, 1.0, 1.0, 5.0, 1.0)
TO_SAD = (1.0, 1.0, 1.0, 1.0, 1.0, 5.0)
_CODE = {label: code for code, label in CODES.items()}


@dataclasses.dataclass(frozen=True)
class ErrorProcess:
    """rates: (3,) error probabilities of rows allowing the intended label (`CLAIM_CONDITIONS`
    order); attractors: (3, K) positive weights of the error labels per condition;
    actor_concentration: Dirichlet concentration of the actors' own weights (None: no actor
    effect; small: strong actor effects); actor_rate_sd: sd of the actors' log-odds shifts."""

    rates: tuple[float, float, float]
    attractors: tuple[tuple[float, ...], ...]
    actor_concentration: float | None = None
    actor_rate_sd: float = 0.0

    def __post_init__(self):
        if len(self.rates) != 3 or not all(0 <= r <= 1 for r in self.rates):
            raise ValueError(f"rates must be 3 probabilities, got {self.rates}")
        w = np.asarray(self.attractors, dtype=float)
        if w.shape != (3, K) or not (w > 0).all():
            raise ValueError(f"attractors must be (3, {K}) positive weights, got {self.attractors}")


def null(rates, *, attractor=TO_NEUTRAL, actor_concentration=None, actor_rate_sd=0.0
         ) -> ErrorProcess:
    """The null: one attractor for the three conditions."""
    return ErrorProcess(tuple(rates), (tuple(attractor),) * 3, actor_concentration, actor_rate_sd)


def planted(rates, *, face=TO_NEUTRAL, voice=TO_SAD, actor_concentration=None,
            actor_rate_sd=0.0) -> ErrorProcess:
    """The claim: Face+Voice and Face-only errors from ``face``, Voice-only from ``voice``."""
    return ErrorProcess(tuple(rates), (tuple(face), tuple(face), tuple(voice)),
                        actor_concentration, actor_rate_sd)


def _letters(k: int) -> str:
    return "".join(chr(65 + k // 26 ** e % 26) for e in (2, 1, 0))


def simulate(rng, process: ErrorProcess, *, n_clips: int, n_actors: int | None = None,
             variant_indices=(0,)) -> Predictions:
    """A simulated table (see the module docstring); ``n_actors`` default ``ceil(n_clips / 4)``
    (at most 91); ``variant_indices`` the prompt variants of every clip (0 = unperturbed)."""
    rng = np.random.default_rng(rng)
    n_actors = n_actors or min(91, -(-n_clips // 4))
    vs = [variants()[v] for v in variant_indices]
    forbidden_v = np.array([[label in v.forbidden for label in LABELS] for v in vs]).reshape(-1, K)
    actor = np.arange(n_clips) % n_actors
    intended = rng.integers(0, K, n_clips)
    clips = np.array([f"{1001 + a}_{_letters(k // n_actors)}_{_CODE[LABELS[t]]}_XX"
                      for k, (a, t) in enumerate(zip(actor, intended, strict=True))], dtype=object)
    groups, group = np.unique(np.asarray(process.attractors), axis=0, return_inverse=True)
    groups = groups / groups.sum(1, keepdims=True)
    if process.actor_concentration is None:
        weights = np.broadcast_to(groups[:, None], (len(groups), n_actors, K))
    else:
        weights = np.stack([rng.dirichlet(process.actor_concentration * g, n_actors)
                            for g in groups])
    shift = rng.normal(0, process.actor_rate_sd, n_actors) if process.actor_rate_sd else 0 * actor
    # rows: clip x condition x variant
    ci, cj, vi = (x.ravel() for x in np.meshgrid(np.arange(n_clips), np.arange(3),
                                                  np.arange(len(vs)), indexing="ij"))
    forbidden = forbidden_v[vi]
    t = intended[ci]
    allowed_intended = ~forbidden[np.arange(len(ci)), t]
    rate = np.asarray(process.rates)[cj]
    with np.errstate(divide="ignore"):
        logit = np.log(rate) - np.log1p(-rate) + shift[actor[ci]]
    err = ~allowed_intended | (rng.random(len(ci)) < 1 / (1 + np.exp(-logit)))
    w = weights[group[cj], actor[ci]] * ~forbidden
    w[np.arange(len(ci)), t] = 0.0
    cum = np.cumsum(w, 1)
    drawn = (cum < rng.random(len(ci))[:, None] * cum[:, -1:]).sum(1)
    return Predictions(clip=clips[ci], condition=np.array(CLAIM_CONDITIONS, dtype=object)[cj],
                       variant=np.array([v.index for v in vs])[vi],
                       intended=t, predicted=np.where(err, np.minimum(drawn, K - 1), t),
                       forbidden=forbidden, perceived=np.zeros_like(forbidden),
                       actor=np.array([str(1001 + a) for a in actor], dtype=object)[ci])


def table_rows(p: Predictions) -> list[dict]:
    """Predictions-table rows (`table.COLUMNS`; no scores, tokens or generated answers)."""
    def labels(mask):
        return ":".join(label for label, m in zip(LABELS, mask, strict=True) if m)

    return [{"clip": p.clip[i], "condition": p.condition[i], "variant": int(p.variant[i]),
             "forbidden": labels(p.forbidden[i]), "intended": LABELS[p.intended[i]],
             "perceived": labels(p.perceived[i]), "predicted": LABELS[p.predicted[i]],
             "generated_label": "", "parse_status": "not_generated"} for i in range(len(p))]


def write_table(path, p: Predictions) -> None:
    """``p`` as a predictions CSV at ``path`` (the columns of `table.COLUMNS`)."""
    with open(os.fspath(path), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(table_rows(p))


__all__ = ["TO_NEUTRAL", "TO_SAD", "ErrorProcess", "null", "planted", "simulate", "table_rows",
           "write_table"]
