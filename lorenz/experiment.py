"""The Lorenz experiment of the source paper as an inference (docs/lorenz.md).

``run_experiment(config)`` returns one typed ``LorenzResult`` (NumPy arrays); results.json,
report.md and the figures are rendered from it (``lorenz.report``, ``lorenz.figures``).

Stages (``lorenz.stages`` times each):

1. data: R independent Lorenz-63 series (initial conditions on the attractor, 100 time units
   apart), each standardised on its training part;
2. selection: the anchor h and the encoding scale s are chosen by validation NMSE (mean log10
   over the corner points of the tied plane and the replications) unless given;
3. planes: every reading's (beta_self, beta_cross) plane through the batched engine
   (``lorenz.lanes``): P points x R replications x the graph seeds, the coalitions' readouts
   (``readout.fit_ridge``) and both Shapley values; the two-copy distance at the first
   training sample of every point and replication;
4. verdicts per reading (``lorenz.verdict``): paired low- vs high-beta effects over
   replications;
5. predictions and two-copy curves at the best and worst points (chosen on validation), the
   anchor x coupling scan, the baselines, forecasting, and (opt-in) the conditional Lyapunov map.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.baselines import esn_forecast, make_esn, ngrc_forecast, observer_baselines
from lorenz.data import LYAPUNOV_TIME, Splits, attractor_points, lorenz_series
from lorenz.forecast import forecast_starts, surrogate_forecast, valid_prediction_time
from lorenz.lanes import lane_features, lane_statistics
from lorenz.observer import (
    COALITIONS,
    ObserverResult,
    driven,
    evaluate_observer,
    modality_features,
)
from lorenz.readout import fit_ridge, one_blas_thread, predict
from lorenz.stages import Stages
from lorenz.verdict import Verdict, verdict

__all__ = ["LorenzConfig", "LorenzResult", "Plane", "READINGS", "run_experiment",
           "point_surrogate", "imbalance"]

#: The two readings of the paper's "low beta = weak attention" (docs/model.md).
READINGS = ("tied", "fixed")


@dataclasses.dataclass(frozen=True)
class LorenzConfig:
    """Every setting of the experiment (defaults: the main job, about 2 minutes on 2 cores)."""

    grid: int = 8
    beta_min: float = 1e-4
    beta_max: float = 1.0
    seed: int = 0
    seeds: int = 1  # graphs and frequency draws: seed, seed + 1, ...
    replications: int = 3  # independent Lorenz trajectories
    coupling: str = "both"  # "tied" (K = B), "fixed" (K = kappa) or "both"
    kappa: float = 0.3  # fixed-coupling reading: K in every block
    anchor: float | None = None  # h; None: chosen on validation from ``anchors``
    encoding_scale: float | None = None  # s (c_i ~ N(0, s^2)); None: chosen from ``scales``
    anchors: tuple = (4.0, 8.0, 16.0)
    scales: tuple = (0.5, float(np.pi / 4), float(np.pi / 2))
    dt: float = 0.01  # Lorenz RK4 step
    sample_every: int = 4  # samples (and surrogate RK4 steps) every dt * sample_every = 0.04
    washout: int = 250  # samples: 10 time units (checked: two-copy distance at training start)
    train: int = 2000
    val: int = 250
    test: int = 250
    block: int = 125  # samples per block of the batched engine
    omega_spread: float = 1.0
    gain: float = 0.0  # the additive drive g u (an option; anchoring is the input here)
    echo_tolerance: float = 1e-4  # two copies agree: largest wrapped phase distance (rad)
    margin_nmse: float = 0.1  # equivalence margin of (a), decades of NMSE
    margin_balance: float = 0.05  # equivalence margin of (b, c), imbalance
    lyapunov: bool = False  # the conditional Lyapunov map (opt-in)
    lyapunov_steps: int = 500
    scan_anchors: tuple = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    scan_kappas: tuple = (0.0, 0.1, 0.3, 1.0)
    scan_beta: float = 1.0  # B in every block for the anchor x coupling scan
    esn_size: int = 100
    forecast_starts: int = 5
    forecast_sample_every: int = 2  # finer sampling (0.02) for forecasting: NG-RC needs it
    forecast_horizon: int = 500  # samples: 10 time units, about 9 Lyapunov times
    forecast_test: int = 1500  # test samples of the separate forecasting series

    def __post_init__(self):
        for name in ("grid", "replications"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 2):
                raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
        if not (isinstance(self.seeds, int) and self.seeds >= 1):
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        if self.coupling not in (*READINGS, "both"):
            raise ValueError(f"coupling must be 'tied', 'fixed' or 'both', got {self.coupling!r}")
        for name in ("kappa", "anchor", "encoding_scale", "omega_spread"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value >= 0):
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

    def coupling_of(self, reading: str) -> sg.Tied | sg.Fixed:
        """The coupling reading: ``Tied()`` (K = B) for "tied", ``Fixed(kappa)`` for "fixed"."""
        return sg.Tied() if reading == "tied" else sg.Fixed(float(self.kappa))


#: The default coupling reading of a point (K = B).
TIED = sg.Tied()


def point_surrogate(base: sg.Surrogate, beta_self, beta_cross,
                    coupling: sg.Tied | sg.Fixed = TIED) -> sg.Surrogate:
    """``base`` at one point of the plane: B = [[b_s, b_c], [b_c, b_s]] and K of the
    ``coupling`` reading (``Tied()``: K = B; ``Fixed(kappa)``: K = kappa in every block)."""
    B = sg.block_matrix(beta_self, beta_cross, 2, base.dtype)
    return sg.replace(base, B=B, K=coupling.strengths(B))


def _plane_params(base: sg.Surrogate, bs, bc, coupling) -> sg.Params:
    """Params with B, K batched over the points (P, 2, 2)."""
    B = jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, base.dtype))(
        jnp.asarray(bs, base.dtype), jnp.asarray(bc, base.dtype))
    return base.params.replace(B=B, K=jax.vmap(coupling.strengths)(B))


def _model(config: LorenzConfig, seed: int, anchor: float, scale: float):
    """(base surrogate, theta0, theta_b) of one graph seed."""
    k_model, k_theta, k_b = jax.random.split(jax.random.key(seed), 3)
    base = sg.paper_preset(k_model, sizes=(50, 50), omega_spread=config.omega_spread,
                           gain=config.gain, anchor=anchor, encoding_scale=scale)
    n = base.network.n
    return base, sg.initial_phases(k_theta, n), sg.initial_phases(k_b, n)


def imbalance(phi: np.ndarray) -> np.ndarray:
    """|phi_Y - phi_X| / (|phi_X| + |phi_Y|) of phi (..., 2): 0 balanced .. 1 one modality."""
    return np.abs(phi[..., 1] - phi[..., 0]) / np.maximum(np.abs(phi).sum(-1), 1e-12)


@dataclasses.dataclass(frozen=True)
class Plane:
    """One reading's plane over seeds S, replications R and the g x g grid [i, j] =
    (beta_self[i], beta_cross[j]): the observer scores (S, R, g, g, ...) and the two-copy
    distance (S, R, g, g) at the first training sample."""

    reading: str
    coupling: sg.Tied | sg.Fixed
    obs: ObserverResult
    distance: np.ndarray

    def log_val(self) -> np.ndarray:
        """(g, g) mean over seeds and replications of log10 validation NMSE (full readout)."""
        return np.log10(self.obs.val[..., 0]).mean((0, 1))

    @property
    def best(self) -> tuple[int, int]:
        """(i, j) of the lowest mean validation NMSE (chosen on validation, never test)."""
        lv = self.log_val()
        return tuple(int(k) for k in np.unravel_index(np.argmin(lv), lv.shape))

    @property
    def worst(self) -> tuple[int, int]:
        lv = self.log_val()
        return tuple(int(k) for k in np.unravel_index(np.argmax(lv), lv.shape))


def _blocks(g: int):
    q = max(1, g // 4)
    return (slice(0, q), slice(0, q)), (slice(g - q, g), slice(g - q, g))


def plane_verdicts(plane: Plane, config: LorenzConfig) -> dict[str, Verdict]:
    """Paired effects per (seed, replication) of the low- and high-beta corner blocks:
    (a) mean log10 test NMSE low minus high (decades; > 0: lower NMSE at high beta);
    (b, c) attribution imbalance low minus high (> 0: one modality dominates more at low beta,
    attributions more balanced at high beta), under the scale-free value and under -NMSE."""
    g = plane.obs.nmse.shape[2]
    low, high = _blocks(g)
    lt = np.log10(plane.obs.test[..., 0])  # (S, R, g, g)
    s, r = lt.shape[:2]
    a = (lt[..., low[0], low[1]].mean((-1, -2)) - lt[..., high[0], high[1]].mean((-1, -2)))
    out = {"a_nmse_lower_at_high_beta": verdict(a.reshape(s * r), config.margin_nmse)}
    for value in ("log", "neg"):
        imb = imbalance(plane.obs.phi(value))
        d = imb[..., low[0], low[1]].mean((-1, -2)) - imb[..., high[0], high[1]].mean((-1, -2))
        out[f"bc_more_balanced_at_high_beta_{value}"] = verdict(d.reshape(s * r),
                                                                config.margin_balance)
    return out


@dataclasses.dataclass(frozen=True)
class LorenzResult:
    """Everything the experiment measured (NumPy arrays and small records); rendered at the
    edge by ``lorenz.report`` (JSON, markdown) and ``lorenz.figures``."""

    config: LorenzConfig
    anchor: float
    encoding_scale: float
    selection: dict | None  # (h, s) -> mean log10 validation NMSE; None when given
    betas: np.ndarray
    planes: dict  # reading -> Plane
    verdicts: dict  # reading -> {sub-claim: Verdict}
    preds: dict  # "best" / "worst" -> z_hat, two-copy curve (first seed and replication)
    series_raw: np.ndarray  # (T, 3) the first replication in Lorenz units
    ts: np.ndarray
    anchor_scan: dict
    baselines: dict
    forecast: dict
    lyapunov: dict | None  # reading -> (g, g) largest conditional exponent (opt-in)
    timing: dict  # stage -> wall seconds
    cpu_timing: dict  # stage -> process CPU seconds
    device: dict


def _select(config, series, splits, stages, log):
    """(h, s, table): the anchor and encoding scale of lowest mean log10 validation NMSE over
    the tied plane's corners, all replications, first seed; on lanes."""
    if config.anchor is not None and config.encoding_scale is not None:
        return config.anchor, config.encoding_scale, None
    anchors = config.anchors if config.anchor is None else (config.anchor,)
    scales = config.scales if config.encoding_scale is None else (config.encoding_scale,)
    with stages("selection"):
        base, theta0, _ = _model(config, config.seed, 1.0, 1.0)
        unit_c = base.params.encoding_gain  # c_i / s: the same draw at every scale
        lo, hi = config.beta_min, config.beta_max
        corners = [(lo, lo), (lo, hi), (hi, lo), (hi, hi)]
        combos = [(h, s, b) for h in anchors for s in scales for b in corners]
        params = _plane_params(base, [c[2][0] for c in combos], [c[2][1] for c in combos],
                               sg.Tied())
        params = params.replace(
            anchor=jnp.asarray([[c[0]] * base.network.n for c in combos], base.dtype),
            encoding_gain=jnp.stack([c[1] * unit_c for c in combos]))
        obs = _observe(base, params, theta0, series, splits, config, None, ("xy",))[0]
        lv = np.log10(obs.val[..., 0]).mean(0).reshape(len(anchors), len(scales), 4).mean(-1)
    i, j = np.unravel_index(np.argmin(lv), lv.shape)
    table = {"anchors": list(anchors), "scales": list(scales), "log10_val_nmse": lv}
    log(f"selection: h = {anchors[i]:g}, s = {scales[j]:.3g} (mean log10 validation NMSE "
        f"{lv[i, j]:.3f})")
    return float(anchors[i]), float(scales[j]), table


def _observe(base, params, theta0, series, splits, config, theta_b, coalitions=COALITIONS):
    """(ObserverResult (R, P, ...) of ``coalitions``, distance (R, P) or None) of the lanes in
    ``params``."""
    xy = jnp.stack([s.u[:, :2] for s in series])
    z = np.stack([np.asarray(s.u[:, 2:3], np.float64) for s in series])
    ls = lane_statistics(base, params, theta0, xy, z, splits, delta=series[0].delta,
                         block=config.block, theta_b=theta_b)
    return (evaluate_observer(ls.stats, modality_features(base.network), coalitions),
            ls.distance)


def _planes(config, models, series, splits, stages, log, store=None):
    g, betas = config.grid, config.betas
    bs, bc = np.meshgrid(betas, betas, indexing="ij")
    planes = {}
    with stages("planes"):
        for reading in config.readings:
            coupling = config.coupling_of(reading)
            runs = []
            for k, (base, theta0, theta_b) in enumerate(models):
                name = f"{reading}-seed{k}"
                run = store.load(name) if store is not None else None
                if run is None:
                    params = _plane_params(base, bs.ravel(), bc.ravel(), coupling)
                    run = _observe(base, params, theta0, series, splits, config, theta_b)
                    if store is not None:
                        store.save(name, run)
                else:
                    log(f"plane ({reading}, seed {k}): finished before, read from {store.root}")
                runs.append(run)
            obs = ObserverResult(**{k: np.stack([getattr(o, k) for o, _ in runs]).reshape(
                len(models), len(series), g, g, *getattr(runs[0][0], k).shape[2:])
                for k in ("nmse", "lam", "edge")})
            dist = np.stack([d for _, d in runs]).reshape(len(models), len(series), g, g)
            planes[reading] = Plane(reading, coupling, obs, dist)
            log(f"plane ({reading}): {g * g} points x {len(series)} replications x "
                f"{len(models)} seed(s)")
    return planes


def _extremes(config, planes, models, series, splits, stages):
    """z_hat and the two-copy curve at the best and worst points of the first reading (first
    seed, first replication)."""
    base, theta0, theta_b = models[0]
    plane = planes[config.readings[0]]
    betas = config.betas
    preds = {}
    with stages("echo+pred"):
        pts = {"best": plane.best, "worst": plane.worst}
        params = _plane_params(base, [betas[i] for i, _ in pts.values()],
                               [betas[j] for _, j in pts.values()], plane.coupling)
        s0 = series[0]
        total = splits.total
        feats = lane_features(base, params, theta0, s0.u[None, :, :2], delta=s0.delta,
                              n_steps=total - 1)[0]  # (2, T, F)
        fb = lane_features(base, params, theta_b, s0.u[None, :, :2], delta=s0.delta,
                           n_steps=total - 1)[0]
        n = base.network.n
        from lorenz.lanes import wrapped_distance
        from lorenz.readout import normal_equations

        z = np.asarray(s0.u[:, 2:3], np.float64)
        for k, (name, (i, j)) in enumerate(pts.items()):
            fit = fit_ridge(normal_equations(feats[k], z, splits.ids()))
            z_hat = predict(fit, feats[k])[:, 0] * float(s0.std[2]) + float(s0.mean[2])
            d = wrapped_distance(feats[k][:, :n], feats[k][:, n:], fb[k][:, :n], fb[k][:, n:])
            preds[name] = {"index": (i, j), "beta_self": float(betas[i]),
                           "beta_cross": float(betas[j]), "z_hat": z_hat,
                           "nmse": float(fit.nmse[2, 0]), "echo_ts": np.asarray(s0.ts),
                           "echo_distance": d}
    return preds


def _anchor_scan(config, models, series, splits, stages):
    base, theta0, _ = models[0]
    with stages("anchor scan"):
        hs, ks = np.meshgrid(config.scan_anchors, config.scan_kappas, indexing="ij")
        b = config.scan_beta
        params = _plane_params(base, np.full(hs.size, b), np.full(hs.size, b), sg.Tied())
        params = params.replace(
            K=jnp.asarray(ks.ravel(), base.dtype)[:, None, None] * jnp.ones((1, 2, 2)),
            anchor=jnp.asarray(hs.ravel(), base.dtype)[:, None]
            * jnp.ones((1, base.network.n), base.dtype))
        obs, _ = _observe(base, params, theta0, series, splits, config, None, ("xy",))
    shape = hs.shape
    return {"anchors": list(config.scan_anchors), "kappas": list(config.scan_kappas),
            "beta": b, "nmse": np.exp(np.log(obs.test[..., 0]).mean(0)).reshape(shape),
            "nmse_val": np.exp(np.log(obs.val[..., 0]).mean(0)).reshape(shape)}


def _baselines(config, series, splits, stages):
    with stages("baselines"):
        esn = make_esn(jax.random.fold_in(jax.random.key(config.seed), 11), config.esn_size)
        first = observer_baselines(esn, series[0], splits)
        tuned = dataclasses.replace(esn, **{k: first["esn"].params[k]
                                            for k in ("sr", "lr", "input_scaling")})
        rest = [observer_baselines(tuned, s, splits, grid=None) for s in series[1:]]
    out = {}
    for name in first:
        test = np.asarray([float(first[name].nmse[2, 0])]
                          + [float(r[name].nmse[2, 0]) for r in rest])
        out[name] = {"nmse_test": test, "params": first[name].params,
                     "lambda": float(first[name].lam[0])}
    return out


def _forecast(config, models, planes, stages):
    base, theta0, _ = models[0]
    plane = planes[config.readings[0]]
    i, j = plane.best
    betas = config.betas
    with stages("forecasting"):
        r = config.sample_every // config.forecast_sample_every
        f_splits = Splits(config.washout * r, config.train * r, config.val * r,
                          config.forecast_test)
        y0 = attractor_points(config.replications + 1)[-1]  # not one of the observer's series
        f_series = lorenz_series(f_splits, dt=config.dt,
                                 sample_every=config.forecast_sample_every, y0=y0)
        starts = forecast_starts(f_splits, config.forecast_starts, config.forecast_horizon)
        h = config.forecast_horizon
        truth = np.stack([np.asarray(f_series.u[s + 1:s + 1 + h]) for s in starts])
        norm = float(np.sqrt(np.mean(np.sum(np.asarray(f_series.u) ** 2, -1))))
        esn = make_esn(jax.random.fold_in(jax.random.key(config.seed), 11), config.esn_size)
        sur = point_surrogate(base, betas[i], betas[j], plane.coupling)
        preds = {"ngrc": ngrc_forecast(f_series, f_splits, starts, h)[0],
                 "esn": esn_forecast(esn, f_series, f_splits, starts, h)[0],
                 "surrogate": surrogate_forecast(sur, theta0, f_series, f_splits, starts, h)}
    vpt = {name: np.asarray([float(valid_prediction_time(t, p, f_series.delta, norm=norm))
                             for t, p in zip(truth, pred, strict=True)])
           for name, pred in preds.items()}
    return {"starts": starts, "horizon": h, "delta": f_series.delta,
            "lyapunov_time": LYAPUNOV_TIME, "point": (config.readings[0], i, j), "vpt": vpt}


def _lyapunov(config, models, series, stages):
    base, theta0, _ = models[0]
    betas = config.betas
    bs, bc = np.meshgrid(betas, betas, indexing="ij")
    out = {}
    with stages("lyapunov"):
        for reading in config.readings:
            coupling = config.coupling_of(reading)

            def fn(b_s, b_c, coupling=coupling):
                sur = driven(point_surrogate(base, b_s, b_c, coupling), series[0])
                return sg.conditional_lyapunov_exponents(
                    sur, theta0, dt=series[0].delta, n_steps=config.lyapunov_steps,
                    transient=config.washout, k=1, n_records=1, modulo_phase_shift=False,
                    field="sparse").largest

            out[reading] = np.asarray(jax.jit(jax.vmap(fn))(
                jnp.asarray(bs.ravel(), base.dtype), jnp.asarray(bc.ravel(), base.dtype)
            )).reshape(bs.shape)
    return out


class PlaneStore:
    """Finished planes (one reading, one graph seed) kept in ``root`` (``.npz``, written
    atomically, tagged with the configuration and the chosen anchoring), so that a killed run
    resumes without computing them again."""

    def __init__(self, root: Path, config: LorenzConfig, resume: bool):
        self.root = Path(root)
        self.tag = repr(dataclasses.asdict(config))
        self.root.mkdir(parents=True, exist_ok=True)
        if not resume:
            for old in self.root.glob("*.npz"):
                old.unlink()

    def save(self, name: str, run) -> None:
        from surrogate.files import atomic_write_npz

        obs, dist = run
        atomic_write_npz(self.root / f"{name}.npz", tag=np.asarray(self.tag), nmse=obs.nmse,
                         lam=obs.lam, edge=obs.edge, distance=dist)

    def load(self, name: str):
        path = self.root / f"{name}.npz"
        if not path.is_file():
            return None
        with np.load(path) as f:
            if str(f["tag"]) != self.tag:
                raise ValueError(f"{path}: a plane of another configuration; resume with the "
                                 f"options of that run, or pass --force without --resume")
            return ObserverResult(nmse=f["nmse"], lam=f["lam"], edge=f["edge"]), f["distance"]


def run_experiment(config: LorenzConfig, out: Path | None = None, *, resume: bool = False,
                   log=print) -> LorenzResult:
    """Run the experiment (module doc). With ``out``, finished planes are kept in
    ``out/planes`` and, with ``resume``, read back instead of computed (``PlaneStore``).
    NumPy's BLAS runs on one thread meanwhile (``readout.one_blas_thread``)."""
    with one_blas_thread():
        return _run(config, log, None if out is None else (Path(out) / "planes", resume))


def _run(config: LorenzConfig, log, store=None) -> LorenzResult:
    stages = Stages(log)
    splits = config.splits
    with stages("data"):
        starts = attractor_points(config.replications)
        series = [lorenz_series(splits, dt=config.dt, sample_every=config.sample_every, y0=y0)
                  for y0 in starts]
    anchor, scale, selection = _select(config, series, splits, stages, log)
    models = [_model(config, config.seed + k, anchor, scale) for k in range(config.seeds)]
    if store is not None:  # tagged with the anchoring chosen on validation too
        store = PlaneStore(store[0], dataclasses.replace(config, anchor=anchor,
                                                         encoding_scale=scale), store[1])
    planes = _planes(config, models, series, splits, stages, log, store)
    verdicts = {name: plane_verdicts(p, config) for name, p in planes.items()}
    preds = _extremes(config, planes, models, series, splits, stages)
    scan = _anchor_scan(config, models, series, splits, stages)
    baselines = _baselines(config, series, splits, stages)
    forecast = _forecast(config, models, planes, stages)
    lyap = _lyapunov(config, models, series, stages) if config.lyapunov else None
    dev = jax.devices()[0]
    return LorenzResult(
        config=config, anchor=anchor, encoding_scale=scale, selection=selection,
        betas=config.betas, planes=planes, verdicts=verdicts, preds=preds,
        series_raw=np.asarray(series[0].raw), ts=np.asarray(series[0].ts), anchor_scan=scan,
        baselines=baselines, forecast=forecast, lyapunov=lyap, timing=stages.seconds,
        cpu_timing=stages.cpu_seconds,
        device={"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count()})
