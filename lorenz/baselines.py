"""Baselines from reservoirpy, on the same data, splits and readout as the surrogate.

reservoirpy (``pip install 'xmodal[lorenz]'``) makes the features: its ``Reservoir`` (an
echo-state network) and its ``NVAR`` (next-generation reservoir computing, Gauthier et al.
2021). The readout is the project's ridge (``lorenz.readout.fit_ridge``): lam chosen on the
validation split, NMSE = mean((z_hat - z)^2) / var(z) per split, exactly as for the surrogate.
reservoirpy's own ``Ridge`` takes one fixed lam; the project's readout picks it on validation.

Observer task [x(t), y(t)] -> z(t) (``observer_baselines``):

* ``raw``: ridge on [x, y]. By the symmetry (x, y, z) -> (-x, -y, z) of Lorenz-63, z is
  uncorrelated with any linear function of x and y: its NMSE is close to 1.
* ``ngrc``: ``NVAR(delay=4, order=2, strides=5)``: [x, y] at 4 delays 5 samples apart and all
  their unique quadratic monomials.
* ``esn``: a ``Reservoir`` of the surrogate's size; spectral radius, leak rate and input
  scaling are chosen on the validation split from ``ESN_GRID`` (with the seed fixed), like lam.
  The reservoir has a bias: without one its states are odd in the input history and, by the
  same symmetry, carry nothing about z (reservoirpy's default bias is 0).

Closed-loop forecasting of u = (x, y, z) (``ngrc_forecast``, ``esn_forecast``), every
forecaster (the surrogate too) with the same inputs x, y: the readout learns the one-sample
increments of x and y and z itself (lam, and for the ESN its hyperparameters, chosen on the
validation split's one-step NMSE); in closed loop the model is driven by its own x, y.

reservoirpy computes in NumPy float64, and so does the readout.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import numpy as np

from lorenz.data import LorenzSeries, Splits
from lorenz.readout import LAMBDAS, RidgeFit, fit_ridge, normal_equations

__all__ = [
    "ESN",
    "ESN_GRID",
    "forecast_targets",
    "FORECAST_LAMBDAS",
    "Baseline",
    "make_esn",
    "esn_states",
    "esn_states_batch",
    "ngrc_features",
    "observer_baselines",
    "ngrc_forecast",
    "esn_forecast",
]

#: Hyperparameters of the ESN searched on the validation split (all combinations).
ESN_GRID = {"sr": (0.2, 0.5, 0.9), "lr": (1.0, 0.5, 0.2), "input_scaling": (0.1, 0.3, 1.0)}


def _reservoirpy():
    try:
        import reservoirpy.nodes
    except ImportError as e:  # an optional extra: the core install does not carry it
        raise ImportError("the Lorenz baselines need reservoirpy: "
                          "pip install 'xmodal[lorenz]'") from e
    return reservoirpy


@dataclasses.dataclass(frozen=True)
class ESN:
    """Hyperparameters and seed of a reservoirpy ``Reservoir`` (tanh units, leaky).

    W: normal, density ``rc_connectivity``, rescaled to spectral radius ``sr``; W_in: uniform
    on [-input_scaling, input_scaling], dense; bias: uniform on [-bias, bias]; leak rate ``lr``.
    The same seed gives the same W, W_in, bias draws at every ``sr`` and scaling.
    """

    units: int = 100
    seed: int = 0
    sr: float = 0.9
    lr: float = 1.0
    input_scaling: float = 0.3
    rc_connectivity: float = 0.1
    bias: float = 0.2

    def reservoir(self):
        """A fresh (uninitialised, zero-state) ``reservoirpy.nodes.Reservoir``."""
        rpy = _reservoirpy()
        uniform = rpy.mat_gen.uniform
        return rpy.nodes.Reservoir(
            self.units, sr=self.sr, lr=self.lr, input_scaling=self.input_scaling,
            input_connectivity=1.0, rc_connectivity=self.rc_connectivity, Win=uniform,
            bias=uniform(low=-self.bias, high=self.bias), seed=self.seed)


def make_esn(key: jax.Array, n: int = 100, **hyper) -> ESN:
    """ESN spec of ``n`` units whose reservoirpy seed is drawn from ``key`` (int32 range)."""
    seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    return ESN(units=n, seed=seed, **hyper)


def esn_states(esn: ESN, u) -> np.ndarray:
    """States (T, units) of the reservoir driven by u (T, D), from a zero state."""
    return esn.reservoir().run(np.asarray(u, np.float64))


def ngrc_features(u, k: int = 4, skip: int = 5) -> np.ndarray:
    """reservoirpy NVAR features (T, k D + k D (k D + 1) / 2) of u (T, D): [u(t), u(t - skip),
    ..., u(t - (k-1) skip)] and their unique quadratic monomials (i <= j, row-major); rows
    before (k - 1) skip see zeros for the missing past (keep them in the washout)."""
    nvar = _reservoirpy().nodes.NVAR(delay=k, order=2, strides=skip)
    return nvar.run(np.asarray(u, np.float64))


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A fitted baseline: its readout, the hyperparameters used, the wall time (features and
    readouts, including the validation search)."""

    fit: RidgeFit
    params: dict
    seconds: float

    @property
    def nmse(self) -> np.ndarray:
        """(3, Z) NMSE per split (train, validation, test) and target."""
        return self.fit.nmse

    @property
    def lam(self) -> np.ndarray:
        """(Z,) regularisation chosen on the validation split."""
        return self.fit.lam


#: Ridge grid of every forecaster's increment readout (the surrogate's too): below 1e-9 the
#: one-step validation error still falls a little while the closed loop turns unstable
#: (NG-RC: VPT 4.4 Lyapunov times with this grid, 0.04 with ``readout.LAMBDAS`` down to 1e-16).
FORECAST_LAMBDAS = tuple(10.0 ** k for k in range(-9, 2))


def _fit(f, z, ids, lambdas=LAMBDAS) -> RidgeFit:
    """Ridge readout (``readout.fit_ridge``, float64) of targets z (T, Z) on features f (T, F),
    split ids (T,)."""
    return fit_ridge(normal_equations(f, z, ids), lambdas=lambdas)


def esn_states_batch(esns, u) -> np.ndarray:
    """States (C, T, units) of C reservoirs of one size (``ESN``s, typically one seed and
    several hyperparameters) driven by u (T, D), from zero states: reservoirpy's matrices of
    each (``ESN.reservoir()``, initialised) and its update x <- (1 - lr) x + lr tanh(W x +
    W_in u + bias), the C reservoirs advanced together by one sparse block-diagonal product
    per step (reservoirpy steps each alone: C Python steps per sample). The same operations
    in the same order as reservoirpy's: equal to ``esn_states`` of each, bit for bit (with
    reservoirpy's sparse W, i.e. ``rc_connectivity`` < 1)."""
    import scipy.sparse

    u = np.asarray(u, np.float64)
    nodes = [e.reservoir() for e in esns]
    for node in nodes:
        node.initialize(u)
    units = nodes[0].units
    if any(node.units != units for node in nodes):
        raise ValueError(f"the reservoirs must have one size, got {[n.units for n in nodes]}")
    w = scipy.sparse.block_diag([node.W for node in nodes], format="csr")
    w_in = np.concatenate([np.asarray(node.Win) for node in nodes])  # (C units, D)
    bias = np.concatenate([np.broadcast_to(node.bias, (units,)) for node in nodes])
    lr = np.repeat([float(node.lr) for node in nodes], units)
    keep = 1 - lr
    out = np.empty((u.shape[0], w_in.shape[0]))
    x = np.zeros(w_in.shape[0])
    for t in range(u.shape[0]):  # in place: (1 - lr) x + lr tanh(W x + W_in u + bias)
        pre = w @ x
        pre += w_in @ u[t]
        pre += bias
        np.tanh(pre, out=pre)
        pre *= lr
        x = np.multiply(keep, x, out=out[t])
        x += pre
    return np.moveaxis(out.reshape(u.shape[0], len(nodes), units), 1, 0)


def _tune_esn(esn: ESN, u_in, z, ids, grid, lambdas=LAMBDAS) -> ESN:
    """The ESN of ``grid`` (name -> values, every combination) with the lowest validation NMSE
    (mean over targets; the first of equals); the seed and the other settings stay those of
    ``esn``. The candidates' states come from one batched run (``esn_states_batch``)."""
    cands = [dataclasses.replace(esn, **{n: float(v) for n, v in zip(grid, values, strict=True)})
             for values in itertools.product(*grid.values())]
    errs = [float(np.mean(_fit(r, z, ids, lambdas).nmse[1]))
            for r in esn_states_batch(cands, u_in)]
    return cands[int(np.argmin(np.where(np.isfinite(errs), errs, np.inf)))]


def observer_baselines(esn: ESN, series: LorenzSeries, splits: Splits, *,
                       grid=ESN_GRID) -> dict[str, Baseline]:
    """Fit the three baselines on [x, y] -> z; returns name -> ``Baseline``.

    ``esn``: units, seed and fixed settings of the ESN; the settings named in ``grid`` are
    chosen on the validation split (``grid=None``: ``esn`` as given).
    """
    xy, z = np.asarray(series.u[:, :2], np.float64), np.asarray(series.u[:, 2:3], np.float64)
    ids = splits.ids()
    out = {}
    t0 = time.perf_counter()
    out["raw"] = Baseline(_fit(xy, z, ids), {}, time.perf_counter() - t0)
    t0 = time.perf_counter()
    out["ngrc"] = Baseline(_fit(ngrc_features(xy), z, ids), {"delay": 4, "order": 2,
                                                             "strides": 5},
                           time.perf_counter() - t0)
    t0 = time.perf_counter()
    chosen = _tune_esn(esn, xy, z, ids, grid) if grid else esn
    fit = _fit(esn_states(chosen, xy), z, ids)
    out["esn"] = Baseline(fit, dataclasses.asdict(chosen), time.perf_counter() - t0)
    return out


def forecast_targets(series: LorenzSeries, splits: Splits):
    """u (T, 3) float64, the forecasters' targets (T - 1, 3) [x(t+1) - x(t), y(t+1) - y(t),
    z(t+1)] and their split ids (T - 1,): that of sample t, whose state predicts them.

    Every forecaster gets the same inputs, x and y: in closed loop it feeds back its own
    x and y (summing their increments) and reads z out of its state (not summed): a third
    input z would let the baselines copy it, which the surrogate (X <- x, Y <- y) cannot.
    """
    u = np.asarray(series.u, np.float64)
    return u, np.concatenate([u[1:, :2] - u[:-1, :2], u[1:, 2:]], -1), splits.ids()[:-1]


def _next(ut, ft, w, b) -> np.ndarray:
    """u_hat(t + 1) = [x, y + their increments, z read out] from the state features ft."""
    o = ft @ w + b
    return np.concatenate([ut[:2] + o[:2], o[2:]])


def _check_starts(starts, back: int, n: int, horizon: int) -> np.ndarray:
    starts = np.asarray(starts).astype(int)
    if starts.ndim != 1 or (starts < back).any() or (starts >= n).any():
        raise ValueError(f"starts must be sample indices in [{back}, {n}), got {starts}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return starts


def ngrc_forecast(series: LorenzSeries, splits: Splits, starts, horizon: int, *, k: int = 2,
                  skip: int = 1) -> tuple[np.ndarray, Baseline]:
    """NG-RC (reservoirpy ``NVAR(k, 2, skip)`` on x, y) closed-loop forecasts:
    (n_starts, horizon, 3) predictions of u at samples start + 1 .. start + horizon, and the
    fitted ``Baseline``.

    Teacher-forced up to each start (the NVAR's delay line holds the true past of x, y), then
    fed its own x, y (``forecast_targets``: z is read out, not fed back).
    """
    t0 = time.perf_counter()
    u, du, ids = forecast_targets(series, splits)
    back = (k - 1) * skip
    starts = _check_starts(starts, back, u.shape[0], horizon)
    f = ngrc_features(u[:, :2], k, skip)
    fit = _fit(f[:-1], du, ids, FORECAST_LAMBDAS)
    w, b = np.asarray(fit.w, np.float64), np.asarray(fit.b, np.float64)
    nvar = _reservoirpy().nodes.NVAR(delay=k, order=2, strides=skip)
    nvar.run(u[:k * skip, :2])  # initialise; the delay line is set per start below
    preds = np.empty((starts.size, horizon, 3))
    for i, s in enumerate(starts):
        nvar.store = u[s - np.arange(k * skip), :2]  # row 0 newest, as NVAR keeps it
        ut, ft = u[s], f[s]
        for j in range(horizon):
            ut = _next(ut, ft, w, b)
            preds[i, j] = ut
            ft = nvar.step(ut[:2])
    return preds, Baseline(fit, {"delay": k, "order": 2, "strides": skip},
                           time.perf_counter() - t0)


def esn_forecast(esn: ESN, series: LorenzSeries, splits: Splits, starts, horizon: int, *,
                 grid=ESN_GRID) -> tuple[np.ndarray, Baseline]:
    """ESN (reservoirpy ``Reservoir`` driven by x, y) closed-loop forecasts:
    (n_starts, horizon, 3) predictions of u at samples start + 1 .. start + horizon, and the
    fitted ``Baseline`` (``grid`` chosen on the validation split's one-step NMSE).

    Teacher-forced up to each start, then driven by its own x, y (``forecast_targets``).
    """
    t0 = time.perf_counter()
    u, du, ids = forecast_targets(series, splits)
    starts = _check_starts(starts, 0, u.shape[0], horizon)
    if grid:
        esn = _tune_esn(esn, u[:-1, :2], du, ids, grid, FORECAST_LAMBDAS)
    node = esn.reservoir()
    r = node.run(u[:, :2])  # r[t]: the state after input x, y at t
    fit = _fit(r[:-1], du, ids, FORECAST_LAMBDAS)
    w, b = np.asarray(fit.w, np.float64), np.asarray(fit.b, np.float64)
    preds = np.empty((starts.size, horizon, 3))
    for i, s in enumerate(starts):
        node.state = {"out": r[s].copy()}
        ut, rt = u[s], r[s]
        for j in range(horizon):
            ut = _next(ut, rt, w, b)
            preds[i, j] = ut
            rt = node.step(ut[:2])
    return preds, Baseline(fit, dataclasses.asdict(esn), time.perf_counter() - t0)
