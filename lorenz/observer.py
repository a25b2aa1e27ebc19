"""The Lorenz observer task through the surrogate (docs/lorenz.md).

Population X is driven by x(t), population Y by y(t) (standardised); a ridge readout of the
features sin(theta), cos(theta) predicts z(t). The surrogate takes one RK4 step per sample
(dt = sample spacing; the drive is the piecewise-linear interpolation of the samples).
``observer_statistics`` streams one point's normal equations in JAX (traceable and
differentiable: ``lorenz.bias``); the planes use ``lorenz.lanes`` (many points on lanes, the
same blocks and steps).

``evaluate_observer`` fits the readouts of the coalitions {X, Y}, {X}, {Y} (``readout.fit_ridge``)
and ``ObserverResult.phi`` gives the dynamical Shapley values (exact two-player formula
phi_X = 1/2 [(v{X} - v{}) + (v{X,Y} - v{Y})]) under v(S) = -log10 NMSE_test(S), v({}) = 0
(scale-free) or v(S) = -NMSE_test(S), v({}) = -1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.data import LorenzSeries, Splits
from lorenz.readout import NormalEquations, accumulate, fit_ridge, shapley2, stats_dtype

__all__ = [
    "features",
    "modality_masks",
    "modality_features",
    "observer_statistics",
    "COALITIONS",
    "ObserverResult",
    "evaluate_observer",
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
        sol = sg.fold(forced, theta, jnp.zeros((block, 2 * theta.shape[-1]), theta.dtype),
                      lambda acc, i, th: acc.at[i - 1].set(features(th)), dt=dt,
                      n_steps=block, t0=(k * block).astype(sur.dtype) * jnp.asarray(dt, sur.dtype),
                      field=sg.Sparse())
        return (sol.y1, accumulate(stats, split, sol.acc.astype(stats_dtype()), zk)), None

    (_, stats), _ = jax.lax.scan(body, (jnp.asarray(theta0, sur.dtype), init),
                                 (jnp.arange(n_blocks), ids, zb))
    return stats


#: Coalitions of the two modalities, in the order of ``ObserverResult`` rows.
COALITIONS = ("xy", "x", "y")


@dataclasses.dataclass(frozen=True)
class ObserverResult:
    """Observer scores (NumPy float64; leading axes ``...`` as the statistics').

    nmse: (..., 3, 3) NMSE per coalition ({X, Y}, {X}, {Y}) and split (train, val, test) of the
    readout retrained on that coalition's features; lam, edge: (..., 3) the regularisation
    chosen on validation per coalition and whether it is at an end of the grid.
    """

    nmse: np.ndarray
    lam: np.ndarray
    edge: np.ndarray

    @property
    def test(self) -> np.ndarray:
        """(..., 3) test NMSE per coalition."""
        return self.nmse[..., 2]

    @property
    def val(self) -> np.ndarray:
        """(..., 3) validation NMSE per coalition."""
        return self.nmse[..., 1]

    def phi(self, value: str = "log") -> np.ndarray:
        """(..., 2) Shapley values (phi_X, phi_Y) on test under v(S) = -log10 NMSE(S),
        v({}) = 0 (``"log"``, scale-free) or v(S) = -NMSE(S), v({}) = -1 (``"neg"``)."""
        t = self.test
        if value == "log":
            v = -np.log10(np.maximum(t, 1e-300))
            return shapley2(v[..., 1], v[..., 2], v[..., 0], 0.0)
        if value == "neg":
            return shapley2(-t[..., 1], -t[..., 2], -t[..., 0], -1.0)
        raise ValueError(f"value must be 'log' or 'neg', got {value!r}")


def modality_features(net: sg.Network) -> list[np.ndarray]:
    """Feature indices (sin and cos) of each modality: a list of M int arrays."""
    pop, n = np.asarray(net.population), net.n
    return [np.concatenate([np.flatnonzero(pop == m), np.flatnonzero(pop == m) + n])
            for m in range(net.n_populations)]


def evaluate_observer(stats: NormalEquations, groups: list[np.ndarray],
                      coalitions: tuple[str, ...] = COALITIONS) -> ObserverResult:
    """Ridge readouts (``readout.fit_ridge``, float64) of the coalitions {X, Y}, {X}, {Y} from
    the statistics (..., 3 splits, F, F) of one target; ``groups`` the features of X and Y.
    ``coalitions``: those fitted, in this order (``("xy",)``: the full readout alone, as the
    anchoring selection and the anchor scan need; ``phi`` needs all three)."""
    subsets = dict(zip(COALITIONS, (np.concatenate(groups), groups[0], groups[1]), strict=True))
    fits = [fit_ridge(stats, subsets[c]) for c in coalitions]
    return ObserverResult(nmse=np.stack([f.nmse.mean(-1) for f in fits], -2),
                          lam=np.stack([f.lam[..., 0] for f in fits], -1),
                          edge=np.stack([f.edge[..., 0] for f in fits], -1))


def surrogate_features(sur, theta0, series) -> jax.Array:
    """Stored features (T, 2N) of the driven surrogate over the whole series (for figures)."""
    traj = sg.simulate(driven(sur, series), theta0, dt=series.delta,
                       n_steps=series.u.shape[0] - 1)
    return features(traj.ys)
