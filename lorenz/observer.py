"""The Lorenz observer task through the surrogate (docs/lorenz.md).

Population X is driven by x(t), population Y by y(t) (standardised); a ridge readout of the
features sin(theta), cos(theta) predicts z(t). The surrogate is integrated with one RK4 step per
sample (dt = sample spacing; the drive is the piecewise-linear interpolation of the samples) in
blocks of ``block`` samples; the normal equations of each split are accumulated block by block,
so no trajectory is stored (memory per point: O(block N + N^2)).

Dynamical Shapley values of the two modalities: v(S) = -NMSE_test of the readout retrained on the
features of the modalities in S, v(empty) = -1, and the exact two-player formula
phi_X = 1/2 [(v{X} - v{}) + (v{X,Y} - v{Y})].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

import surrogate as sg
from lorenz.data import LorenzSeries, Splits
from lorenz.readout import NormalEquations, accumulate, fit_ridge, shapley_values, stats_dtype

__all__ = [
    "features",
    "modality_masks",
    "observer_statistics",
    "ObserverResult",
    "evaluate_observer",
    "observer_point",
    "surrogate_features",
    "driven",
]


def features(theta: jax.Array) -> jax.Array:
    """Readout features [sin theta, cos theta]: (..., N) -> (..., 2N)."""
    return jnp.concatenate([jnp.sin(theta), jnp.cos(theta)], -1)


def modality_masks(net: sg.Network) -> jax.Array:
    """(M, 2N) 0/1 masks selecting the features of each modality."""
    onehot = jax.nn.one_hot(net.population, net.n_populations).T
    return jnp.concatenate([onehot, onehot], -1)


def driven(sur: sg.Surrogate, series: LorenzSeries) -> sg.Surrogate:
    """The surrogate with X <- x(t), Y <- y(t) (modalities 0 and 1)."""
    if sur.network.n_populations != 2:
        raise ValueError(f"the observer needs 2 modalities, got {sur.network.n_populations}")
    drive = sg.make_drive(series.ts, series.u[:, :2].astype(sur.dtype))
    return sur.replace(drive=drive)


def observer_statistics(
    sur: sg.Surrogate,
    theta0: jax.Array,
    series: LorenzSeries,
    splits: Splits,
    targets: jax.Array | None = None,
    *,
    block: int = 50,
) -> NormalEquations:
    """Normal equations (3 splits: train, val, test) of the surrogate observer.

    Args:
        sur: two-modality surrogate (its drive is replaced by x, y of ``series``).
        theta0: (N,) phases at sample 0.
        series: the Lorenz series, ``splits.total`` samples ``series.delta`` apart.
        targets: (T, Z) regression targets per sample; default z, shape (T, 1).
        block: samples per integration block (memory vs. overhead).

    The features are accumulated in float64 when JAX has x64 enabled (the dynamics keep the
    surrogate's dtype), since the quadratic forms of the NMSE cancel strongly.
    """
    if splits.washout < 1:
        raise ValueError("Splits.washout must be >= 1 (sample 0 is the initial state)")
    total = splits.total
    if series.u.shape[0] != total:
        raise ValueError(f"series has {series.u.shape[0]} samples, splits need {total}")
    z = series.u[:, 2:3] if targets is None else targets
    n_blocks = -(-(total - 1) // block)
    pad = n_blocks * block + 1 - total  # samples past the end: skipped (split id -1)
    ids = np.concatenate([splits.ids(), -np.ones(pad, int)]).reshape(-1)[1:]
    ids = jnp.asarray(ids.reshape(n_blocks, block), jnp.int32)
    zb = jnp.concatenate([z[1:], jnp.zeros((pad,) + z.shape[1:], z.dtype)])
    zb = zb.reshape(n_blocks, block, -1).astype(stats_dtype())
    forced = driven(sur, series)
    dt = series.delta
    init = NormalEquations.zeros(3, 2 * sur.network.n, z.shape[-1], stats_dtype())

    def body(carry, xs):
        theta, stats = carry
        k, split, zk = xs
        traj = sg.simulate(forced, theta, dt=dt, n_steps=block, t0=k * block * dt)
        f = features(traj.ys[1:]).astype(stats_dtype())
        return (traj.ys[-1], accumulate(stats, split, f, zk)), None

    (_, stats), _ = jax.lax.scan(body, (jnp.asarray(theta0, sur.dtype), init),
                                 (jnp.arange(n_blocks), ids, zb))
    return stats


@struct.dataclass
class ObserverResult:
    """Observer scores of one parameter point (NMSE on test, per target averaged).

    nmse: full readout; nmse_x / nmse_y: readout on one modality; phi: (2,) Shapley values
    (phi_X, phi_Y); lam: chosen regularisation of the full readout; nmse_val: full readout on
    validation.
    """

    nmse: jax.Array
    nmse_x: jax.Array
    nmse_y: jax.Array
    phi: jax.Array
    lam: jax.Array
    nmse_val: jax.Array


def evaluate_observer(stats: NormalEquations, masks: jax.Array) -> ObserverResult:
    """Ridge readouts for all modality subsets and the Shapley values, from statistics.

    The three non-empty coalitions are fitted as one batch (one batched eigendecomposition):
    independent batched ``eigh`` calls side by side deadlocked XLA:CPU's thread pool under
    ``vmap`` over many points.
    """
    masks = jnp.asarray(masks, stats.G.dtype)
    coalitions = ((1, 1), (1, 0), (0, 1))  # {X, Y}, {X}, {Y}
    feats = jnp.clip(jnp.asarray(coalitions, masks.dtype) @ masks, 0, 1)  # (3, F)
    fits = jax.vmap(lambda m: fit_ridge(stats, m))(feats)
    test = fits.nmse[:, 2].mean(-1)  # (3,) test NMSE per coalition

    def value(m):  # v(S) at a 0/1 player mask (its multilinear extension), v(empty) = -1
        x, y = m[0], m[1]
        return -(x * y * test[0] + x * (1 - y) * test[1] + (1 - x) * y * test[2]
                 + (1 - x) * (1 - y))

    phi = shapley_values(value, 2)
    return ObserverResult(
        nmse=test[0],
        nmse_x=test[1],
        nmse_y=test[2],
        phi=phi,
        lam=fits.lam[0].mean(),
        nmse_val=fits.nmse[0, 1].mean(),
    )


def observer_point(sur, theta0, series, splits, *, block: int = 50) -> ObserverResult:
    """Statistics and scores of one surrogate (jit/vmap over parameters at the call site)."""
    stats = observer_statistics(sur, theta0, series, splits, block=block)
    return evaluate_observer(stats, modality_masks(sur.network))


def surrogate_features(sur, theta0, series) -> jax.Array:
    """Stored features (T, 2N) of the driven surrogate over the whole series (for figures)."""
    traj = sg.simulate(driven(sur, series), theta0, dt=series.delta,
                       n_steps=series.u.shape[0] - 1)
    return features(traj.ys)
