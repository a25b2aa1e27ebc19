"""The forward model of a fit: parameters, their unconstrained coordinates, the time map, the
fitted surrogate and its modality attention at the layer times, and the divergence to the target.

Time map. Layer l (0..L-1) sits at surrogate time t_l in (0, T], T = ``horizon``:
``time_map="fixed"``: t_l = T (l + 1) / L; ``"learned"``: t_l = T cumsum(softplus(z))_l /
sum(softplus(z)), a monotone map with L free logits z (the horizon is fixed because a global
time scale trades off exactly against the scale of K, omega and the gains).

Model. Watts-Strogatz graphs and cross links from the fit key; omega_i = s xi_i with
xi_i ~ N(0, 1) fixed and s the fitted ``omega_spread``; a constant unit drive u_m(t) = 1 per
modality, so the fitted ``gain`` (M,) is a per-modality frequency offset (only differences
between gains are observable: a common rotation changes no phase difference). P(t) is averaged
over ``n_initial`` uniform random initial phase vectors, computed on the fixed RK4 grid of step
``dt`` and linearly interpolated at t_l (differentiable in t_l). See docs/fit.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from surrogate.fitting.config import DIVERGENCES, FitConfig
from surrogate.fitting.target import Target
from surrogate.integrate import simulate
from surrogate.metrics import modality_attention
from surrogate.model import Params, Surrogate, initial_phases, make_drive
from surrogate.network import Network, build_network

__all__ = [
    "DENSE_UP_TO",
    "FitModel",
    "FitParams",
    "RawParams",
    "constrain",
    "divergence",
    "layer_times",
    "make_model",
    "model_attention",
    "unconstrain",
]

#: Fitted surrogates up to this many oscillators use the masked dense evaluation.
DENSE_UP_TO = 128
_EPS = 1e-12


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
        ys = simulate(sur, theta0, dt=model.dt, n_steps=model.n_steps, field=model.kind).ys
        return jax.vmap(modality_attention, (0, None))(ys, sur)

    grid = jax.vmap(one)(model.theta0).mean(0)  # (S + 1, M, M)
    pos = jnp.clip(params.times / model.dt, 0.0, model.n_steps)
    i0 = jnp.clip(jnp.floor(pos), 0, model.n_steps - 1).astype(jnp.int32)
    frac = (pos - i0)[:, None, None]
    return (1 - frac) * grid[i0] + frac * grid[i0 + 1]


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
