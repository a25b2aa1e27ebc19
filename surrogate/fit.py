"""Fitting the surrogate to attention bundles: layer depth <-> surrogate time (DESIGN.md 1-3).

Target. A bundle holds ``block_mass`` (L, H, M_b, M_b): per layer and head, the mean attention mass
that the query rows of modality a put on the keys of modality b. ``bundle_target`` keeps the
modalities that become surrogate populations (by default ``("audio", "vision")`` -> populations
0 and 1; text and special tokens have no oscillators), averages over the heads (all, or a head
group given by indices) and renormalises each row over the kept modalities:

    P*[l, a, b] = m[l, a, b] / sum_{b' kept} m[l, a, b'],        (L, M, M)

the share of a's attention that goes to b among the modelled modalities. This is what the
surrogate's ``modality_attention`` P(t) measures (row-normalised attention shares). Rows of a
modality without query rows, or with no mass on the kept modalities, get weight 0.

Time map. Layer l (0..L-1) sits at surrogate time t_l in (0, T], T = ``horizon``:
``time_map="fixed"``: t_l = T (l + 1) / L; ``"learned"``: t_l = T cumsum(softplus(z))_l /
sum(softplus(z)), a monotone map with L free logits z (the horizon is fixed because a global
time scale trades off exactly against the scale of K, omega and the gains).

Model. Populations of the sizes given, or proportional to the bundle's token counts
(``sizes=None``: ``n_total`` oscillators in all); Watts-Strogatz graphs and cross links from the
fit key; omega_i = s xi_i with xi_i ~ N(0, 1) fixed and s the fitted ``omega_spread``; a constant
unit drive u_m(t) = 1 per modality, so the fitted ``gain`` (M,) is a per-modality frequency
offset (only differences between gains are observable: a common rotation changes no phase
difference). P(t) is averaged over ``n_initial`` uniform random initial phase vectors, computed
on the fixed RK4 grid of step ``dt`` and linearly interpolated at t_l (differentiable in t_l).

Fit. Positive parameters (B, K, omega spread) are optimised as logarithms, the time map as
logits; the loss is the row-wise KL(P* || P) (or squared error) averaged over weighted rows
and layers; ``restarts`` initialisations from explicit keys run side by side (vmap) under optax
Adam, each stopping early once its best loss has not improved by a relative ``tol`` for
``patience`` steps. The report holds loss curves, per-layer residuals, parameter values with
their spread over the converged restarts, and the Hessian of the loss (in the log coordinates)
at the best fit: eigen-directions with eigenvalue below ``sloppy_ratio`` times the largest are
"not pinned down by the data".
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from mllm_probe.bundle import DEFAULT_MODALITIES, Bundle, load_bundle, make_bundle
from surrogate.integrate import simulate
from surrogate.metrics import modality_attention
from surrogate.model import Params, Surrogate, initial_phases, make_drive
from surrogate.network import Network, build_network

__all__ = [
    "FitConfig",
    "FitModel",
    "FitParams",
    "FitResult",
    "RawParams",
    "Target",
    "bundle_target",
    "combine_targets",
    "constrain",
    "divergence",
    "fit",
    "fit_report_markdown",
    "layer_times",
    "load_target",
    "make_model",
    "model_attention",
    "model_from_json",
    "sizes_from_counts",
    "synthetic_bundle",
    "unconstrain",
]

TIME_MAPS = ("fixed", "learned")
#: Fitted surrogates up to this many oscillators use the masked dense evaluation.
DENSE_UP_TO = 128
DIVERGENCES = ("kl", "mse")
_EPS = 1e-12


# ----------------------------------------------------------------------------- target


@struct.dataclass
class Target:
    """Fit target: ``mass`` (L, M, M) row shares P*[l, a, b], ``weight`` (L, M) row weights (0/1),
    static ``modalities`` (M names), ``token_counts`` (M,) tokens per modality, ``sources``."""

    mass: jax.Array
    weight: jax.Array
    modalities: tuple[str, ...] = struct.field(pytree_node=False)
    token_counts: tuple[float, ...] = struct.field(pytree_node=False)
    sources: tuple[str, ...] = struct.field(pytree_node=False, default=())

    @property
    def num_layers(self) -> int:
        return int(self.mass.shape[0])


def bundle_target(
    bundle: Bundle,
    modalities: Sequence[str] = ("audio", "vision"),
    heads: Sequence[int] | None = None,
    source: str = "<in memory>",
) -> Target:
    """The fit target of one bundle (module docstring); ``heads``: indices of a head group
    (default all heads). Raises ValueError naming ``source`` and the field on a mismatch."""
    modalities = tuple(modalities)
    if len(modalities) < 2 or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be >= 2 distinct names, got {list(modalities)}")
    missing = [m for m in modalities if m not in bundle.modalities]
    if missing:
        raise ValueError(f"{source}: field 'modalities': {missing} not among the bundle's "
                         f"modalities {list(bundle.modalities)}")
    cols = [bundle.modalities.index(m) for m in modalities]
    mass = np.asarray(bundle.block_mass, np.float64)
    if heads is not None:
        heads = [int(h) for h in heads]
        bad = [h for h in heads if not 0 <= h < bundle.num_heads]
        if not heads or bad:
            raise ValueError(f"{source}: heads {heads} must be non-empty indices in "
                             f"[0, {bundle.num_heads})")
        mass = mass[:, heads]
    sub = mass.mean(1)[:, cols][:, :, cols]  # (L, M, M)
    total = sub.sum(-1)
    counts = bundle.query_counts()[cols]
    weight = (total > 1e-6) & (counts > 0)[None, :]
    if not weight.any():
        raise ValueError(f"{source}: field 'query_index': no query row of {list(modalities)} puts "
                         f"attention on these modalities (query set {dict(bundle.query_set)}); "
                         f"capture with a query set that includes them, e.g. --query all")
    share = np.divide(sub, total[..., None], out=np.zeros_like(sub), where=weight[..., None])
    tokens = np.bincount(bundle.token_modality, minlength=len(bundle.modalities))[cols]
    dtype = jnp.result_type(float)
    return Target(mass=jnp.asarray(share, dtype), weight=jnp.asarray(weight, dtype),
                  modalities=modalities, token_counts=tuple(float(t) for t in tokens),
                  sources=(source,))


def load_target(path, modalities=("audio", "vision"), heads=None) -> Target:
    """``bundle_target`` of a bundle file (read through ``mllm_probe.bundle``, no torch)."""
    path = os.fspath(path)
    return bundle_target(load_bundle(path), modalities, heads, source=path)


def combine_targets(targets: Sequence[Target]) -> Target:
    """One target from several bundles with the same layers and modalities: rows averaged with
    equal weight over the bundles in which they are present."""
    targets = list(targets)
    if not targets:
        raise ValueError("no targets to combine")
    first = targets[0]
    for t in targets[1:]:
        if t.mass.shape != first.mass.shape or t.modalities != first.modalities:
            raise ValueError(f"{t.sources[0]}: field 'block_mass': {t.num_layers} layers of "
                             f"{list(t.modalities)} do not match {first.sources[0]} "
                             f"({first.num_layers} layers of {list(first.modalities)})")
    w = np.stack([np.asarray(t.weight) for t in targets])  # (B, L, M)
    m = np.stack([np.asarray(t.mass) for t in targets])
    wsum = w.sum(0)
    mass = np.divide((w[..., None] * m).sum(0), wsum[..., None], out=np.zeros_like(m[0]),
                     where=wsum[..., None] > 0)
    counts = np.mean([t.token_counts for t in targets], 0)
    dtype = jnp.result_type(float)
    return Target(mass=jnp.asarray(mass, dtype), weight=jnp.asarray(wsum > 0, dtype),
                  modalities=first.modalities, token_counts=tuple(float(c) for c in counts),
                  sources=tuple(s for t in targets for s in t.sources))


def sizes_from_counts(counts: Sequence[float], n_total: int, min_size: int) -> tuple[int, ...]:
    """Population sizes proportional to token ``counts``, summing to ``n_total``, each
    >= ``min_size`` (largest-remainder rounding)."""
    counts = np.asarray(counts, float)
    m = counts.size
    if n_total < m * min_size:
        raise ValueError(f"n_total={n_total} is below {m} populations x min_size={min_size}")
    if counts.sum() <= 0:
        counts = np.ones(m)
    free = n_total - m * min_size
    share = free * counts / counts.sum()
    base = np.floor(share).astype(int)
    order = np.argsort(-(share - base))
    base[order[: free - base.sum()]] += 1
    return tuple(int(b + min_size) for b in base)


# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of a fit (all static). Times in surrogate units, frequencies in rad per unit."""

    modalities: tuple[str, ...] = ("audio", "vision")
    heads: tuple[int, ...] | None = None
    sizes: tuple[int, ...] | None = None  # None: from the bundle's token counts
    n_total: int = 48
    k: int = 6
    p: float = 0.01
    cross_density: float = 0.15
    normalisation: str = "softmax"
    horizon: float = 4.0
    dt: float = 0.05
    time_map: str = "fixed"
    n_initial: int = 4
    divergence: str = "kl"
    restarts: int = 4
    steps: int = 300
    learning_rate: float = 0.05
    patience: int = 40
    tol: float = 1e-4
    couplings: str = "free"  # "free": B and K fitted; "tied": K = B (the paper preset)
    init_B: float = 1.0
    init_K: float = 1.0
    init_spread: float = 0.5
    init_noise: float = 0.5
    fit_spread: bool = True
    fit_gain: bool = True
    polish_steps: int = 15
    sloppy_ratio: float = 1e-3
    converged_within: float = 1e-5

    def __post_init__(self):
        def positive(name):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"FitConfig.{name} must be positive, got {v!r}")

        for name in ("horizon", "dt", "learning_rate", "init_B", "init_K", "init_spread",
                     "sloppy_ratio", "tol"):
            positive(name)
        if not isinstance(self.polish_steps, (int, np.integer)) or self.polish_steps < 0:
            raise ValueError(f"FitConfig.polish_steps must be an integer >= 0, "
                             f"got {self.polish_steps!r}")
        for name in ("n_total", "n_initial", "restarts", "steps", "patience"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"FitConfig.{name} must be a positive integer, got {v!r}")
        if self.couplings not in ("free", "tied"):
            raise ValueError(f"FitConfig.couplings must be 'free' or 'tied', "
                             f"got {self.couplings!r}")
        if self.time_map not in TIME_MAPS:
            raise ValueError(f"FitConfig.time_map must be one of {TIME_MAPS}, "
                             f"got {self.time_map!r}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"FitConfig.divergence must be one of {DIVERGENCES}, "
                             f"got {self.divergence!r}")
        steps = self.horizon / self.dt
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 2:
            raise ValueError(f"FitConfig.horizon={self.horizon} must be a multiple (>= 2) of "
                             f"dt={self.dt}")
        if self.sizes is not None and len(self.sizes) != len(self.modalities):
            raise ValueError(f"FitConfig.sizes={self.sizes} must give one size per modality "
                             f"{self.modalities}")
        if not 0 <= self.init_noise:
            raise ValueError(f"FitConfig.init_noise must be >= 0, got {self.init_noise!r}")

    @property
    def n_steps(self) -> int:
        return round(self.horizon / self.dt)

    def replace(self, **kw) -> FitConfig:
        return dataclasses.replace(self, **kw)


# ----------------------------------------------------------------------------- parameters


@struct.dataclass
class FitParams:
    """Fitted parameters (constrained): ``B``, ``K`` (M, M) > 0, ``omega_spread`` () > 0 rad per
    unit time, ``gain`` (M,) per-modality input gains of the unit drive, ``times`` (L,) layer
    times t_l in (0, horizon]."""

    B: jax.Array
    K: jax.Array
    omega_spread: jax.Array
    gain: jax.Array
    times: jax.Array


@struct.dataclass
class RawParams:
    """Unconstrained coordinates: ``log_B``, ``log_K`` (M, M), ``log_spread`` (), ``gain`` (M,),
    ``time_logits`` (L,) for the learned time map, (0,) for the fixed one."""

    log_B: jax.Array
    log_K: jax.Array
    log_spread: jax.Array
    gain: jax.Array
    time_logits: jax.Array


def layer_times(time_logits: jax.Array, num_layers: int, horizon: float, dtype=None) -> jax.Array:
    """t_l (L,): fixed spacing T (l + 1) / L when ``time_logits`` is empty, else the monotone map
    T cumsum(softplus(z)) / sum(softplus(z))."""
    if time_logits.shape[0] == 0:
        return horizon * jnp.arange(1, num_layers + 1, dtype=dtype) / num_layers
    w = jax.nn.softplus(time_logits)
    return horizon * jnp.cumsum(w) / jnp.sum(w)


def constrain(raw: RawParams, num_layers: int, horizon: float, tied: bool = False) -> FitParams:
    """RawParams -> FitParams (exp of the logs, the time map); ``tied``: K = B (paper preset)."""
    B = jnp.exp(raw.log_B)
    return FitParams(B=B, K=B if tied else jnp.exp(raw.log_K),
                     omega_spread=jnp.exp(raw.log_spread), gain=raw.gain,
                     times=layer_times(raw.time_logits, num_layers, horizon, raw.log_B.dtype))


def unconstrain(params: FitParams, time_map: str = "fixed") -> RawParams:
    """FitParams -> RawParams; the learned time map starts from the given ``times``."""
    if time_map == "fixed":
        logits = jnp.zeros((0,), params.B.dtype)
    else:
        gaps = jnp.diff(jnp.concatenate([jnp.zeros((1,), params.times.dtype), params.times]))
        logits = jnp.log(jnp.expm1(jnp.maximum(gaps / gaps.mean(), 1e-6)))  # softplus^-1
    return RawParams(log_B=jnp.log(params.B), log_K=jnp.log(params.K),
                     log_spread=jnp.log(params.omega_spread), gain=params.gain,
                     time_logits=logits)


# ----------------------------------------------------------------------------- model


@struct.dataclass
class FitModel:
    """Fixed part of the fitted surrogate: graph, unit frequencies ``xi`` (N,), initial phases
    ``theta0`` (E, N), constant unit drive; static ``normalisation``, ``dt``, ``n_steps``."""

    network: Network
    xi: jax.Array
    theta0: jax.Array
    normalisation: str = struct.field(pytree_node=False)
    dt: float = struct.field(pytree_node=False)
    n_steps: int = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False, default="sparse")

    def surrogate(self, params: FitParams) -> Surrogate:
        """The surrogate at ``params`` (omega = spread xi, gain per oscillator, unit drive)."""
        m = self.network.n_populations
        dtype = self.xi.dtype
        horizon = self.dt * self.n_steps
        drive = make_drive(jnp.asarray([0.0, horizon], dtype), jnp.ones((2, m), dtype))
        p = Params(omega=params.omega_spread * self.xi,
                   gain=jnp.asarray(params.gain, dtype)[self.network.population],
                   B=params.B, K=params.K)
        return Surrogate(network=self.network, params=p, drive=drive,
                         normalisation=self.normalisation)


def make_model(key: jax.Array, sizes: Sequence[int], config: FitConfig, dtype=None) -> FitModel:
    """Graph, frequencies and ``config.n_initial`` initial phase vectors from ``key``."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    sizes = tuple(int(s) for s in sizes)
    if min(sizes) <= config.k:
        raise ValueError(f"population sizes {sizes} must exceed the graph degree k={config.k}")
    k_net, k_xi, k_theta = jax.random.split(key, 3)
    net = build_network(k_net, sizes, config.k, config.p, config.cross_density)
    # The evaluation kind follows from the size alone (dense up to DENSE_UP_TO oscillators) and
    # the static density is set to a canonical value, neighbour lists padded to a multiple of 8
    # slots (pads point at i itself, masked): fits of graphs of the same sizes share compiled
    # steps.
    kind = "dense" if net.n <= DENSE_UP_TO else "sparse"
    d = net.neighbours.shape[1]
    pad = -d % 8
    if pad:
        own = jnp.broadcast_to(jnp.arange(net.n)[:, None], (net.n, pad))
        net = dataclasses.replace(
            net, neighbours=jnp.concatenate([net.neighbours, own.astype(net.neighbours.dtype)], 1),
            neighbour_mask=jnp.concatenate(
                [net.neighbour_mask, jnp.zeros((net.n, pad), net.neighbour_mask.dtype)], 1))
    net = dataclasses.replace(net, density=0.0 if kind == "sparse" else 1.0)
    xi = jax.random.normal(k_xi, (net.n,), dtype)
    theta0 = jax.vmap(lambda k: initial_phases(k, net.n, dtype))(
        jax.random.split(k_theta, config.n_initial))
    return FitModel(network=net, xi=xi, theta0=theta0, normalisation=config.normalisation,
                    dt=float(config.dt), n_steps=config.n_steps, kind=kind)


def model_attention(model: FitModel, params: FitParams) -> jax.Array:
    """Surrogate modality attention P(t_l) (L, M, M), mean over the initial phases."""
    sur = model.surrogate(params)

    def one(theta0):
        ys = simulate(sur, theta0, dt=model.dt, n_steps=model.n_steps, kind=model.kind).ys
        return jax.vmap(modality_attention, (0, None))(ys, sur)

    grid = jax.vmap(one)(model.theta0).mean(0)  # (S + 1, M, M)
    pos = jnp.clip(params.times / model.dt, 0.0, model.n_steps)
    i0 = jnp.clip(jnp.floor(pos), 0, model.n_steps - 1).astype(jnp.int32)
    frac = (pos - i0)[:, None, None]
    return (1 - frac) * grid[i0] + frac * grid[i0 + 1]


_model_attention_jit = jax.jit(model_attention)


def divergence(pred: jax.Array, target: Target, kind: str = "kl") -> tuple[jax.Array, jax.Array]:
    """(loss, per-layer residual (L,)): weighted mean over rows of KL(P* || P) or of the squared
    error summed over the row; pred and target.mass (L, M, M)."""
    t, w = target.mass, target.weight
    if kind == "kl":
        rows = jnp.sum(jnp.where(t > 0, t * (jnp.log(jnp.maximum(t, _EPS))
                                            - jnp.log(jnp.maximum(pred, _EPS))), 0.0), -1)
    elif kind == "mse":
        rows = jnp.sum((pred - t) ** 2, -1)
    else:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {kind!r}")
    per_layer = jnp.sum(w * rows, -1) / jnp.maximum(w.sum(-1), 1)
    return jnp.sum(w * rows) / jnp.maximum(w.sum(), 1), per_layer


# ----------------------------------------------------------------------------- fitting


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of ``fit`` (host arrays). ``params``: best fit; ``restart_params``: FitParams with a
    leading restart axis; ``curves`` (R, steps) loss per step (NaN after a restart stopped);
    ``layer_residual`` (L,); ``model_mass`` (L, M, M); Hessian of the loss in the raw
    coordinates named ``param_names``: ``hessian_eigvals`` ascending, ``hessian_eigvecs`` columns;
    ``spread``: std over converged restarts per parameter name; ``unidentified``: parameter
    names mostly inside the sloppy subspace; ``sloppy_directions``: readable sloppy eigenvectors."""

    config: FitConfig
    seed: int
    key_data: tuple[int, ...]
    sizes: tuple[int, ...]
    target: Target
    params: FitParams
    raw: RawParams
    restart_params: FitParams
    restart_loss: np.ndarray
    curves: np.ndarray
    steps_run: int
    best_restart: int
    loss: float
    layer_residual: np.ndarray
    model_mass: np.ndarray
    param_names: tuple[str, ...]
    hessian_eigvals: np.ndarray
    hessian_eigvecs: np.ndarray
    converged: np.ndarray
    spread: dict
    unidentified: tuple[str, ...]
    sloppy_directions: tuple[str, ...]
    seconds: float

    def to_json(self) -> dict:
        """A JSON-able description: enough to rebuild the surrogate (``model_from_json``)."""
        c, p = self.config, self.params
        return {
            "format": "xmodal-fit",
            "format_version": 1,
            "seed": self.seed,
            "key": list(self.key_data),
            "modalities": list(self.target.modalities),
            "sources": list(self.target.sources),
            "surrogate": {"sizes": list(self.sizes), "k": c.k, "p": c.p,
                          "cross_density": c.cross_density, "normalisation": c.normalisation,
                          "n_initial": c.n_initial, "horizon": c.horizon, "dt": c.dt,
                          "drive": "constant unit drive per modality"},
            "params": {"B": np.asarray(p.B).tolist(), "K": np.asarray(p.K).tolist(),
                       "omega_spread": float(p.omega_spread),
                       "gain": np.asarray(p.gain).tolist(),
                       "times": np.asarray(p.times).tolist()},
            "uncertainty": {"restart_std": self.spread,
                            "converged_restarts": int(self.converged.sum()),
                            "restarts": int(self.converged.size)},
            "identifiability": {"unidentified": list(self.unidentified),
                                "sloppy_directions": list(self.sloppy_directions),
                                "hessian_eigenvalues": np.asarray(self.hessian_eigvals).tolist(),
                                "sloppy_ratio": c.sloppy_ratio},
            "loss": self.loss,
            "divergence": c.divergence,
            "layer_residual": np.asarray(self.layer_residual).tolist(),
            "steps_run": self.steps_run,
            "seconds": self.seconds,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in dataclasses.asdict(c).items()},
        }


def _init_raw(key, base: RawParams, config: FitConfig) -> RawParams:
    ks = jax.random.split(key, 5)
    s = config.init_noise
    noise = lambda k, x, scale: x + scale * jax.random.normal(k, x.shape, x.dtype)  # noqa: E731
    return RawParams(log_B=noise(ks[0], base.log_B, s), log_K=noise(ks[1], base.log_K, s),
                     log_spread=noise(ks[2], base.log_spread, 0.5 * s if config.fit_spread else 0),
                     gain=noise(ks[3], base.gain, 0.5 * s if config.fit_gain else 0),
                     time_logits=noise(ks[4], base.time_logits, 0.3 * s))


def _names(raw: RawParams) -> tuple[str, ...]:
    names = []
    for field in ("log_B", "log_K", "log_spread", "gain", "time_logits"):
        arr = np.asarray(getattr(raw, field))
        label = {"log_B": "B", "log_K": "K", "log_spread": "omega_spread", "gain": "gain",
                 "time_logits": "time"}[field]
        for idx in np.ndindex(arr.shape):
            names.append(label + (f"[{','.join(map(str, idx))}]" if idx else ""))
    return tuple(names)


def _trainable_mask(raw: RawParams, config: FitConfig) -> RawParams:
    ones = lambda x, on: jnp.full_like(x, 1.0 if on else 0.0)  # noqa: E731
    return RawParams(log_B=ones(raw.log_B, True), log_K=ones(raw.log_K, config.couplings == "free"),
                     log_spread=ones(raw.log_spread, config.fit_spread),
                     gain=ones(raw.gain, config.fit_gain),
                     time_logits=ones(raw.time_logits, True))


def fit(
    target: Target,
    key: jax.Array,
    config: FitConfig = FitConfig(),
    *,
    seed: int | None = None,
    progress: Callable[[int, np.ndarray], None] | None = None,
    progress_every: int = 25,
) -> FitResult:
    """Fit the surrogate to ``target``; ``key`` draws the graph, frequencies, initial phases and
    the restart initialisations. ``progress(step, losses (R,))`` is called every
    ``progress_every`` steps. ``seed`` (recorded in the JSON beside the key's data) is the
    integer ``key`` came from."""
    t_start = time.perf_counter()
    if tuple(target.modalities) != tuple(config.modalities):
        raise ValueError(f"target modalities {list(target.modalities)} differ from "
                         f"config.modalities {list(config.modalities)}")
    num_layers = target.num_layers
    tied = config.couplings == "tied"
    dtype = jnp.result_type(float)
    sizes = config.sizes or sizes_from_counts(target.token_counts, config.n_total, config.k + 2)
    k_model, k_init = jax.random.split(key)
    model = make_model(k_model, sizes, config, dtype)
    target = jax.tree.map(lambda x: jnp.asarray(x, dtype), target)
    # the jitted steps see the arrays only (file names would make each fit recompile)
    data = dataclasses.replace(target, sources=(), token_counts=())
    m = len(sizes)
    base = unconstrain(FitParams(
        B=jnp.full((m, m), config.init_B, dtype), K=jnp.full((m, m), config.init_K, dtype),
        omega_spread=jnp.asarray(config.init_spread, dtype), gain=jnp.zeros((m,), dtype),
        times=layer_times(jnp.zeros((0,), dtype), num_layers, config.horizon, dtype)),
        config.time_map)
    raws = jax.vmap(lambda k: _init_raw(k, base, config))(jax.random.split(k_init, config.restarts))
    mask = _trainable_mask(base, config)

    spec = _Spec(num_layers, float(config.horizon), tied, config.divergence,
                 float(config.learning_rate), float(config.tol), int(config.patience))
    R = config.restarts
    opt = optax.adam(config.learning_rate)
    state = (raws, jax.vmap(opt.init)(raws), raws, jnp.full((R,), jnp.inf, dtype),
             jnp.zeros((R,), jnp.int32), jnp.ones((R,), bool))
    curves = np.full((R, config.steps), np.nan)
    steps_run = 0
    for i in range(config.steps):
        state, losses = _adam_step(state, model, data, mask, spec)
        curves[:, i] = np.asarray(losses)
        steps_run = i + 1
        if progress is not None and (i % progress_every == 0 or i == config.steps - 1):
            progress(i, curves[:, i])
        if not bool(np.any(np.asarray(state[5]))):
            break
    curves = curves[:, :steps_run]

    # Levenberg-Marquardt polish of every restart; its last evaluation gives the predictions,
    # losses and the Jacobian for the curvature.
    flat_mask = np.asarray(ravel_pytree(mask)[0]) > 0
    idx = np.flatnonzero(flat_mask)
    names_all = _names(base)
    names = tuple(names_all[i] for i in idx)
    best_raws, ev = _polish(model, data, state[2], jnp.asarray(idx), spec[:4],
                            config.polish_steps)
    best_loss = np.asarray(ev["loss"])
    if not np.any(np.isfinite(best_loss)):
        raise ValueError("fit failed: the loss is not finite for any restart")
    r = int(np.nanargmin(np.where(np.isfinite(best_loss), best_loss, np.inf)))
    raw = jax.tree.map(lambda x: x[r], best_raws)
    params = constrain(raw, num_layers, config.horizon, tied)
    pred, loss, per_layer = ev["pred"][r], ev["loss"][r], ev["per_layer"][r]

    # Curvature: the Gauss-Newton Hessian J^T J of the whitened residuals (for the KL
    # divergence: the Fisher information of the row distributions) in the trained raw coordinates.
    jac = np.asarray(ev["jac"][r])
    hess = jac.T @ jac * (2.0 if config.divergence == "mse" else 1.0)
    hess = 0.5 * (hess + hess.T)
    evals, evecs = np.linalg.eigh(hess)
    top = max(float(np.abs(evals).max()), 1e-300)
    sloppy = np.flatnonzero(evals < config.sloppy_ratio * top)
    weight = (evecs[:, sloppy] ** 2).sum(1) if sloppy.size else np.zeros(len(names))
    unidentified = tuple(n for n, w in zip(names, weight) if w > 0.45)
    directions = []
    for k in sloppy:
        v = evecs[:, k]
        parts = [f"{v[i]:+.2f} {'log ' if names[i][0] in 'BKo' else ''}{names[i]}"
                 for i in np.argsort(-np.abs(v)) if abs(v[i]) >= 0.2]
        directions.append(f"eigenvalue {evals[k]:.2e} ({evals[k] / top:.1e} of max): "
                          + " ".join(parts))

    # Restart spread over the converged restarts.
    best_val = float(best_loss[r])
    converged = np.isfinite(best_loss) & (best_loss <= 1.5 * best_val + config.converged_within)
    restart_params = jax.vmap(lambda x: constrain(x, num_layers, config.horizon, tied))(best_raws)
    spread = {}
    for field in ("B", "K", "omega_spread", "gain"):
        arr = np.asarray(getattr(restart_params, field))[converged]
        std = arr.std(0) if arr.shape[0] > 1 else np.full(arr.shape[1:], np.nan)
        spread[field] = np.asarray(std).tolist()
    to_np = lambda tree: jax.tree.map(np.asarray, tree)  # noqa: E731
    return FitResult(
        config=config, seed=-1 if seed is None else int(seed),
        key_data=tuple(int(x) for x in np.asarray(jax.random.key_data(key)).ravel()),
        sizes=tuple(sizes),
        target=to_np(target), params=to_np(params), raw=to_np(raw),
        restart_params=to_np(restart_params), restart_loss=best_loss, curves=curves,
        steps_run=steps_run, best_restart=r, loss=float(loss),
        layer_residual=np.asarray(per_layer), model_mass=np.asarray(pred), param_names=names,
        hessian_eigvals=evals, hessian_eigvecs=evecs, converged=converged, spread=spread,
        unidentified=unidentified, sloppy_directions=tuple(directions),
        seconds=time.perf_counter() - t_start)


class _Spec(tuple):
    """Static settings of the jitted fit steps (hashable): layers, horizon, tied, divergence,
    learning rate, tol, patience."""

    def __new__(cls, *values):
        return super().__new__(cls, values)


@functools.partial(jax.jit, static_argnums=(4,))
def _adam_step(state, model, target, mask, spec):
    """One Adam step of all restarts (leading axis R) with best-so-far and early-stop bookkeeping;
    returns the new state and the losses (R,) before the step (NaN for stopped restarts)."""
    num_layers, horizon, tied, kind, lr, tol, patience = spec
    opt = optax.adam(lr)

    def loss_fn(raw):
        pred = model_attention(model, constrain(raw, num_layers, horizon, tied))
        return divergence(pred, target, kind)[0]

    raws, opt_state, best_raw, best_loss, stall, active = state
    R = best_loss.shape[0]
    bcast = lambda flag, x: flag.reshape((R,) + (1,) * (x.ndim - 1))  # noqa: E731
    losses, grads = jax.vmap(jax.value_and_grad(loss_fn))(raws)
    grads = jax.tree.map(lambda g, mk: g * mk, grads, mask)
    finite = jnp.isfinite(losses)
    better = finite & (losses < best_loss)
    improved = finite & (losses < best_loss - tol * jnp.abs(best_loss))
    best_raw = jax.tree.map(lambda a, b: jnp.where(bcast(better, a), a, b), raws, best_raw)
    best_loss = jnp.where(better, losses, best_loss)
    stall = jnp.where(improved, 0, stall + 1)
    updates, new_opt = jax.vmap(opt.update)(grads, opt_state, raws)
    new_raws = optax.apply_updates(raws, updates)
    go = active & finite
    new_raws = jax.tree.map(lambda a, b: jnp.where(bcast(go, a), a, b), new_raws, raws)
    new_opt = jax.tree.map(lambda a, b: jnp.where(bcast(go, a), a, b), new_opt, opt_state)
    return ((new_raws, new_opt, best_raw, best_loss, stall, go & (stall < patience)),
            jnp.where(active, losses, jnp.nan))


@functools.partial(jax.jit, static_argnums=(4,))
def _evaluate(model, target, raws, idx, spec):
    """Per restart (leading axis R): prediction (L, M, M), loss, per-layer residual (L,),
    whitened residuals e (L M M,) with sum e^2 ~ 2 KL (= loss for "mse") and their Jacobian
    (L M M, P) w.r.t. the raw coordinates ``idx`` (forward mode)."""
    num_layers, horizon, tied, kind = spec
    w = target.weight[..., None] / jnp.maximum(target.weight.sum(), 1)
    scale = jnp.sqrt(w / (target.mass + 1e-6)) if kind == "kl" else jnp.sqrt(w)

    def one(raw):
        flat, unravel = ravel_pytree(raw)

        def pred_of(x):
            return model_attention(model, constrain(unravel(flat.at[idx].set(x)), num_layers,
                                                    horizon, tied))

        pred, jvp = jax.linearize(pred_of, flat[idx])
        jac = jax.vmap(jvp, out_axes=-1)(jnp.eye(idx.shape[0], dtype=flat.dtype))
        loss, per_layer = divergence(pred, target, kind)
        return {"pred": pred, "loss": loss, "per_layer": per_layer,
                "e": (scale * (pred - target.mass)).ravel(),
                "jac": (scale[..., None] * jac).reshape(-1, idx.shape[0])}

    return jax.vmap(one)(raws)


def _polish(model, target, raws, idx, spec, steps):
    """Levenberg-Marquardt refinement of every restart after Adam (Adam finds the basin, LM
    resolves the sloppy directions first-order steps crawl along). Returns the raws and their
    last ``_evaluate`` output."""
    ev = _evaluate(model, target, raws, idx, spec)
    flats = jax.vmap(lambda r: ravel_pytree(r)[0])(raws)
    unravel = ravel_pytree(jax.tree.map(lambda x: x[0], raws))[1]
    idx_np = np.asarray(idx)
    chi = np.sum(np.asarray(ev["e"]) ** 2, -1)
    chi = np.where(np.isfinite(chi), chi, np.inf)
    lam = np.full(chi.shape, 1e-2)
    x = np.asarray(flats)
    for _ in range(steps):
        jac, e = np.asarray(ev["jac"]), np.asarray(ev["e"])
        cand = x.copy()
        for r in range(x.shape[0]):
            if not np.isfinite(chi[r]):
                continue
            a = jac[r].T @ jac[r]
            g = jac[r].T @ e[r]
            damped = a + lam[r] * np.diag(np.diag(a) + 1e-12)
            try:
                cand[r, idx_np] = x[r, idx_np] + np.linalg.solve(damped, -g)
            except np.linalg.LinAlgError:
                lam[r] *= 10
        new = _evaluate(model, target, jax.vmap(unravel)(jnp.asarray(cand)), idx, spec)
        new_chi = np.sum(np.asarray(new["e"]) ** 2, -1)
        ok = np.isfinite(new_chi) & (new_chi < chi)
        x = np.where(ok[:, None], cand, x)
        chi = np.where(ok, new_chi, chi)
        lam = np.where(ok, lam * 0.3, lam * 10)
        ev = jax.tree.map(lambda n, o: jnp.where(ok.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                          new, ev)
    return jax.vmap(unravel)(jnp.asarray(x)), ev


def model_from_json(obj: dict, source: str = "<params>", dtype=None
                    ) -> tuple[FitModel, FitParams]:
    """Rebuild the fitted model and parameters from ``FitResult.to_json()`` output (in ``dtype``,
    default JAX's float); ValueError naming ``source`` and the field if it does not parse."""
    try:
        if obj.get("format") != "xmodal-fit":
            raise KeyError("format")
        s, p = obj["surrogate"], obj["params"]
        config = FitConfig(modalities=tuple(obj["modalities"]), sizes=tuple(s["sizes"]),
                           k=int(s["k"]), p=float(s["p"]), cross_density=float(s["cross_density"]),
                           normalisation=s["normalisation"], n_initial=int(s["n_initial"]),
                           horizon=float(s["horizon"]), dt=float(s["dt"]))
        if "key" in obj:
            key = jax.random.wrap_key_data(np.asarray(obj["key"], np.uint32))
        else:
            key = jax.random.key(int(obj["seed"]))
        dtype = jnp.result_type(float) if dtype is None else dtype
        arr = lambda name, shape: _field_array(p, name, shape, dtype, source)  # noqa: E731
        m = len(config.sizes)
        params = FitParams(B=arr("B", (m, m)), K=arr("K", (m, m)),
                           omega_spread=arr("omega_spread", ()), gain=arr("gain", (m,)),
                           times=arr("times", (len(p["times"]),)))
    except KeyError as err:
        raise ValueError(f"{source}: field {err.args[0]!r} missing or wrong (not an xmodal fit "
                         f"parameters file)") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None
    k_model, _ = jax.random.split(key)
    return make_model(k_model, config.sizes, config, dtype), params


def _field_array(p, name, shape, dtype, source):
    try:
        a = np.asarray(p[name], float)
    except (TypeError, ValueError):
        raise ValueError(f"field 'params.{name}': not numeric") from None
    if a.shape != shape or not np.all(np.isfinite(a)):
        raise ValueError(f"field 'params.{name}': expected finite values of shape {shape}, "
                         f"got shape {a.shape}")
    return jnp.asarray(a, dtype)


# ----------------------------------------------------------------------------- synthetic data


def synthetic_bundle(
    key: jax.Array,
    params: FitParams,
    config: FitConfig,
    *,
    text_share: float = 0.2,
    num_heads: int = 2,
    head_jitter: float = 0.05,
) -> Bundle:
    """A bundle in the real format generated by the surrogate itself.

    The model is ``make_model(split(key)[0], config.sizes, config)`` (what ``fit`` builds from
    the same key); layers are ``params.times``. Modalities are the probe's
    ("text", "audio", "vision", "special"): ``config.modalities`` carry the surrogate's P(t_l)
    scaled by 1 - ``text_share``, the rest of each row goes to 4 text tokens, and the heads are
    P (1 +- ``head_jitter`` (-1)^h) on the first column (renormalised), so the head mean and the
    renormalisation over the kept modalities give back P exactly for an even ``num_heads``.
    """
    if config.sizes is None:
        raise ValueError("synthetic_bundle needs config.sizes")
    k_model, _ = jax.random.split(key)
    model = make_model(k_model, config.sizes, config)
    pred = np.asarray(_model_attention_jit(model, params), np.float64)  # (L, M, M)
    L = pred.shape[0]
    mods = DEFAULT_MODALITIES
    cols = [mods.index(m) for m in config.modalities]
    heads = []
    for h in range(num_heads):
        p = pred.copy()
        if num_heads > 1:
            d = head_jitter * (-1) ** h * np.minimum(p[..., 0], p[..., 1])
            p[..., 0] += d
            p[..., 1] -= d
        full = np.zeros((L, len(mods), len(mods)))
        for i, a in enumerate(cols):
            full[:, a, mods.index("text")] = text_share
            for j, b in enumerate(cols):
                full[:, a, b] = (1 - text_share) * p[:, i, j]
        heads.append(full)
    block = np.stack(heads, 1)  # (L, H, Mb, Mb)
    token_modality = np.concatenate(
        [np.zeros(4, int)] + [np.full(s, mods.index(m)) for s, m in zip(config.sizes,
                                                                        config.modalities)])
    query_index = np.flatnonzero(token_modality > 0)
    return make_bundle(block, mods, ("full_attention",) * L, token_modality, query_index,
                       query_set={"kind": "synthetic"},
                       model={"id": "surrogate", "architecture": "xmodal-surrogate"},
                       extra={"synthetic": {
                           "B": np.asarray(params.B).tolist(), "K": np.asarray(params.K).tolist(),
                           "omega_spread": float(params.omega_spread),
                           "gain": np.asarray(params.gain).tolist(),
                           "times": np.asarray(params.times).tolist()}})


# ----------------------------------------------------------------------------- report


def fit_report_markdown(result: FitResult, figures: Sequence[str] = ()) -> str:
    """The fit report (markdown): data, settings, loss, parameters with restart spread, per-layer
    residuals, identifiability."""
    c, p, t = result.config, result.params, result.target
    mods = list(t.modalities)

    def mat(name):
        a, s = np.asarray(getattr(p, name)), np.asarray(result.spread[name], float)
        rows = [f"| {name} | " + " | ".join(mods) + " |", "| --- |" + " --- |" * len(mods)]
        for i, qm in enumerate(mods):
            rows.append(f"| {qm} | " + " | ".join(
                f"{a[i, j]:.4g} +- {s[i, j]:.2g}" for j in range(len(mods))) + " |")
        return "\n".join(rows)

    gain_s = np.asarray(result.spread["gain"], float)
    lines = [
        "# Surrogate fit report", "",
        f"Sources: {', '.join(t.sources)}", "",
        f"Modalities -> populations: {', '.join(f'{m} -> {i}' for i, m in enumerate(mods))}; "
        f"sizes {list(result.sizes)} (token counts {[round(x) for x in t.token_counts]}); "
        f"{t.num_layers} layers; heads "
        f"{'all (mean)' if c.heads is None else list(c.heads)}.", "",
        f"Time map: {c.time_map}, horizon {c.horizon}, dt {c.dt}; divergence {c.divergence}; "
        f"{c.restarts} restarts x up to {c.steps} Adam steps (lr {c.learning_rate}, patience "
        f"{c.patience}); {result.steps_run} steps run, {result.seconds:.1f} s.", "",
        f"**Loss** {result.loss:.4g} (best restart {result.best_restart}; restart losses "
        f"{', '.join(f'{x:.3g}' for x in result.restart_loss)}; "
        f"{int(result.converged.sum())} converged: loss <= 1.5 x best + "
        f"{c.converged_within:g}).", "",
        "## Parameters (value +- std over converged restarts)", "",
        "Rows: query modality, columns: key modality.", "",
        mat("B"), "", mat("K"), "",
        f"omega_spread = {float(p.omega_spread):.4g} +- "
        f"{float(np.asarray(result.spread['omega_spread'])):.2g} rad/unit", "",
        "gain = " + ", ".join(f"{m}: {g:.4g} +- {s:.2g}"
                              for m, g, s in zip(mods, np.asarray(p.gain), gain_s)), "",
        "layer times t_l = " + ", ".join(f"{x:.3g}" for x in np.asarray(p.times)), "",
        "## Per-layer residuals", "",
        "| layer | t_l | residual | target row shares (cross) | model row shares (cross) |",
        "| --- | --- | --- | --- | --- |",
    ]
    tm, mm = np.asarray(t.mass), result.model_mass
    for l in range(t.num_layers):
        cross_t = [f"{tm[l, a, b]:.3f}" for a in range(len(mods)) for b in range(len(mods))
                   if a != b]
        cross_m = [f"{mm[l, a, b]:.3f}" for a in range(len(mods)) for b in range(len(mods))
                   if a != b]
        lines.append(f"| {l} | {float(np.asarray(p.times)[l]):.3g} | "
                     f"{result.layer_residual[l]:.3g} | {', '.join(cross_t)} | "
                     f"{', '.join(cross_m)} |")
    ev = result.hessian_eigvals
    lines += [
        "", "## Identifiability", "",
        f"Hessian of the loss in log coordinates (B, K, omega_spread) and raw gains/time logits: "
        f"eigenvalues {', '.join(f'{x:.2e}' for x in ev)}.", "",
        f"Directions with eigenvalue below {c.sloppy_ratio:g} x the largest are not pinned down "
        f"by the data:", "",
    ]
    lines += [f"- {d}" for d in result.sloppy_directions] or ["- none"]
    lines += ["", "Parameters mostly inside that sloppy subspace: "
              + (", ".join(result.unidentified) if result.unidentified else "none") + ".", ""]
    lines += [f"![{os.path.splitext(f)[0]}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
