"""The Lorenz experiment of the source paper, end to end (docs/lorenz.md).

``run_experiment(config, out)`` sweeps the (beta_self, beta_cross) plane (log grid) under both
coupling readings, tied (K = B) and fixed coupling (K = kappa, only the sharpness B varies),
with the anchored surrogate observer (X <- x, Y <- y, readout -> z). At every point: test NMSE,
the dynamical Shapley values of both modalities and the largest conditional Lyapunov exponent
(the echo-state map). Then the two-copy distance at the best and worst points, a scan of NMSE
against anchor strength and coupling, the baselines on the same data (reservoirpy ESN and
NG-RC), and closed-loop forecasting (surrogate at the best point vs NG-RC and the ESN). With
``seeds > 1`` the planes are swept again on other graphs and frequency draws and every number
gets its spread. Returns every number as a JSON-ready dict; figures and the report are written
by ``lorenz.figures`` and ``lorenz.report``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.baselines import esn_forecast, make_esn, ngrc_forecast, observer_baselines
from lorenz.data import LYAPUNOV_TIME, Splits, lorenz_series
from lorenz.forecast import forecast_starts, surrogate_forecast, valid_prediction_time
from lorenz.observer import driven, observer_point, surrogate_features
from lorenz.readout import fit_ridge, normal_equations, predict, stats_dtype
from lorenz.report import claim_check

__all__ = ["LorenzConfig", "READINGS", "run_experiment", "point_surrogate"]

#: The two readings of the paper's "low beta = weak attention" (docs/model.md).
READINGS = ("tied", "fixed")


@dataclasses.dataclass(frozen=True)
class LorenzConfig:
    """Every setting of the experiment (defaults: the main job, about 1 minute on 2 CPU cores).

    The anchor strength and the data lengths were chosen by the validation scan of
    docs/lorenz.md (``benchmarks/lorenz_scan.py``; validation NMSE only).
    """

    grid: int = 8
    beta_min: float = 1e-4
    beta_max: float = 1.0
    seed: int = 0
    seeds: int = 1  # graphs and frequency draws: seed, seed + 1, ...
    coupling: str = "both"  # "tied" (K = B), "fixed" (K = kappa) or "both"
    kappa: float = 0.3  # fixed-coupling reading: K in every block
    anchor: float = 4.0  # h of every oscillator
    encoding_scale: float = float(np.pi / 2)  # c_i ~ N(0, encoding_scale^2)
    dt: float = 0.01  # Lorenz RK4 step
    sample_every: int = 4  # samples (and surrogate RK4 steps) every dt * sample_every = 0.04
    washout: int = 250  # samples: 10 time units, about 9 Lyapunov times
    train: int = 2000
    val: int = 125
    test: int = 250
    block: int = 50
    omega_spread: float = 1.0
    gain: float = 0.0  # the additive drive g u (an option; anchoring is the input here)
    lyapunov_steps: int = 500  # samples of the conditional-exponent estimate per point
    scan_anchors: tuple = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
    scan_kappas: tuple = (0.0, 0.1, 0.3, 1.0)
    scan_beta: float = 1.0  # B in every block for the anchor x coupling scan
    esn_size: int = 100
    forecast_starts: int = 5
    forecast_sample_every: int = 2  # finer sampling (0.02) for forecasting: NG-RC needs it
    forecast_horizon: int = 500  # samples: 10 time units, about 9 Lyapunov times
    forecast_test: int = 1500  # test samples of the separate forecasting series
    chunk_size: int | None = 64  # points per sweep chunk (progress and resume granularity)

    def __post_init__(self):
        if not (isinstance(self.grid, int) and self.grid >= 2):
            raise ValueError(f"grid must be an integer >= 2, got {self.grid!r}")
        if not (isinstance(self.seeds, int) and self.seeds >= 1):
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        if self.coupling not in (*READINGS, "both"):
            raise ValueError(f"coupling must be 'tied', 'fixed' or 'both', got {self.coupling!r}")
        for name in ("kappa", "anchor", "encoding_scale", "omega_spread"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
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

    @property
    def readings(self) -> tuple[str, ...]:
        return READINGS if self.coupling == "both" else (self.coupling,)

    def kappa_of(self, reading: str) -> float | None:
        """K of a reading: None (K = B) for "tied", ``kappa`` for "fixed"."""
        return None if reading == "tied" else self.kappa


def point_surrogate(base: sg.Surrogate, beta_self, beta_cross, kappa=None) -> sg.Surrogate:
    """``base`` at one point of the plane: B = [[b_s, b_c], [b_c, b_s]] and K = B (tied,
    ``kappa=None``) or K = kappa in every block (fixed coupling)."""
    B = sg.block_matrix(beta_self, beta_cross, 2, base.dtype)
    K = B if kappa is None else jnp.full_like(B, kappa)
    return sg.replace(base, B=B, K=K)


def _model(config: LorenzConfig, seed: int):
    """(base surrogate, theta0, ESN key) of one seed."""
    k_model, k_theta, k_esn = jax.random.split(jax.random.key(seed), 3)
    base = sg.paper_preset(k_model, sizes=(50, 50), omega_spread=config.omega_spread,
                           gain=config.gain, anchor=config.anchor,
                           encoding_scale=config.encoding_scale)
    return base, sg.initial_phases(k_theta, base.network.n), k_esn


def _plane(config, base, theta0, series, splits, reading, store, resume, progress, log):
    """Sweep one reading's plane: arrays (g, g) of nmse, nmse_x/y, phi (g, g, 2), lyapunov."""
    kappa = config.kappa_of(reading)
    g, betas = config.grid, config.betas
    bs, bc = np.meshgrid(betas, betas, indexing="ij")  # [i, j]: beta_self[i], beta_cross[j]
    points = {"beta_self": jnp.asarray(bs.ravel(), base.dtype),
              "beta_cross": jnp.asarray(bc.ravel(), base.dtype)}
    lyap = dict(dt=series.delta, n_steps=config.lyapunov_steps, transient=config.washout,
                k=1, n_records=1, modulo_phase_shift=False, field="sparse")

    def fn(point):
        sur = point_surrogate(base, point["beta_self"], point["beta_cross"], kappa)
        res = observer_point(sur, theta0, series, splits, block=config.block)
        exps = sg.conditional_lyapunov_exponents(driven(sur, series), theta0, **lyap)
        return {**dataclasses.asdict(res), "lyapunov": exps.largest}

    log(f"sweep ({reading} coupling): {g * g} points of the (beta_self, beta_cross) plane")
    cfg = {**dataclasses.asdict(config), "reading": reading}
    swept = sg.sweep(fn, points, chunk_size=config.chunk_size, store=store, resume=resume,
                     progress=progress, config=cfg)
    out = {k: np.asarray(swept[k]).reshape(g, g) for k in ("nmse", "nmse_x", "nmse_y",
                                                           "lyapunov")}
    out["phi"] = np.asarray(swept["phi"]).reshape(g, g, 2)
    return out


def _point(betas, nmse, phi, i, j, **extra):
    return {"beta_self": float(betas[i]), "beta_cross": float(betas[j]),
            "nmse": float(nmse[i, j]), "phi_x": float(phi[i, j, 0]),
            "phi_y": float(phi[i, j, 1]), **extra}


def _reading_results(betas, arr, reading, kappa):
    nmse, phi, lyap = arr["nmse"], arr["phi"], arr["lyapunov"]
    g = nmse.shape[0]
    best = np.unravel_index(np.nanargmin(nmse), nmse.shape)
    worst = np.unravel_index(np.nanargmax(nmse), nmse.shape)
    good = nmse < 0.1
    res = {
        "coupling": reading, "kappa": kappa,
        "nmse": nmse.tolist(), "nmse_x_only": arr["nmse_x"].tolist(),
        "nmse_y_only": arr["nmse_y"].tolist(), "phi_x": phi[..., 0].tolist(),
        "phi_y": phi[..., 1].tolist(), "lyapunov": lyap.tolist(),
        "best": _point(betas, nmse, phi, *best, index=[int(best[0]), int(best[1])]),
        "worst": _point(betas, nmse, phi, *worst, index=[int(worst[0]), int(worst[1])]),
        "corners": {name: _point(betas, nmse, phi, i, j)
                    for name, (i, j) in (("low_low", (0, 0)), ("low_high", (0, g - 1)),
                                         ("high_low", (g - 1, 0)),
                                         ("high_high", (g - 1, g - 1)))},
        "lyapunov_range": [float(np.nanmin(lyap)), float(np.nanmax(lyap))],
        "lyapunov_max_where_nmse_below_0.1": float(np.nanmax(lyap[good])) if good.any()
        else None,
    }
    res["claim"] = claim_check(res)
    return res


def _spread(stack: np.ndarray) -> dict:
    """Mean, sd, min and max over seeds (axis 0) of a (S, g, g) stack, as nested lists."""
    return {"mean": stack.mean(0).tolist(), "sd": stack.std(0).tolist(),
            "min": stack.min(0).tolist(), "max": stack.max(0).tolist()}


def _seed_summary(per_seed: list[dict]) -> dict:
    """Spread over seeds of the plane numbers and of the claim check."""
    nmse = np.stack([np.asarray(r["nmse"]) for r in per_seed])
    phi_x = np.stack([np.asarray(r["phi_x"]) for r in per_seed])
    phi_y = np.stack([np.asarray(r["phi_y"]) for r in per_seed])
    claims = [r["claim"] for r in per_seed]
    keys = ("nmse_low", "nmse_high", "imbalance_low", "imbalance_high", "min_nmse")
    return {
        "n_seeds": len(per_seed),
        "nmse": _spread(nmse), "phi_x": _spread(phi_x), "phi_y": _spread(phi_y),
        "best_nmse": [r["best"]["nmse"] for r in per_seed],
        "claim_holds": [bool(c["claim_holds"]) for c in claims],
        "claim_holds_fraction": float(np.mean([c["claim_holds"] for c in claims])),
        "claim_numbers": {k: {"mean": float(np.mean([c[k] for c in claims])),
                              "min": float(np.min([c[k] for c in claims])),
                              "max": float(np.max([c[k] for c in claims]))} for k in keys},
    }


def run_experiment(config: LorenzConfig, out: Path | None = None, *, resume: bool = False,
                   progress: bool = True, log=print) -> tuple[dict, dict]:
    """Run the experiment; returns (results, arrays) (results is JSON-ready).

    ``out``: where the sweeps keep their finished chunks (``out / "sweep" / ...``), so that an
    interrupted run continues with ``resume=True``.
    """
    t_start = time.perf_counter()
    splits = config.splits
    series = lorenz_series(splits, dt=config.dt, sample_every=config.sample_every)
    betas = config.betas
    stores = None if out is None else Path(out) / "sweep"
    t0 = time.perf_counter()
    planes = {reading: [] for reading in config.readings}
    for s in range(config.seeds):
        model = _model(config, config.seed + s)
        if s == 0:
            base, theta0, k_esn = model  # the first seed's model for everything below
        for reading in config.readings:
            store = None if stores is None else stores / f"{reading}-seed{config.seed + s}"
            arr = _plane(config, *model[:2], series, splits, reading, store, resume,
                         progress, log)
            planes[reading].append(
                (arr, _reading_results(betas, arr, reading, config.kappa_of(reading))))
    sweep_s = time.perf_counter() - t0
    log(f"sweeps done in {sweep_s:.1f} s")

    readings = {}
    for reading, runs in planes.items():
        res = dict(runs[0][1])
        if config.seeds > 1:
            res["seeds"] = _seed_summary([r for _, r in runs])
        readings[reading] = res

    # Predictions and the two-copy distance at the best and worst points (first seed).
    xy_true = np.asarray(series.raw)
    test = splits.slices()["test"]
    features_at = jax.jit(surrogate_features)
    readout = jax.jit(lambda f, z, ids: fit_ridge(normal_equations(f, z, ids)))
    theta_b = sg.initial_phases(jax.random.fold_in(jax.random.key(config.seed), 7),
                                base.network.n)
    preds = {}
    for reading, res in readings.items():
        kappa = res["kappa"]
        for name in ("best", "worst"):
            p = res[name]
            sur = point_surrogate(base, p["beta_self"], p["beta_cross"], kappa)
            echo = sg.echo_distance(driven(sur, series), theta0, theta_b, dt=series.delta,
                                    n_steps=splits.total - 1, field="sparse")
            d = np.asarray(echo.distance)
            p["echo"] = {"distance_after_washout": float(d[splits.washout]),
                         "distance_end": float(d[-1]), "distance_start": float(d[0]),
                         "below_1e-6_after_washout": bool(np.all(d[splits.washout:] < 1e-6))}
            p["lyapunov"] = float(np.asarray(res["lyapunov"])[tuple(p["index"])])
            if reading == config.readings[0]:
                f = features_at(sur, theta0, series).astype(stats_dtype())
                fit = jax.block_until_ready(  # one LAPACK program at a time
                    readout(f, series.u[:, 2:3].astype(f.dtype), jnp.asarray(splits.ids())))
                z_hat = np.asarray(predict(fit, f))[:, 0]
                preds[name] = {**p, "z_hat": z_hat * float(series.std[2]) + float(series.mean[2]),
                               "echo_ts": np.asarray(echo.ts), "echo_distance": d}
    log(f"predictions and two-copy distances: {time.perf_counter() - t0 - sweep_s:.1f} s")

    # NMSE against anchor strength and coupling (B = scan_beta in every block, K fixed).
    hs, ks = np.meshgrid(config.scan_anchors, config.scan_kappas, indexing="ij")

    def scan_fn(point):
        sur = point_surrogate(base, config.scan_beta, config.scan_beta, point["kappa"])
        sur = sg.replace(sur, anchor=jnp.full_like(sur.params.omega, point["anchor"]))
        res = observer_point(sur, theta0, series, splits, block=config.block)
        return {"nmse": res.nmse, "nmse_val": res.nmse_val, "phi": res.phi}

    scanned = sg.sweep(scan_fn, {"anchor": jnp.asarray(hs.ravel(), base.dtype),
                                 "kappa": jnp.asarray(ks.ravel(), base.dtype)},
                       chunk_size=config.chunk_size, progress=progress)
    shape = hs.shape
    anchor_scan = {"anchors": list(config.scan_anchors), "kappas": list(config.scan_kappas),
                   "beta": config.scan_beta,
                   "nmse": np.asarray(scanned["nmse"]).reshape(shape).tolist(),
                   "nmse_val": np.asarray(scanned["nmse_val"]).reshape(shape).tolist(),
                   "phi_x": np.asarray(scanned["phi"])[:, 0].reshape(shape).tolist(),
                   "phi_y": np.asarray(scanned["phi"])[:, 1].reshape(shape).tolist()}
    log(f"anchor x coupling scan: {time.perf_counter() - t0 - sweep_s:.1f} s")

    # Baselines on the same data.
    esn = make_esn(k_esn, config.esn_size)
    fits = observer_baselines(esn, series, splits)
    baselines = {name: {"nmse_test": float(b.nmse[2, 0]), "nmse_val": float(b.nmse[1, 0]),
                        "lambda": float(b.lam[0]), "params": b.params, "seconds": b.seconds}
                 for name, b in fits.items()}
    log(f"baselines: {time.perf_counter() - t0 - sweep_s:.1f} s")

    # Autonomous forecasting on a separate series (another initial condition), same time spans
    # as the observer, sampled more finely.
    r = config.sample_every // config.forecast_sample_every
    f_splits = Splits(config.washout * r, config.train * r, config.val * r, config.forecast_test)
    f_series = lorenz_series(f_splits, dt=config.dt, sample_every=config.forecast_sample_every,
                             y0=(-3.0, 2.0, 20.0))
    starts = forecast_starts(f_splits, config.forecast_starts, config.forecast_horizon)
    h = config.forecast_horizon
    truth = np.stack([np.asarray(f_series.u[s + 1:s + 1 + h]) for s in starts])
    norm = jnp.sqrt(jnp.mean(jnp.sum(f_series.u ** 2, -1)))
    primary = readings[config.readings[0]]
    sur_best = point_surrogate(base, primary["best"]["beta_self"], primary["best"]["beta_cross"],
                               primary["kappa"])
    forecasts = {
        "ngrc": ngrc_forecast(f_series, f_splits, starts, h)[0],
        "esn": esn_forecast(esn, f_series, f_splits, starts, h)[0],
        "surrogate": np.asarray(surrogate_forecast(sur_best, theta0, f_series, f_splits,
                                                   jnp.asarray(starts), h)[0]),
    }
    vpt = {}
    for name, pred in forecasts.items():
        v = [float(valid_prediction_time(jnp.asarray(t), jnp.asarray(p), f_series.delta,
                                         norm=norm)) for t, p in zip(truth, pred)]
        vpt[name] = {"vpt_lyapunov_times": v, "mean": float(np.mean(v)),
                     "std": float(np.std(v))}
    log(f"forecasting: {time.perf_counter() - t0 - sweep_s:.1f} s")

    best_reading = min(readings, key=lambda k: readings[k]["best"]["nmse"])
    results = {
        "experiment": "lorenz-observer",
        "config": dataclasses.asdict(config),
        "betas": betas.tolist(),
        "grid_axes": ["beta_self", "beta_cross"],
        "readings": readings,
        "best": {"coupling": best_reading, **readings[best_reading]["best"]},
        "anchor_scan": anchor_scan,
        "baselines": baselines,
        "forecast": {"starts": starts.tolist(), "horizon_samples": h,
                     "lyapunov_time": LYAPUNOV_TIME, "delta": f_series.delta,
                     "surrogate_point": {"coupling": config.readings[0],
                                         "beta_self": primary["best"]["beta_self"],
                                         "beta_cross": primary["best"]["beta_cross"]}, **vpt},
        "timing_s": {"sweep": sweep_s, "total": time.perf_counter() - t_start},
        "device": {"platform": jax.devices()[0].platform, "kind": jax.devices()[0].device_kind,
                   "count": jax.device_count()},
    }
    arrays = {"series_raw": xy_true, "ts": np.asarray(series.ts), "test": test, "preds": preds,
              "betas": betas, "planes": {k: v[0][0] for k, v in planes.items()},
              "anchor_scan": anchor_scan}
    return results, arrays
