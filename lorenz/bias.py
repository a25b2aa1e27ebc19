"""Differentiable dynamical Shapley values of the Lorenz observer (docs/lorenz.md).

``observer.evaluate_observer`` picks the ridge regularisation on a validation split (an argmin,
and an eigendecomposition whose derivative is singular for masked features). Here the
regularisation is *fixed* (lam times the mean feature variance times n, as in
``readout.fit_ridge``) and each coalition's readout is a Cholesky-type solve on the features of
its modalities only, so v(S) = -NMSE_test(S) is a smooth function of the couplings:

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
from lorenz.readout import NormalEquations, nmse
from surrogate.bias import Couplings, with_couplings

__all__ = ["DEFAULT_LAMBDA", "fixed_ridge_nmse", "observer_shapley", "select_lambda",
           "shapley_difference"]

#: Fixed ridge regularisation (relative to the mean feature variance times n).
DEFAULT_LAMBDA = 1e-4


def fixed_ridge_nmse(stats: NormalEquations, features: np.ndarray, lam: float = DEFAULT_LAMBDA,
                     train: int = 0, split: int = 2) -> jax.Array:
    """NMSE (mean over targets) on ``split`` of the ridge readout fitted on ``train`` with the
    fixed ``lam``, on the feature indices ``features`` (static int array)."""
    idx = np.asarray(features, int)
    st = jax.tree.map(lambda x: x[train], stats)
    mu = st.s / st.n
    zbar = st.zs / st.n
    C = (st.G - st.n * jnp.outer(mu, mu))[np.ix_(idx, idx)]
    c = (st.h - st.n * mu[:, None] * zbar[None, :])[idx]
    scale = jnp.trace(C) / idx.size
    w_sub = jnp.linalg.solve(C + lam * scale * jnp.eye(idx.size, dtype=C.dtype), c)
    w = jnp.zeros((stats.G.shape[-1], c.shape[-1]), C.dtype).at[idx].set(w_sub)
    b = zbar - mu @ w
    return nmse(stats, split, w, b).mean()


def select_lambda(stats: NormalEquations, lambdas=tuple(10.0 ** k for k in range(-6, 2)),
                  val: int = 1) -> float:
    """The lam of ``lambdas`` with the lowest validation NMSE of the readout on all features
    (host-side, not differentiated): choose it once at a base point, then hold it fixed."""
    idx = np.arange(stats.G.shape[-1])
    errs = [float(fixed_ridge_nmse(stats, idx, lam, split=val)) for lam in lambdas]
    errs = [e if np.isfinite(e) else np.inf for e in errs]
    return float(lambdas[int(np.argmin(errs))])


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
    # exact two-player Shapley values (readout.shapley2, traceable here)
    return jnp.stack([0.5 * ((vx - v0) + (vxy - vy)), 0.5 * ((vy - v0) + (vxy - vx))])


def shapley_difference(c: Couplings, sur: sg.Surrogate, theta0: jax.Array,
                       series: LorenzSeries, splits: Splits, *, lam: float = DEFAULT_LAMBDA,
                       block: int = 50) -> jax.Array:
    """phi_Y - phi_X (scalar) of the observer; differentiable in ``c`` (module docstring)."""
    phi = observer_shapley(c, sur, theta0, series, splits, lam=lam, block=block)
    return phi[1] - phi[0]
