"""Autonomous (closed-loop) forecasting of Lorenz-63 and the valid prediction time.

Both forecasters learn the one-sample increment u(t + delta) - u(t) of the standardised state
u = (x, y, z) by ridge (regularisation chosen on the validation split), then run on their own
predictions from several starts in the test split:

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
from lorenz.baselines import esn_forecast, ngrc_forecast  # noqa: F401 (re-exported)
from lorenz.data import LYAPUNOV_TIME, LorenzSeries, Splits
from lorenz.observer import features, observer_statistics
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


@functools.partial(jax.jit, static_argnames=("splits", "horizon"))
def surrogate_forecast(sur: sg.Surrogate, theta0: jax.Array, series: LorenzSeries,
                       splits: Splits, starts, horizon: int):
    """Surrogate closed-loop forecasts from each start: (n_starts, horizon, 3), and the fit."""
    u = series.u
    du = jnp.concatenate([u[1:] - u[:-1], jnp.zeros((1, 3), u.dtype)])
    stats = observer_statistics(sur, theta0, series, splits, targets=du)
    fit = fit_ridge(stats)
    # Teacher-forced phases at every sample, to start the closed loop from.
    driven = sur.replace(drive=sg.make_drive(series.ts, u[:, :2].astype(sur.dtype)))
    thetas = sg.simulate(driven, theta0, dt=series.delta, n_steps=u.shape[0] - 1).ys
    delta = series.delta

    def run(start):
        def step(carry, _):
            theta, ut = carry
            nxt = ut + features(theta).astype(fit.w.dtype) @ fit.w + fit.b
            drive = sg.make_drive(jnp.asarray([0.0, delta], sur.dtype),
                                  jnp.stack([ut[:2], nxt[:2]]).astype(sur.dtype))
            theta = sg.simulate(sur.replace(drive=drive), theta, dt=delta, n_steps=1).ys[-1]
            return (theta, nxt), nxt

        return jax.lax.scan(step, (thetas[start], u[start].astype(fit.w.dtype)), None,
                            length=horizon)[1]

    return jax.vmap(run)(jnp.asarray(starts)), fit
