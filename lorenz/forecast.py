"""Autonomous (closed-loop) forecasting of Lorenz-63 and the valid prediction time.

Every forecaster gets the same inputs, x and y (``baselines.forecast_targets``): its ridge
readout (regularisation chosen on the validation split) learns the one-sample increments of x
and y and z itself; from several starts in the test split it then runs on its own x, y and reads
z out of its state:

* NG-RC and an echo-state network (reservoirpy, in ``lorenz.baselines``, re-exported here);
* the surrogate: population X driven by x, Y by y; features sin/cos of its phases. In closed
  loop the predicted x, y drive it (linear between samples, as in training).

Valid prediction time: the first time the normalised error ||u - u_hat|| / sqrt(<||u||^2>)
exceeds 0.4, in Lyapunov times (t * 0.9056).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.baselines import (  # noqa: F401 (the forecasters re-exported)
    FORECAST_LAMBDAS,
    esn_forecast,
    forecast_targets,
    ngrc_forecast,
)
from lorenz.data import LYAPUNOV_TIME, LorenzSeries, Splits
from lorenz.lanes import lane_statistics
from lorenz.observer import driven, features
from lorenz.readout import fit_ridge

__all__ = [
    "valid_prediction_time",
    "ngrc_forecast",
    "esn_forecast",
    "surrogate_forecast",
    "forecast_starts",
]


def valid_prediction_time(u: jax.Array, u_hat: jax.Array, delta: float, threshold: float = 0.4,
                          norm: jax.Array | None = None) -> jax.Array:
    """VPT in Lyapunov times of a forecast u_hat (H, D) of u (H, D), samples ``delta`` apart.

    ``norm`` is sqrt(<||u||^2>) over the attractor (default: over ``u``). The error at sample h
    is that after h + 1 steps; a forecast that never fails gets the full horizon.
    """
    norm = jnp.sqrt(jnp.mean(jnp.sum(u * u, -1))) if norm is None else norm
    err = jnp.linalg.norm(u - u_hat, axis=-1) / norm
    failed = err > threshold
    first = jnp.where(failed.any(), jnp.argmax(failed), u.shape[0])
    return first * delta / LYAPUNOV_TIME


def forecast_starts(splits: Splits, n_starts: int, horizon: int) -> np.ndarray:
    """Start samples in the test split, evenly spaced, each with ``horizon`` samples after it."""
    test = splits.slices()["test"]
    last = test.stop - horizon - 1
    if last < test.start:
        raise ValueError(f"test split of {splits.test} samples is shorter than horizon {horizon}")
    return np.linspace(test.start, last, n_starts).round().astype(int)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _closed_loop(sur, thetas, u, w, b, starts, delta, horizon: int):
    """(n_starts, horizon, 3) closed-loop runs from the teacher-forced phases at ``starts``."""
    def run(start):
        def step(carry, _):
            theta, ut = carry
            o = features(theta) @ w + b  # increments of x, y and z itself (forecast_targets)
            nxt = jnp.concatenate([ut[:2] + o[:2], o[2:]])
            drive = sg.make_drive(jnp.asarray([0.0, delta], sur.dtype),
                                  jnp.stack([ut[:2], nxt[:2]]).astype(sur.dtype))
            theta = sg.fold(sur.replace(drive=drive), theta, (), lambda a, i, t: a, dt=delta,
                            n_steps=1, field=sg.Sparse()).y1
            return (theta, nxt), nxt

        return jax.lax.scan(step, (thetas[start], u[start]), None, length=horizon)[1]

    return jax.vmap(run)(starts)


def surrogate_forecast(sur: sg.Surrogate, theta0: jax.Array, series: LorenzSeries,
                       splits: Splits, starts, horizon: int) -> np.ndarray:
    """Surrogate closed-loop forecasts from each start: (n_starts, horizon, 3).

    The readout of the increments is fitted from the batched engine's statistics
    (``lorenz.lanes``, one lane) by ``readout.fit_ridge``; the starts run side by side.
    """
    u, targets, _ = forecast_targets(series, splits)
    du = np.concatenate([targets, np.zeros((1, 3))])
    xy = jnp.asarray(series.u[None, :, :2], sur.dtype)
    ls = lane_statistics(sur, sur.params, theta0, xy, du[None], splits, delta=series.delta)
    fit = fit_ridge(jax.tree.map(lambda x: x[0, 0], ls.stats), lambdas=FORECAST_LAMBDAS)
    thetas = sg.simulate(driven(sur, series), theta0, dt=series.delta,
                         n_steps=u.shape[0] - 1, field=sg.Sparse()).ys
    dtype = sur.dtype
    return np.asarray(_closed_loop(sur, thetas, jnp.asarray(u, dtype),
                                   jnp.asarray(fit.w, dtype), jnp.asarray(fit.b, dtype),
                                   jnp.asarray(np.asarray(starts)), series.delta, horizon))
