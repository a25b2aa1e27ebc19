"""Differentiable dynamical Shapley values of the Lorenz observer (docs/lorenz.md).

``observer.evaluate_observer`` picks the ridge regularisation on a validation split (an argmin,
and an eigendecomposition whose derivative is singular for masked features). Here the same ridge
(``readout.ridge``) runs with a *fixed* regularisation (lam times the mean feature variance
times n) and each coalition's readout is a solve in plain XLA ops (``readout.spd_solve``,
Gauss-Jordan with the implicit derivative) on the features of its modalities only, so
v(S) = -NMSE_test(S) is a smooth function of the couplings:

    phi_Y - phi_X = v{Y} - v{X} = NMSE_X - NMSE_Y      (two players, exact)

> 0: the Y modality (driven by y(t)) carries more of the prediction of z than X. Couplings are
``surrogate.bias.Couplings`` (B, K, per-modality drive gains of x and y).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.data import LorenzSeries, Splits
from lorenz.observer import observer_statistics
from lorenz.readout import NormalEquations, one_blas_thread, ridge, shapley2
from surrogate.bias import Couplings, with_couplings

__all__ = ["DEFAULT_LAMBDA", "fixed_ridge_nmse", "observer_shapley", "select_lambda",
           "shapley_difference"]

#: Fixed ridge regularisation (relative to the mean feature variance times n).
DEFAULT_LAMBDA = 1e-4


def fixed_ridge_nmse(stats: NormalEquations, features: np.ndarray, lam: float = DEFAULT_LAMBDA,
                     train: int = 0, split: int = 2) -> jax.Array:
    """NMSE (mean over targets) on ``split`` of the ridge readout (``readout.ridge``) fitted on
    ``train`` with the fixed ``lam``, on the feature indices ``features`` (static int array)."""
    st = jax.tree.map(jnp.asarray, stats)
    _, _, errs = ridge(st, np.asarray(features, int), (lam,), train)
    return errs[0, split].mean()


def select_lambda(stats: NormalEquations, lambdas=tuple(10.0 ** k for k in range(-6, 2)),
                  train: int = 0, val: int = 1) -> float:
    """The lam of ``lambdas`` with the lowest validation NMSE (mean over targets) of the readout
    on all features (host float64, not differentiated): choose it once at a base point, then
    hold it fixed."""
    st = jax.tree.map(lambda x: np.asarray(x, np.float64), stats)
    with one_blas_thread():
        _, _, errs = ridge(st, np.arange(st.G.shape[-1]), lambdas, train)
    v = errs[:, val].mean(-1)
    return float(lambdas[int(np.argmin(np.where(np.isfinite(v), v, np.inf)))])


def observer_shapley(c: Couplings, sur: sg.Surrogate, theta0: jax.Array, series: LorenzSeries,
                     splits: Splits, *, lam: float = DEFAULT_LAMBDA, block: int = 50
                     ) -> jax.Array:
    """(phi_X, phi_Y) of the observer with couplings ``c`` and the fixed ridge ``lam``."""
    s = with_couplings(sur, c)
    stats = observer_statistics(s, theta0, series, splits, block=block)
    n = sur.network.n
    pop = np.asarray(sur.network.population)
    groups = [np.flatnonzero(pop == m) for m in range(2)]

    def value(players):  # v(S) = -NMSE of the readout on the modalities in S; v({}) = -1
        if not players:
            return jnp.asarray(-1.0, stats.G.dtype)
        idx = np.concatenate([groups[p] for p in players])
        return -fixed_ridge_nmse(stats, np.concatenate([idx, idx + n]), lam)

    v0, vx, vy, vxy = value(()), value((0,)), value((1,)), value((0, 1))
    return shapley2(vx, vy, vxy, v0)


def shapley_difference(c: Couplings, sur: sg.Surrogate, theta0: jax.Array,
                       series: LorenzSeries, splits: Splits, *, lam: float = DEFAULT_LAMBDA,
                       block: int = 50) -> jax.Array:
    """phi_Y - phi_X (scalar) of the observer; differentiable in ``c`` (module docstring)."""
    phi = observer_shapley(c, sur, theta0, series, splits, lam=lam, block=block)
    return phi[1] - phi[0]
