"""The fitted surrogate's response to a change of one attention block: the prediction that an
intervention on the real model (``mllm_probe.intervention``) is held against.

In the surrogate, B_ab is the inverse temperature of the attention of modality a's oscillators on
modality b's: alpha_ij ~ exp(B_ab cos(theta_j - theta_i)). Multiplying B_ab by f is exactly the
model-side logit factor f on the (a <- b) block; a knockout removes the a <- b edges (the rows
renormalise over the remaining neighbours, and those edges stop coupling too, as knocked-out keys
stop contributing values).

Layer l sits at surrogate time t_l (the fit's time map, ``FitParams.times``). A change in layers
A..B acts on the time window (t_{A-1}, t_B] (t_{-1} = 0), rounded to the fit's RK4 grid: the
trajectory runs with the fitted couplings up to the window, with the changed ones inside it, and
with the fitted ones again after it, so layers before A are untouched and the change propagates to
later layers through the phases, as through a transformer's residual stream.

``window_attention`` gives P(t_l) (L, M, M) under such a change; ``block_response`` the change of
P and of the dominance D_ab = log(P[b, a] / P[a, b]): finite (the change itself) and linearised
(d/d log B_ab at the fitted B, times log f), each per layer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate.fitting.model import FitModel, FitParams, _surrogate
from surrogate.integrate import simulate
from surrogate.metrics import modality_attention

__all__ = ["BlockResponse", "agreement", "block_response", "layer_window", "window_attention"]


def layer_window(times, layers: tuple[int, int] | None) -> tuple[float, float]:
    """Surrogate time window (t_{A-1}, t_B] of layers A..B (None: every layer, (0, t_{L-1}])."""
    times = np.asarray(times, float)
    lo, hi = (0, len(times) - 1) if layers is None else layers
    if not 0 <= lo <= hi < len(times):
        raise ValueError(f"layers {lo}-{hi} outside the fit's {len(times)} layers")
    return (0.0 if lo == 0 else float(times[lo - 1]), float(times[hi]))


def _without_block(net, drop: np.ndarray):
    """The network ``net`` without the edges from modality a to b where ``drop[a, b]``."""
    drop = jnp.asarray(drop, bool)
    pop = net.population
    keep_pair = ~drop[pop[:, None], pop[None, :]]
    keep_slot = ~drop[pop[:, None], pop[net.neighbours]]
    return net.replace(adjacency=net.adjacency * keep_pair.astype(net.adjacency.dtype),
                       neighbour_mask=net.neighbour_mask * keep_slot.astype(
                           net.neighbour_mask.dtype))


def window_attention(model: FitModel, params: FitParams, log_scale: jax.Array,
                     window: tuple[float, float], drop: np.ndarray | None = None) -> jax.Array:
    """P(t_l) (L, M, M), mean over the fit's realizations and initial phases, with
    B -> B exp(log_scale) (M, M) and the blocks ``drop`` (M, M) bool removed during ``window``
    (t0, t1] (module docstring). Equals the fit's ``model_attention`` without a change.

    Differentiable in ``log_scale``; the window and ``drop`` are static (jit cache key)."""
    drop = None if drop is None or not np.any(drop) else tuple(map(tuple, np.asarray(drop, bool)))
    return _window_attention(model, params, log_scale, (float(window[0]), float(window[1])), drop)


@functools.partial(jax.jit, static_argnames=("window", "drop"))
def _window_attention(model, params, log_scale, window, drop):
    n, dt = model.n_steps, model.dt
    i0 = int(np.clip(round(window[0] / dt), 0, n))
    i1 = int(np.clip(round(window[1] / dt), i0, n))

    def one(net, xi, enc_gain, enc_offset, theta0s):
        sur = _surrogate(net, xi, enc_gain, enc_offset, params, model)
        changed = sur.replace(params=sur.params.replace(B=params.B * jnp.exp(log_scale)))
        if drop is not None:
            changed = changed.replace(network=_without_block(net, np.asarray(drop)))
        segments = [(s, a, b) for s, a, b in ((sur, 0, i0), (changed, i0, i1), (sur, i1, n))
                    if b > a]

        def run(theta0):
            theta, parts = theta0, [modality_attention(theta0, sur)[None]]
            for s, a, b in segments:
                ys = simulate(s, theta, dt=dt, n_steps=b - a, t0=a * dt, field=model.field).ys
                parts.append(jax.vmap(modality_attention, (0, None))(ys[1:], s))
                theta = ys[-1]
            return jnp.concatenate(parts)            # (n + 1, M, M) on the RK4 grid

        return jax.vmap(run)(theta0s).mean(0)

    grid = jax.vmap(one)(model.network, model.xi, model.enc_gain, model.enc_offset,
                         model.theta0).mean(0)
    pos = jnp.clip(params.times / dt, 0.0, n)   # linear interpolation at t_l, as the fit does
    k = jnp.clip(jnp.floor(pos), 0, n - 1).astype(jnp.int32)
    frac = (pos - k)[:, None, None]
    return (1 - frac) * grid[k] + frac * grid[k + 1]


@struct.dataclass
class BlockResponse:
    """Predicted response of P (L, M, M) and D_ab (L,) to the block change: ``base`` values,
    ``finite`` changes, ``slope`` d/d log B_ab, ``linear`` = slope log f (NaN for a knockout,
    which has no log f)."""

    base: jax.Array
    finite: jax.Array
    slope: jax.Array
    linear: jax.Array
    dominance_base: jax.Array
    dominance_finite: jax.Array
    dominance_slope: jax.Array
    dominance_linear: jax.Array


def _dominance(p, a, b):
    return jnp.log(p[:, b, a]) - jnp.log(p[:, a, b])


def block_response(model: FitModel, params: FitParams, query: int, key: int, *,
                   factor: float = 1.0, knockout: bool = False,
                   layers: tuple[int, int] | None = None) -> BlockResponse:
    """The surrogate's response to B[query, key] -> factor B[query, key] (or the block knocked
    out) in ``layers`` (None: all); populations ``query`` != ``key`` for the dominance."""
    m = params.B.shape[0]
    if not (0 <= query < m and 0 <= key < m):
        raise ValueError(f"block ({query}, {key}) outside the fit's {m} modalities")
    if not (knockout or factor > 0):
        raise ValueError(f"factor must be > 0, got {factor}")
    window = layer_window(params.times, layers)
    drop = np.zeros((m, m), bool)
    drop[query, key] = knockout
    log_f = np.nan if knockout else float(np.log(factor))
    return _respond(model, params, jnp.asarray(0.0 if knockout else log_f, params.B.dtype),
                    jnp.asarray(log_f, params.B.dtype), window,
                    tuple(map(tuple, drop)) if knockout else None, query, key)


@functools.partial(jax.jit, static_argnames=("window", "drop", "query", "key"))
def _respond(model, params, log_step, log_f, window, drop, query, key) -> BlockResponse:
    m = params.B.shape[0]
    unit = jnp.zeros((m, m), params.B.dtype).at[query, key].set(1.0)

    def attention(eps):
        return _window_attention(model, params, eps * unit, window, None)

    base, slope = jax.jvp(attention, (jnp.zeros((), params.B.dtype),),
                          (jnp.ones((), params.B.dtype),))
    changed = (_window_attention(model, params, 0.0 * unit, window, drop) if drop is not None
               else attention(log_step))
    a, b = query, key
    d_base = _dominance(base, a, b) if a != b else jnp.full(base.shape[:1], jnp.nan)
    d_slope = ((slope[:, b, a] / base[:, b, a] - slope[:, a, b] / base[:, a, b]) if a != b
               else jnp.full(base.shape[:1], jnp.nan))
    d_changed = _dominance(changed, a, b) if a != b else d_base
    return BlockResponse(base=base, finite=changed - base, slope=slope, linear=slope * log_f,
                         dominance_base=d_base, dominance_finite=d_changed - d_base,
                         dominance_slope=d_slope, dominance_linear=d_slope * log_f)


def agreement(measured, predicted, tol: float = 1e-7) -> dict:
    """Agreement of predicted with measured changes (flat arrays of the same entries): ``n``
    entries with a measured change (|x| > tol), ``sign_agree`` how many of them the prediction
    gets the sign of, ``rho`` the Spearman rank correlation over all entries (None when it is
    undefined: fewer than 3 entries, or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(measured, float).ravel(), np.asarray(predicted, float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"measured {x.shape} and predicted {y.shape} entries differ")
    changed = np.abs(x) > tol
    ok = np.isfinite(y)
    agree = int(np.sum(np.sign(x[changed & ok]) == np.sign(y[changed & ok])))
    rho = None
    if np.sum(ok) >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
        rho = float(spearmanr(x[ok], y[ok]).statistic)
    return {"n": int(np.sum(changed & ok)), "sign_agree": agree, "rho": rho}
