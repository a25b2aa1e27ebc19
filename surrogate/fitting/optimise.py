"""The fit: restarts side by side under optax Adam with early stopping, a Levenberg-Marquardt
polish, then the identifiability analysis.

Positive parameters (B, K, omega spread) are optimised as logarithms, the time map as logits; the
loss is the row-wise KL(P* || P) (or squared error) averaged over weighted rows and layers;
``restarts`` initialisations from explicit keys run side by side (vmap), each stopping once its
best loss has not improved by a relative ``tol`` for ``patience`` steps. Parameters that are not
fitted (``coupling=Tied()``: K; ``fit_spread``/``fit_gain`` off) are frozen by ``optax.masked``.
Adam finds the basin; Levenberg-Marquardt on the whitened residuals then resolves the sloppy
directions that first-order steps crawl along. See docs/fit.md.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from surrogate.coupling import Free, Tied
from surrogate.fitting import intervals as iv
from surrogate.fitting.config import FitConfig
from surrogate.fitting.identifiability import curvature, parameter_names, restart_spread
from surrogate.fitting.levenberg import levenberg_marquardt
from surrogate.fitting.model import (
    FitModel,
    FitParams,
    RawParams,
    constrain,
    divergence,
    fit_keys,
    layer_times,
    make_model,
    model_attention,
    raw_box,
    realization_attention,
    unconstrain,
)
from surrogate.fitting.result import FitResult
from surrogate.fitting.target import Target, sizes_from_counts

__all__ = ["AdamSettings", "FitState", "ModelSettings", "adam_step", "evaluate", "fit",
           "init_state", "optimiser", "polish"]


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Static settings of the loss (hashable, so jitted steps are shared between fits)."""

    num_layers: int
    horizon: float
    tied: bool
    divergence: str
    anchored: bool = True

    def constrain(self, raw: RawParams) -> FitParams:
        return constrain(raw, self.num_layers, self.horizon, self.tied, self.anchored)


@dataclasses.dataclass(frozen=True)
class AdamSettings:
    """Static settings of one Adam step: the loss, the learning rate, early stopping and which
    ``RawParams`` fields are trained (one bool per field, in field order)."""

    model: ModelSettings
    learning_rate: float
    tol: float
    patience: int
    trained: tuple[bool, ...]


class FitState(NamedTuple):
    """State of the Adam phase, every leaf with a leading restart axis R."""

    raws: RawParams          # current coordinates
    opt_state: optax.OptState
    best_raw: RawParams      # best coordinates seen
    best_loss: jax.Array     # (R,) their loss
    stall: jax.Array         # (R,) int32 steps since the last relative improvement by tol
    active: jax.Array        # (R,) bool still stepping


_FIELDS = tuple(f.name for f in dataclasses.fields(RawParams))


def trained_fields(config: FitConfig) -> tuple[bool, ...]:
    """Which ``RawParams`` fields a fit with ``config`` trains (in field order)."""
    on = {"log_B": True, "log_K": isinstance(config.coupling, Free),
          "log_spread": config.fit_spread,
          "gain": config.fit_gain, "log_anchor": config.anchored and config.fit_anchor,
          "time_logits": True}
    return tuple(on[f] for f in _FIELDS)


def optimiser(settings: AdamSettings) -> optax.GradientTransformation:
    """Adam, with the updates of the frozen fields set to zero."""
    frozen = RawParams(**{f: not t for f, t in zip(_FIELDS, settings.trained, strict=False)})
    return optax.chain(optax.adam(settings.learning_rate),
                       optax.masked(optax.set_to_zero(), frozen))


def _loss(model: FitModel, target: Target, settings: ModelSettings, raw: RawParams):
    pred = model_attention(model, settings.constrain(raw))
    return divergence(pred, target, settings.divergence)[0]


def init_state(raws: RawParams, settings: AdamSettings) -> FitState:
    """The state before the first step of restarts ``raws`` (leading axis R)."""
    r = jax.tree.leaves(raws)[0].shape[0]
    dtype = raws.log_B.dtype
    return FitState(raws=raws, opt_state=jax.vmap(optimiser(settings).init)(raws), best_raw=raws,
                    best_loss=jnp.full((r,), jnp.inf, dtype), stall=jnp.zeros((r,), jnp.int32),
                    active=jnp.ones((r,), bool))


@functools.partial(jax.jit, static_argnums=(3,))
def adam_step(state: FitState, model: FitModel, target: Target, settings: AdamSettings
              ) -> tuple[FitState, jax.Array]:
    """One Adam step of all restarts with best-so-far and early-stop bookkeeping; returns the new
    state and the losses (R,) before the step (NaN for stopped restarts)."""
    opt = optimiser(settings)
    r = state.best_loss.shape[0]

    def per_restart(flag, x):
        return flag.reshape((r,) + (1,) * (x.ndim - 1))

    def where(flag, a, b):
        return jax.tree.map(lambda x, y: jnp.where(per_restart(flag, x), x, y), a, b)

    loss_fn = functools.partial(_loss, model, target, settings.model)
    losses, grads = jax.vmap(jax.value_and_grad(loss_fn))(state.raws)
    finite = jnp.isfinite(losses)
    better = finite & (losses < state.best_loss)
    improved = finite & (losses < state.best_loss - settings.tol * jnp.abs(state.best_loss))
    stall = jnp.where(improved, 0, state.stall + 1)
    updates, new_opt = jax.vmap(opt.update)(grads, state.opt_state, state.raws)
    go = state.active & finite
    new = FitState(
        raws=where(go, optax.apply_updates(state.raws, updates), state.raws),
        opt_state=where(go, new_opt, state.opt_state),
        best_raw=where(better, state.raws, state.best_raw),
        best_loss=jnp.where(better, losses, state.best_loss),
        stall=stall,
        active=go & (stall < settings.patience))
    return new, jnp.where(state.active, losses, jnp.nan)


@functools.partial(jax.jit, static_argnums=(3,))
def linearize(model: FitModel, raws: RawParams, idx: jax.Array, settings: ModelSettings
              ) -> tuple[jax.Array, jax.Array]:
    """Per lane (leading axis n of ``raws``): the ensemble-mean prediction (n, L, M, M) and its
    Jacobian (n, L, M, M, P) w.r.t. the raw coordinates ``idx`` of the flattened ``RawParams``
    (forward mode)."""

    def one(raw):
        flat, unravel = ravel_pytree(raw)

        def pred_of(x):
            return model_attention(model, settings.constrain(unravel(flat.at[idx].set(x))))

        pred, jvp = jax.linearize(pred_of, flat[idx])
        return pred, jax.vmap(jvp, out_axes=-1)(jnp.eye(idx.shape[0], dtype=flat.dtype))

    return jax.vmap(one)(raws)


@functools.partial(jax.jit, static_argnums=(4,))
def evaluate(model: FitModel, targets: Target, raws: RawParams, idx: jax.Array,
             settings: ModelSettings) -> dict:
    """Per restart (leading axis R of ``raws`` and ``targets``): prediction (L, M, M), loss,
    per-layer residual (L,), whitened residuals e (L M M,) with sum e^2 ~ 2 KL (= loss for
    "mse") and their Jacobian (L M M, P) w.r.t. the raw coordinates ``idx`` of the flattened
    ``RawParams`` (forward mode)."""
    preds, jacs = linearize(model, raws, idx, settings)

    def one(pred, jac, target):
        w = target.weight[..., None] / jnp.maximum(target.weight.sum(), 1)
        kl = settings.divergence == "kl"
        scale = jnp.sqrt(w / (target.mass + 1e-6)) if kl else jnp.sqrt(w)
        loss, per_layer = divergence(pred, target, settings.divergence)
        return {"pred": pred, "loss": loss, "per_layer": per_layer,
                "e": (scale * (pred - target.mass)).ravel(),
                "jac": (scale[..., None] * jac).reshape(-1, idx.shape[0])}

    return jax.vmap(one)(preds, jacs, targets)


def polish(model: FitModel, targets: Target, raws: RawParams, idx: jax.Array,
           settings: ModelSettings, steps: int) -> tuple[RawParams, dict]:
    """Levenberg-Marquardt refinement (surrogate.fitting.levenberg) of every restart in the
    coordinates ``idx``. Returns the raws and their last ``evaluate`` output. ``targets``: one
    per restart (leading axis R)."""
    flats = np.asarray(jax.vmap(lambda r: ravel_pytree(r)[0])(raws))
    unravel = ravel_pytree(jax.tree.map(lambda x: x[0], raws))[1]
    idx_np = np.asarray(idx)

    def full(x):  # raws from the polished coordinates (R, P)
        out = flats.copy()
        out[:, idx_np] = x
        return jax.vmap(unravel)(jnp.asarray(out, flats.dtype))

    def residuals(x):
        ev = jax.tree.map(np.asarray, evaluate(model, targets, full(x), idx, settings))
        return ev["e"], ev["jac"], ev

    box = raw_box(jax.tree.map(lambda v: v[0], raws))
    lo, hi = (np.asarray(ravel_pytree(b)[0])[idx_np] for b in box)
    x, _, _, ev = levenberg_marquardt(residuals, flats[:, idx_np], lo, hi, steps)
    return full(x), ev


def _init_raw(key, base: RawParams, config: FitConfig) -> RawParams:
    ks = jax.random.split(key, 6)
    s = config.init_noise

    def noise(k, x, scale):
        return x + scale * jax.random.normal(k, x.shape, x.dtype)

    return RawParams(log_B=noise(ks[0], base.log_B, s), log_K=noise(ks[1], base.log_K, s),
                     log_spread=noise(ks[2], base.log_spread, 0.5 * s if config.fit_spread else 0),
                     gain=noise(ks[3], base.gain, 0.5 * s if config.fit_gain else 0),
                     log_anchor=noise(ks[5], base.log_anchor,
                                      0.3 * s if config.anchored and config.fit_anchor else 0),
                     time_logits=noise(ks[4], base.time_logits, 0.3 * s))


def fit(
    target: Target,
    key: jax.Array,
    config: FitConfig = FitConfig(),
    *,
    seed: int | None = None,
    progress: Callable[[int, np.ndarray], None] | None = None,
    progress_every: int = 25,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit the surrogate to ``target``; ``key`` draws the graph, frequencies, initial phases and
    the restart initialisations. ``progress(step, losses (R,))`` is called every
    ``progress_every`` steps, ``log(message)`` after the polish and during the intervals.
    ``seed`` (recorded in the JSON beside the key's data) is the integer ``key`` came from."""
    t_start = time.perf_counter()
    if tuple(target.modalities) != tuple(config.modalities):
        raise ValueError(f"target modalities {list(target.modalities)} differ from "
                         f"config.modalities {list(config.modalities)}")
    num_layers = target.num_layers
    tied = isinstance(config.coupling, Tied)
    dtype = jnp.result_type(float)
    sizes = config.sizes or sizes_from_counts(target.token_counts, config.n_total, config.k + 2)
    k_model, k_init, k_held = fit_keys(key)
    model = make_model(k_model, sizes, config, dtype)
    target = jax.tree.map(lambda x: jnp.asarray(x, dtype), target)
    # the jitted steps see the arrays only (file names would make each fit recompile)
    data = dataclasses.replace(target, sources=(), token_counts=())
    m = len(sizes)
    base = unconstrain(FitParams(
        B=jnp.full((m, m), config.init_B, dtype), K=jnp.full((m, m), config.init_K, dtype),
        omega_spread=jnp.asarray(config.init_spread, dtype), gain=jnp.zeros((m,), dtype),
        anchor=jnp.asarray(config.anchor if config.anchored else 0.0, dtype),
        times=layer_times(jnp.zeros((0,), dtype), num_layers, config.horizon, dtype)),
        config.time_map)
    raws = jax.vmap(lambda k: _init_raw(k, base, config))(jax.random.split(k_init, config.restarts))

    model_settings = ModelSettings(num_layers, float(config.horizon), tied, config.divergence,
                                   config.anchored)
    settings = AdamSettings(model_settings, float(config.learning_rate), float(config.tol),
                            int(config.patience), trained_fields(config))
    state = init_state(raws, settings)
    curves = np.full((config.restarts, config.steps), np.nan)
    steps_run = 0
    for i in range(config.steps):
        state, losses = adam_step(state, model, data, settings)
        curves[:, i] = np.asarray(losses)
        steps_run = i + 1
        if progress is not None and (i % progress_every == 0 or i == config.steps - 1):
            progress(i, curves[:, i])
        if not bool(np.any(np.asarray(state.active))):
            break
    curves = curves[:, :steps_run]

    # Levenberg-Marquardt polish of every restart; its last evaluation gives the predictions,
    # losses and the Jacobian for the curvature.
    trained = RawParams(**{f: jnp.full_like(getattr(base, f), t)
                           for f, t in zip(_FIELDS, settings.trained, strict=False)})
    idx = np.flatnonzero(np.asarray(ravel_pytree(trained)[0]) > 0)
    names_all = parameter_names(base)
    names = tuple(names_all[i] for i in idx)
    per_restart = jax.tree.map(lambda x: jnp.broadcast_to(x, (config.restarts,) + x.shape), data)
    best_raws, ev = polish(model, per_restart, state.best_raw, jnp.asarray(idx), model_settings,
                           config.polish_steps)
    best_loss = np.asarray(ev["loss"])
    if not np.any(np.isfinite(best_loss)):
        raise ValueError("fit failed: the loss is not finite for any restart")
    r = int(np.nanargmin(np.where(np.isfinite(best_loss), best_loss, np.inf)))
    raw = jax.tree.map(lambda x: x[r], best_raws)
    params = model_settings.constrain(raw)
    pred, loss, per_layer = ev["pred"][r], ev["loss"][r], ev["per_layer"][r]
    curv = curvature(np.asarray(ev["jac"][r]), names, config.divergence, config.sloppy_ratio)
    restart_params = jax.vmap(model_settings.constrain)(best_raws)
    converged, spread = restart_spread(restart_params, best_loss, config.converged_within)
    say = log or (lambda _: None)
    say(f"polished {config.restarts} restarts: loss {float(loss):.4g}")
    intervals = _intervals(model, data, raw, params, idx, names, model_settings, config, sizes,
                           k_held, dtype, base, say)

    def to_np(tree):
        return jax.tree.map(np.asarray, tree)

    return FitResult(
        config=config, seed=-1 if seed is None else int(seed),
        key_data=tuple(int(x) for x in np.asarray(jax.random.key_data(key)).ravel()),
        sizes=tuple(sizes),
        target=to_np(target), params=to_np(params), raw=to_np(raw),
        restart_params=to_np(restart_params), restart_loss=best_loss, curves=curves,
        steps_run=steps_run, best_restart=r, loss=float(loss),
        layer_residual=np.asarray(per_layer), model_mass=np.asarray(pred), param_names=names,
        hessian_eigvals=curv.eigvals, hessian_eigvecs=curv.eigvecs, converged=converged,
        spread=spread, unidentified=curv.unidentified,
        sloppy_directions=curv.sloppy_directions, intervals=intervals,
        seconds=time.perf_counter() - t_start)


@functools.partial(jax.jit, static_argnums=(3,))
def _score(model: FitModel, held: FitModel, raws: RawParams, settings: ModelSettings):
    """Per lane: the ensemble-mean prediction (n, L, M, M) and the attention of every held-out
    realization (n, D, L, M, M)."""
    def one(raw):
        params = settings.constrain(raw)
        return model_attention(model, params), realization_attention(held, params)

    return jax.vmap(one)(raws)


@functools.partial(jax.jit, static_argnums=(2,))
def _predict(model: FitModel, raws: RawParams, settings: ModelSettings) -> jax.Array:
    """Per lane: the ensemble-mean prediction (n, L, M, M)."""
    return jax.vmap(lambda raw: model_attention(model, settings.constrain(raw)))(raws)


def _intervals(model, data, raw, params, idx, names, settings, config, sizes, k_held, dtype,
               start, log):
    """Profile-likelihood intervals of the couplings under the realization noise of
    ``config.held_out`` held-out realizations (surrogate.fitting.intervals), linearised ones of
    spread, gains and anchor; ``start`` the fit's starting point (RawParams), where the profile
    re-optimises a point that would end a half-line; ``log(message)`` reports progress."""
    if config.held_out == 0:
        return None
    held = make_model(k_held, sizes, config, dtype, realizations=config.held_out)
    flat, unravel = ravel_pytree(raw)
    flat = np.asarray(flat, np.float64)
    idx_j = jnp.asarray(idx)
    weight = np.asarray(data.weight)

    def raws_of(x):
        return jax.vmap(unravel)(jnp.asarray(x, dtype))

    def lin(x):
        pred, jac = linearize(model, raws_of(x), idx_j, settings)
        return np.asarray(pred, np.float64), np.asarray(jac, np.float64)

    def predict(x):
        return np.asarray(_predict(model, raws_of(x), settings), np.float64)

    # the noise's principal directions at the fit, fixed for every point
    basis = iv.noise_basis(np.asarray(_score(model, held, raws_of(flat[None]), settings)[1][0],
                                      np.float64), weight)

    def score(x):
        pred, draws = _score(model, held, raws_of(x), settings)
        return (np.asarray(pred, np.float64),
                iv.whitening(np.asarray(draws, np.float64), weight, config.realizations, basis))

    box_lo, box_hi = (np.asarray(ravel_pytree(b)[0], np.float64) for b in raw_box(raw))
    # the couplings are profiled; spread, gains and anchor get linearised intervals; the time
    # logits (nuisance) neither
    couplings = np.asarray([n[:2] in ("B[", "K[") for n in names])
    nuisance = np.asarray([not c and n[:4] != "time" for c, n in zip(couplings, names,
                                                                      strict=True)])
    profiled = np.asarray(idx)[couplings]
    q = iv.threshold(config.level, config.simultaneous, len(profiled))
    qmax = max(iv.threshold(config.level, True, len(profiled)), q)  # trace both kinds
    prof = iv.profile_likelihood(lin, score, flat, np.asarray(idx), profiled, box_lo[idx],
                                 box_hi[idx], np.asarray(data.mass, np.float64), qmax,
                                 steps=config.profile_steps,
                                 restart=np.asarray(ravel_pytree(start)[0], np.float64),
                                 progress=log, predict=predict)
    low_p, high_p = prof.bounds(q, box_lo[profiled], box_hi[profiled])
    _, jac = lin(flat[None])
    white = score(flat[None])[1]
    fisher_sd = iv.noise_fisher(white.jacobian(jac)[0])
    # the interval holds the estimate (the deviance minimiser and the fit differ slightly)
    lo_flat, hi_flat = flat.copy(), flat.copy()
    lo_flat[profiled] = np.minimum(low_p, flat[profiled])
    hi_flat[profiled] = np.maximum(high_p, flat[profiled])
    lin_idx = np.asarray(idx)[nuisance]
    half = np.sqrt(q) * fisher_sd[nuisance]
    lo_flat[lin_idx] = np.clip(flat[lin_idx] - half, box_lo[lin_idx], box_hi[lin_idx])
    hi_flat[lin_idx] = np.clip(flat[lin_idx] + half, box_lo[lin_idx], box_hi[lin_idx])
    low, high = iv.constrained_table(unravel(jnp.asarray(lo_flat, dtype)),
                                     unravel(jnp.asarray(hi_flat, dtype)), params, settings.tied)
    return iv.Intervals(low=low, high=high, level=config.level, simultaneous=config.simultaneous,
                        threshold=q, profiled=tuple(n for n, c in zip(names, couplings,
                                                                      strict=True) if c),
                        profiles=prof, draws=config.held_out, basis=basis,
                        noise_sd=white.sd[0], fisher_sd=fisher_sd)


def realization_noise(result: FitResult, target: Target, params: FitParams
                      ) -> tuple[np.ndarray, iv.Whitening]:
    """The model's prediction (n, L, M, M) at ``params`` (FitParams with a leading axis n) and
    the whitening of the realization noise there (the fit's held-out realizations, as the
    intervals compute it): ``white.sd`` the per-entry sd of one draw, ``white.logdet``,
    ``white.residuals(target.mass, pred)`` the whitened residuals."""
    config = result.config
    if result.intervals is None:
        raise ValueError("the realization noise needs a fit with intervals (held_out >= 4)")
    dtype = np.asarray(result.raw.log_B).dtype
    k_model, _, k_held = fit_keys(jax.random.wrap_key_data(np.asarray(result.key_data,
                                                                      np.uint32)))
    model = make_model(k_model, result.sizes, config, dtype)
    held = make_model(k_held, result.sizes, config, dtype, realizations=config.held_out)
    settings = ModelSettings(target.num_layers, float(config.horizon),
                             isinstance(config.coupling, Tied), config.divergence,
                             config.anchored)
    raws = jax.vmap(lambda p: unconstrain(p, config.time_map))(
        jax.tree.map(lambda x: jnp.asarray(x, dtype), params))
    pred, draws = _score(model, held, raws, settings)
    white = iv.whitening(np.asarray(draws, np.float64), np.asarray(target.weight),
                         config.realizations, result.intervals.basis)
    return np.asarray(pred, np.float64), white


def deviance(result: FitResult, target: Target, params: FitParams) -> np.ndarray:
    """The deviance D (n,) of ``target`` (the fitted data) at ``params`` (FitParams with a
    leading axis n), under the realization noise at each of them (r^T Sigma^-1 r + log det
    Sigma, ``realization_noise``), as the intervals compute it: a point whose D exceeds
    ``result.intervals.profiles.minimum`` by more than ``result.intervals.threshold`` lies
    outside the joint region of the couplings (a likelihood-ratio test of the point). Exact
    where the couplings are the only trained coordinates; with fitted nuisance parameters D at
    the given ones bounds the profile from above."""
    pred, white = realization_noise(result, target, params)
    return iv.deviance_of(pred, np.asarray(target.mass, np.float64), white)
