"""Parameter intervals that reflect realization noise: a parametric bootstrap over held-out
realizations, the Fisher information with that noise scale, and a loss profile along the most
poorly constrained direction.

The data of a fit are one draw of attention (one network for a bundle the surrogate wrote,
one model run for a real bundle); the fitted model is the mean over R realizations. At the fitted
parameters theta_hat, ``bootstrap`` pseudo-data sets are drawn, each the attention of one
realization from a key the fit never saw (held out); each is refitted from theta_hat with
``bootstrap_steps`` Levenberg-Marquardt steps of the same ensemble model. The refits' deviations
d_b in the raw coordinates (log B, log K, log spread, gains, log anchor) mimic the estimator's
error; scaled by sqrt(1 + 1/R) for the Monte Carlo error of the R-realization mean, their
quantiles q give the percentile interval theta_hat + [q_lo, q_hi]. It respects the box and the
flat directions that run to it; the basic interval theta_hat - [q_hi, q_lo] mirrors them to the
other side (on the recovery study's first truth it put the upper bounds of two cross couplings
that are flat toward 0 at 16 and 100 and missed three entries of four). Clipped to the box
``POSITIVE_BOX`` (1e-4 .. 1e2 for B, K, spread and anchor, where a flat direction runs) and
mapped back (exp): finite. The noise scale of the Fisher analysis is the per-entry variance of
the attention across the R realizations at theta_hat.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from surrogate.fitting.model import (
    FitModel,
    FitParams,
    RawParams,
    raw_box,
    realization_attention,
)
from surrogate.fitting.target import Target

__all__ = ["Intervals", "interval_table", "noise_fisher"]

_realizations = jax.jit(realization_attention)


@dataclasses.dataclass(frozen=True, eq=False)
class Intervals:
    """Bootstrap intervals: ``low``/``high`` FitParams-like dicts {name: array} at ``level``;
    ``raw_sd`` (P,) the inflated bootstrap standard deviation of the raw coordinates
    ``names``; ``bias`` (P,) mean deviation of the refits; ``deviations`` (B', P) the refits'
    inflated deviations from the fit (the interval's quantiles are theirs); ``refits`` finite
    refits of ``draws``; ``noise_sd`` (L, M, M) realization sd of the attention at the fit;
    ``profile``: the loss along the most poorly constrained direction (or None)."""

    low: dict
    high: dict
    level: float
    names: tuple[str, ...]
    raw_sd: np.ndarray
    bias: np.ndarray
    deviations: np.ndarray
    refits: int
    draws: int
    noise_sd: np.ndarray
    fisher_sd: np.ndarray
    profile: dict | None

    def to_json(self) -> dict:
        out = {name: {"low": np.asarray(self.low[name]).tolist(),
                      "high": np.asarray(self.high[name]).tolist(), "level": self.level}
               for name in self.low}
        return out


def noise_fisher(jac_raw: np.ndarray, noise_var: np.ndarray, weight: np.ndarray
                 ) -> np.ndarray:
    """Linearised standard deviations (P,) of the raw coordinates: the diagonal of the
    pseudo-inverse of J^T Sigma^-1 J, with J (L M M, P) the Jacobian of the ensemble-mean
    attention and Sigma the realization variance (L, M, M) of one draw (rows of weight 0
    dropped). Directions with information below 1e-10 of the largest are left out (the loss
    profile looks along the weakest direction instead)."""
    keep = (np.broadcast_to(np.asarray(weight)[..., None], noise_var.shape) > 0).ravel()
    var = np.maximum(np.asarray(noise_var, np.float64).ravel(), 1e-12)[keep]
    jac = np.asarray(jac_raw, np.float64)[keep]
    info = jac.T @ (jac / var[:, None])
    evals, evecs = np.linalg.eigh(0.5 * (info + info.T))
    top = max(float(evals.max()), 1e-300)
    inv = np.where(evals > 1e-10 * top, 1.0 / np.maximum(evals, 1e-300), 0.0)
    return np.sqrt((evecs ** 2 * inv).sum(1))


def interval_table(raw: RawParams, params: FitParams, idx: np.ndarray, dev: np.ndarray,
                   level: float, tied: bool, unbounded: np.ndarray | None = None
                   ) -> tuple[dict, dict]:
    """(low, high) {B, K, omega_spread, gain, anchor: arrays}: percentile intervals from the
    refits' deviations ``dev`` (B, P) from ``raw`` in the trained raw coordinates ``idx``
    (already inflated; raw + [q_lo(dev), q_hi(dev)]), clipped to the box of ``raw_box``
    and mapped through exp (logs) or identity (gains); untrained parameters get a zero-width
    interval (they are fixed), K = B's interval when ``tied``; the trained coordinates flagged
    in ``unbounded`` (P,) bool (those the curvature finds not pinned down: refits from the fit
    do not explore a flat direction) get the whole box."""
    flat, unravel = ravel_pytree(jax.tree.map(np.asarray, raw))
    flat = np.asarray(flat)
    box = [np.asarray(ravel_pytree(b)[0]) for b in raw_box(raw)]
    tail = (1 - level) / 2
    lo_flat, hi_flat = flat.copy(), flat.copy()
    lo_flat[idx] = flat[idx] + np.quantile(dev, tail, axis=0)
    hi_flat[idx] = flat[idx] + np.quantile(dev, 1 - tail, axis=0)
    # the interval holds the estimate itself (refits along a flat direction may all run away)
    lo_flat, hi_flat = np.minimum(lo_flat, flat), np.maximum(hi_flat, flat)
    lo_flat, hi_flat = np.clip(lo_flat, *box), np.clip(hi_flat, *box)
    if unbounded is not None:
        wide = np.asarray(idx)[np.asarray(unbounded, bool)]
        lo_flat[wide], hi_flat[wide] = box[0][wide], box[1][wide]
    lo_raw, hi_raw = unravel(jnp.asarray(lo_flat)), unravel(jnp.asarray(hi_flat))
    low, high = {}, {}
    for name, field in (("B", "log_B"), ("K", "log_K"), ("omega_spread", "log_spread"),
                        ("anchor", "log_anchor"), ("gain", "gain")):
        lo, hi = np.asarray(getattr(lo_raw, field)), np.asarray(getattr(hi_raw, field))
        if field.startswith("log_"):
            lo, hi = np.exp(lo), np.exp(hi)
        if name == "anchor" and float(np.asarray(params.anchor)) == 0:
            lo, hi = np.zeros_like(lo), np.zeros_like(hi)
        low[name], high[name] = lo, hi
    if tied:
        low["K"], high["K"] = low["B"], high["B"]
    return low, high


def bootstrap(model: FitModel, held_out: FitModel, target: Target, raw: RawParams,
              params: FitParams, idx: np.ndarray, settings, steps: int, level: float,
              polish) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit ``held_out.realizations`` pseudo-data sets (one held-out realization each, at
    ``params``) from ``raw`` with ``steps`` LM steps (``polish``). Returns (the finite refits'
    deviations from ``raw`` (B', P) in the coordinates ``idx`` and their sd (P,), both inflated
    by sqrt(1 + 1/R), and their mean (P,), not inflated)."""
    pseudo = _realizations(held_out, params)  # (B, L, M, M)
    n = pseudo.shape[0]
    targets = Target(mass=pseudo, weight=jnp.broadcast_to(target.weight, pseudo.shape[:-1]),
                     modalities=target.modalities, token_counts=())
    raws = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), raw)
    refit, ev = polish(model, targets, raws, jnp.asarray(idx), settings, steps)
    flat0 = np.asarray(ravel_pytree(raw)[0])[idx]
    flats = np.asarray(jax.vmap(lambda r: ravel_pytree(r)[0])(refit))[:, idx]
    ok = np.isfinite(np.asarray(ev["loss"])) & np.all(np.isfinite(flats), 1)
    if ok.sum() < 2:
        raise ValueError(f"interval bootstrap failed: {int(ok.sum())} of {n} refits finite")
    dev = flats[ok] - flat0
    inflate = math.sqrt(1 + 1 / model.realizations)
    return dev * inflate, dev.std(0, ddof=1) * inflate, dev.mean(0)


def profile(model: FitModel, target: Target, raw: RawParams, idx: np.ndarray, settings,
            jac: np.ndarray, noise_var: np.ndarray, fisher_sd: np.ndarray,
            names: tuple[str, ...] = ()) -> dict:
    """The loss along the weakest direction v of the noise-scaled Fisher information (unit vector
    in the raw coordinates ``idx``): loss(raw + s v) at s = k / sqrt(lambda_min), k = -3..3
    (capped at 3 raw units), against the linear prediction chi^2 = k^2 in noise units."""
    from surrogate.fitting.model import divergence, model_attention

    keep = (np.broadcast_to(np.asarray(target.weight)[..., None], noise_var.shape) > 0).ravel()
    var = np.maximum(np.asarray(noise_var, np.float64).ravel(), 1e-12)[keep]
    j = np.asarray(jac, np.float64)[keep]
    evals, evecs = np.linalg.eigh(j.T @ (j / var[:, None]))
    lam, v = float(max(evals[0], 0.0)), evecs[:, 0]
    unit = min(1.0 / math.sqrt(lam), 1.0) if lam > 0 else 1.0
    ks = np.arange(-3, 4, dtype=np.float64)
    flat, unravel = ravel_pytree(raw)
    steps = ks * unit
    cands = jnp.stack([flat.at[jnp.asarray(idx)].add(jnp.asarray(s * v, flat.dtype))
                       for s in steps])

    @jax.jit
    def losses(c):
        def one(x):
            return divergence(model_attention(model, settings.constrain(unravel(x))), target,
                              settings.divergence)[0]
        return jax.vmap(one)(c)

    loss = np.asarray(losses(cands), np.float64)
    label = names if names else tuple(str(i) for i in idx)
    parts = [f"{v[i]:+.2f} {label[i]}" for i in np.argsort(-np.abs(v)) if abs(v[i]) >= 0.2]
    return {"direction": " ".join(parts), "eigenvalue": lam, "raw_steps": steps.tolist(),
            "loss": [float(x) if np.isfinite(x) else None for x in loss],
            "chi2_linear": (ks ** 2 * (unit ** 2 * lam)).tolist()}
