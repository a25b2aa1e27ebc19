"""The Lorenz experiment of the source paper, end to end (DESIGN.md section 5).

``run_experiment(config, out)`` sweeps the (beta_self, beta_cross) plane (log grid, K = B) with the
surrogate observer (X <- x, Y <- y, readout -> z), computes NMSE and the dynamical Shapley values
of both modalities at every point, fits the baselines on the same data, runs autonomous
forecasting (surrogate at the best point vs NG-RC), and returns every number as a JSON-ready dict.
Figures and the report are written by ``lorenz.figures`` and ``lorenz.report``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.baselines import make_esn, observer_baselines
from lorenz.data import LYAPUNOV_TIME, Splits, lorenz_series
from lorenz.forecast import forecast_starts, ngrc_forecast, surrogate_forecast, valid_prediction_time
from lorenz.observer import observer_point, surrogate_features
from lorenz.readout import fit_ridge, normal_equations, predict, stats_dtype
from lorenz.report import claim_check

__all__ = ["LorenzConfig", "run_experiment", "point_surrogate"]


@dataclasses.dataclass(frozen=True)
class LorenzConfig:
    """Every setting of the experiment (defaults: the main job, < 3 minutes on 2 CPU cores)."""

    grid: int = 16
    beta_min: float = 1e-4
    beta_max: float = 1.0
    seed: int = 0
    dt: float = 0.01  # Lorenz RK4 step
    sample_every: int = 4  # samples (and surrogate RK4 steps) every dt * sample_every = 0.04
    washout: int = 100  # samples: 4 time units, about 3.6 Lyapunov times
    train: int = 500
    val: int = 125
    test: int = 250
    block: int = 50
    omega_spread: float = 1.0
    gain: float = 1.0
    esn_size: int = 100
    forecast_starts: int = 5
    forecast_sample_every: int = 2  # finer sampling (0.02) for forecasting: NG-RC needs it
    forecast_horizon: int = 500  # samples: 10 time units, about 9 Lyapunov times
    forecast_test: int = 1500  # test samples of the separate forecasting series
    chunk_size: int | None = 64  # points per sweep chunk (progress and resume granularity)

    def __post_init__(self):
        if not (isinstance(self.grid, int) and self.grid >= 2):
            raise ValueError(f"grid must be an integer >= 2, got {self.grid!r}")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        Splits(self.washout, self.train, self.val, self.test)  # validates the counts
        if self.sample_every % self.forecast_sample_every:
            raise ValueError(f"sample_every={self.sample_every} must be a multiple of "
                             f"forecast_sample_every={self.forecast_sample_every}")

    @property
    def splits(self) -> Splits:
        return Splits(self.washout, self.train, self.val, self.test)

    @property
    def betas(self) -> np.ndarray:
        return np.logspace(np.log10(self.beta_min), np.log10(self.beta_max), self.grid)


def point_surrogate(base: sg.Surrogate, beta_self, beta_cross) -> sg.Surrogate:
    """The paper preset at one point of the plane: K = B = [[b_s, b_c], [b_c, b_s]]."""
    B = sg.block_matrix(beta_self, beta_cross, 2, base.dtype)
    return sg.replace(base, B=B, K=B)


def run_experiment(config: LorenzConfig, out: Path | None = None, *, resume: bool = False,
                   progress: bool = True, log=print) -> tuple[dict, dict]:
    """Run the experiment; returns (results, arrays) (results is JSON-ready).

    ``out``: where the sweep keeps its finished chunks (``out / "sweep"``), so that an
    interrupted run continues with ``resume=True``.
    """
    t_start = time.perf_counter()
    key = jax.random.key(config.seed)
    k_model, k_theta, k_esn = jax.random.split(key, 3)
    splits = config.splits
    series = lorenz_series(splits, dt=config.dt, sample_every=config.sample_every)
    base = sg.paper_preset(k_model, sizes=(50, 50), omega_spread=config.omega_spread,
                           gain=config.gain)
    theta0 = sg.initial_phases(k_theta, base.network.n)

    betas = config.betas
    bs, bc = np.meshgrid(betas, betas, indexing="ij")  # [i, j]: beta_self[i], beta_cross[j]
    points = {"beta_self": jnp.asarray(bs.ravel(), base.dtype),
              "beta_cross": jnp.asarray(bc.ravel(), base.dtype)}

    def fn(point):
        res = observer_point(point_surrogate(base, point["beta_self"], point["beta_cross"]),
                             theta0, series, splits, block=config.block)
        return dataclasses.asdict(res) if dataclasses.is_dataclass(res) else res

    g = config.grid
    t0 = time.perf_counter()
    store = None if out is None else Path(out) / "sweep"
    log(f"sweep: {g * g} points of the (beta_self, beta_cross) plane")
    swept = sg.sweep(fn, points, chunk_size=config.chunk_size, store=store, resume=resume,
                     progress=progress, config=dataclasses.asdict(config))
    sweep_s = time.perf_counter() - t0
    log(f"sweep done in {sweep_s:.1f} s")
    nmse = np.asarray(swept["nmse"]).reshape(g, g)
    phi = np.asarray(swept["phi"]).reshape(g, g, 2)
    nmse_x = np.asarray(swept["nmse_x"]).reshape(g, g)
    nmse_y = np.asarray(swept["nmse_y"]).reshape(g, g)
    best = np.unravel_index(np.nanargmin(nmse), nmse.shape)
    worst = np.unravel_index(np.nanargmax(nmse), nmse.shape)

    # Predictions at the best and worst points (stored features, same readout as the sweep).
    xy_true = np.asarray(series.raw)
    test = splits.slices()["test"]
    preds = {}
    features_at = jax.jit(surrogate_features)
    readout = jax.jit(lambda f, z, ids: fit_ridge(normal_equations(f, z, ids)))
    for name, (i, j) in (("best", best), ("worst", worst)):
        sur = point_surrogate(base, betas[i], betas[j])
        f = features_at(sur, theta0, series).astype(stats_dtype())
        fit = jax.block_until_ready(  # one LAPACK program at a time (see observer_baselines)
            readout(f, series.u[:, 2:3].astype(f.dtype), jnp.asarray(splits.ids())))
        z_hat = np.asarray(predict(fit, f))[:, 0]
        preds[name] = {"beta_self": float(betas[i]), "beta_cross": float(betas[j]),
                       "nmse_test": float(fit.nmse[2, 0]),
                       "z_hat": z_hat * float(series.std[2]) + float(series.mean[2])}

    # Echo-state test at the same points: the largest conditional Lyapunov exponent transverse to
    # the global phase shift (an exact symmetry, whose exponent is 0), and the plain largest.
    drive = sg.make_drive(series.ts, series.u[:, :2].astype(base.dtype))
    conditional = {}
    for name, (i, j) in (("best", best), ("worst", worst)):
        driven = point_surrogate(base, betas[i], betas[j]).replace(drive=drive)
        run = dict(dt=series.delta, n_steps=config.train, transient=config.washout,
                   n_records=10, kind="sparse")
        transverse = sg.conditional_lyapunov_exponents(driven, theta0, k=2, **run)
        plain = sg.conditional_lyapunov_exponents(driven, theta0, k=1,
                                                  modulo_phase_shift=False, **run)
        conditional[name] = {"transverse": sorted(np.asarray(transverse.exponents).tolist(),
                                                  reverse=True),
                             "plain_largest": float(plain.largest)}
    log(f"predictions and conditional exponents at the best and worst points: "
        f"{time.perf_counter() - t0 - sweep_s:.1f} s")
    # Baselines on the same data.
    fits = observer_baselines(make_esn(k_esn, config.esn_size), series, splits)
    baselines = {name: {"nmse_test": float(fit.nmse[2, 0]), "nmse_val": float(fit.nmse[1, 0]),
                        "lambda": float(fit.lam[0])} for name, fit in fits.items()}

    log(f"baselines: {time.perf_counter() - t0 - sweep_s:.1f} s")
    # Autonomous forecasting on a separate series (another initial condition).
    # Same washout, train and validation time spans as the observer, sampled more finely.
    r = config.sample_every // config.forecast_sample_every
    f_splits = Splits(config.washout * r, config.train * r, config.val * r, config.forecast_test)
    f_series = lorenz_series(f_splits, dt=config.dt, sample_every=config.forecast_sample_every,
                             y0=(-3.0, 2.0, 20.0))
    starts = forecast_starts(f_splits, config.forecast_starts, config.forecast_horizon)
    h = config.forecast_horizon
    truth = jnp.stack([f_series.u[s + 1:s + 1 + h] for s in starts])
    norm = jnp.sqrt(jnp.mean(jnp.sum(f_series.u ** 2, -1)))
    vpt = {}
    ngrc_pred, _ = ngrc_forecast(f_series, f_splits, jnp.asarray(starts), h)
    sur_best = point_surrogate(base, betas[best[0]], betas[best[1]])
    sur_pred, _ = surrogate_forecast(sur_best, theta0, f_series, f_splits, jnp.asarray(starts),
                                     h)
    for name, pred in (("ngrc", ngrc_pred), ("surrogate", sur_pred)):
        v = [float(valid_prediction_time(t, p, f_series.delta, norm=norm))
             for t, p in zip(truth, pred)]
        vpt[name] = {"vpt_lyapunov_times": v, "mean": float(np.mean(v)),
                     "std": float(np.std(v))}

    log(f"forecasting: {time.perf_counter() - t0 - sweep_s:.1f} s")
    results = {
        "experiment": "lorenz-observer",
        "config": dataclasses.asdict(config),
        "betas": betas.tolist(),
        "grid_axes": ["beta_self", "beta_cross"],
        "nmse": nmse.tolist(),
        "nmse_x_only": nmse_x.tolist(),
        "nmse_y_only": nmse_y.tolist(),
        "phi_x": phi[..., 0].tolist(),
        "phi_y": phi[..., 1].tolist(),
        "best": {"index": [int(best[0]), int(best[1])], "beta_self": float(betas[best[0]]),
                 "beta_cross": float(betas[best[1]]), "nmse": float(nmse[best])},
        "worst": {"index": [int(worst[0]), int(worst[1])], "beta_self": float(betas[worst[0]]),
                  "beta_cross": float(betas[worst[1]]), "nmse": float(nmse[worst])},
        "corners": {
            name: {"beta_self": float(betas[i]), "beta_cross": float(betas[j]),
                   "nmse": float(nmse[i, j]), "phi_x": float(phi[i, j, 0]),
                   "phi_y": float(phi[i, j, 1])}
            for name, (i, j) in (("low_low", (0, 0)), ("low_high", (0, g - 1)),
                                 ("high_low", (g - 1, 0)), ("high_high", (g - 1, g - 1)))
        },
        "conditional_lyapunov": conditional,
        "baselines": baselines,
        "forecast": {"starts": starts.tolist(), "horizon_samples": h,
                     "lyapunov_time": LYAPUNOV_TIME, "delta": f_series.delta, **vpt},
        "timing_s": {"sweep": sweep_s, "total": time.perf_counter() - t_start},
        "device": {"platform": jax.devices()[0].platform, "kind": jax.devices()[0].device_kind,
                   "count": jax.device_count()},
    }
    results["claim"] = claim_check(results)
    arrays = {"series_raw": xy_true, "ts": np.asarray(series.ts), "test": test, "preds": preds,
              "nmse": nmse, "phi": phi, "betas": betas}
    return results, arrays
