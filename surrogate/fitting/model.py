"""The forward model of a fit: parameters, their unconstrained coordinates, the time map, an
ensemble of realizations of the anchored surrogate, its modality attention at the layer times and
the divergence to the target.

Time map. Layer l (0..L-1) sits at surrogate time t_l in (0, T], T = ``horizon``:
``time_map="fixed"``: t_l = T (l + 1) / L; ``"learned"``: t_l = T cumsum(softplus(z))_l /
sum(softplus(z)), a monotone map with L free logits z (the horizon is fixed because a global
time scale trades off exactly against the scale of K, omega and the gains).

Model. The anchored surrogate of docs/model.md, as in the Lorenz presets: h sin(psi_i - theta_i)
with psi_i = c_i u + b_i, c_i ~ N(0, encoding_scale^2), b_i ~ U(0, 2 pi); a constant unit drive
u_m(t) = 1 per modality, so the fitted ``gain`` (M,) is a per-modality frequency offset;
omega_i = s xi_i with xi_i ~ N(0, 1) and s the fitted ``omega_spread``. A *realization* is the
graph, xi, the encodings (c, b) and ``n_initial`` initial phase vectors, drawn from one key
exactly as ``paper_preset`` and ``xmodal simulate`` draw them. P(t) is the mean over ``R``
realizations from independent keys (vmapped) and their initial phases, computed on the fixed
RK4 grid of step ``dt`` and linearly interpolated at t_l (differentiable in t_l). See
docs/fit.md.
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
from surrogate.model import Field, Params, Sparse, Surrogate, make_drive, paper_preset
from surrogate.network import Network

__all__ = [
    "FitModel",
    "FitParams",
    "RawParams",
    "constrain",
    "divergence",
    "layer_times",
    "make_model",
    "model_attention",
    "realization_attention",
    "unconstrain",
]

#: The fit's field evaluation: neighbour lists in a rolled slot loop. Measured on 2 CPU cores,
#: R = 8, 80 steps: the gradient 3.4x (100 oscillators) and 3.0x (48) faster than the masked
#: dense field, the forward-mode Jacobian of the polish 2.1x, and compiled in half the time of
#: the unrolled loop (benchmarks/fit.py).
FIELD = Sparse(unroll_slots=False)
_EPS = 1e-12


@struct.dataclass
class FitParams:
    """Fitted parameters (constrained): ``B``, ``K`` (M, M) > 0, ``omega_spread`` () > 0 rad per
    unit time, ``gain`` (M,) per-modality input gains of the unit drive, ``anchor`` () the
    anchoring strength h >= 0 rad per unit time (0 for the unanchored model), ``times`` (L,)
    layer times t_l in (0, horizon]."""

    B: jax.Array
    K: jax.Array
    omega_spread: jax.Array
    gain: jax.Array
    anchor: jax.Array
    times: jax.Array


@struct.dataclass
class RawParams:
    """Unconstrained coordinates: ``log_B``, ``log_K`` (M, M), ``log_spread`` (), ``gain`` (M,),
    ``log_anchor`` (), ``time_logits`` (L,) for the learned time map, (0,) for the fixed one."""

    log_B: jax.Array
    log_K: jax.Array
    log_spread: jax.Array
    gain: jax.Array
    log_anchor: jax.Array
    time_logits: jax.Array


def layer_times(time_logits: jax.Array, num_layers: int, horizon: float, dtype=None) -> jax.Array:
    """t_l (L,): fixed spacing T (l + 1) / L when ``time_logits`` is empty, else the monotone map
    T cumsum(softplus(z)) / sum(softplus(z))."""
    if time_logits.shape[0] == 0:
        return horizon * jnp.arange(1, num_layers + 1, dtype=dtype) / num_layers
    w = jax.nn.softplus(time_logits)
    return horizon * jnp.cumsum(w) / jnp.sum(w)


def constrain(raw: RawParams, num_layers: int, horizon: float, tied: bool = False,
              anchored: bool = True) -> FitParams:
    """RawParams -> FitParams (exp of the logs, the time map); ``tied``: K = B (paper preset);
    ``anchored=False``: anchor 0 (the model without the anchoring term)."""
    B = jnp.exp(raw.log_B)
    anchor = jnp.exp(raw.log_anchor) if anchored else jnp.zeros_like(raw.log_anchor)
    return FitParams(B=B, K=B if tied else jnp.exp(raw.log_K),
                     omega_spread=jnp.exp(raw.log_spread), gain=raw.gain, anchor=anchor,
                     times=layer_times(raw.time_logits, num_layers, horizon, raw.log_B.dtype))


def unconstrain(params: FitParams, time_map: str = "fixed") -> RawParams:
    """FitParams -> RawParams; the learned time map starts from the given ``times``; an anchor
    of 0 (unanchored) maps to log_anchor 0, which ``constrain(anchored=False)`` ignores."""
    if time_map == "fixed":
        logits = jnp.zeros((0,), params.B.dtype)
    else:
        gaps = jnp.diff(jnp.concatenate([jnp.zeros((1,), params.times.dtype), params.times]))
        logits = jnp.log(jnp.expm1(jnp.maximum(gaps / gaps.mean(), 1e-6)))  # softplus^-1
    anchor = jnp.asarray(params.anchor, params.B.dtype)
    return RawParams(log_B=jnp.log(params.B), log_K=jnp.log(params.K),
                     log_spread=jnp.log(params.omega_spread), gain=params.gain,
                     log_anchor=jnp.where(anchor > 0, jnp.log(jnp.maximum(anchor, 1e-30)), 0.0),
                     time_logits=logits)


@struct.dataclass
class FitModel:
    """Fixed part of the fitted surrogate, ``R`` realizations stacked on a leading axis: graphs
    ``network`` (leaves (R, ...)), unit frequencies ``xi`` (R, N), encoding gains ``enc_gain``
    and offsets ``enc_offset`` (R, N), initial phases ``theta0`` (R, E, N); static
    ``normalisation``, ``dt``, ``n_steps``, ``field`` (FIELD), ``anchored``."""

    network: Network
    xi: jax.Array
    enc_gain: jax.Array
    enc_offset: jax.Array
    theta0: jax.Array
    normalisation: str = struct.field(pytree_node=False)
    dt: float = struct.field(pytree_node=False)
    n_steps: int = struct.field(pytree_node=False)
    field: Field = struct.field(pytree_node=False, default=FIELD)
    anchored: bool = struct.field(pytree_node=False, default=True)

    @property
    def realizations(self) -> int:
        return int(self.xi.shape[0])

    def realization(self, r: int) -> FitModel:
        """The model of realization ``r`` alone (leading axis 1)."""
        return jax.tree.map(lambda x: x[r:r + 1], self)

    def surrogate(self, params: FitParams, r: int = 0) -> Surrogate:
        """The surrogate of realization ``r`` at ``params`` (unit drive)."""
        one = jax.tree.map(lambda x: x[r], self)
        return _surrogate(one.network, one.xi, one.enc_gain, one.enc_offset, params, self)


def _surrogate(net, xi, enc_gain, enc_offset, params: FitParams, model: FitModel) -> Surrogate:
    m = net.n_populations
    dtype = xi.dtype
    horizon = model.dt * model.n_steps
    drive = make_drive(jnp.asarray([0.0, horizon], dtype), jnp.ones((2, m), dtype))
    anchoring = {}
    if model.anchored:
        anchoring = dict(anchor=jnp.broadcast_to(jnp.asarray(params.anchor, dtype), xi.shape),
                         encoding_gain=enc_gain, encoding_offset=enc_offset)
    p = Params(omega=params.omega_spread * xi,
               gain=jnp.asarray(params.gain, dtype)[net.population], B=params.B, K=params.K,
               **anchoring)
    return Surrogate(network=net, params=p, drive=drive, normalisation=model.normalisation)


def _draw(key, sizes, config: FitConfig, dtype):
    """One realization from ``key``: (network, xi, c, b, theta0 (E, N)), drawn as
    ``paper_preset(split(key)[0], ...)`` and ``initial_phases(split(key)[1])`` draw them."""
    k_model, k_theta = jax.random.split(key)
    sur = paper_preset(k_model, sizes=sizes, k=config.k, p=config.p,
                       cross_density=config.cross_density, omega_spread=1.0, gain=0.0,
                       encoding_scale=config.encoding_scale, dtype=dtype)
    n = sur.network.n
    if config.n_initial == 1:
        theta0 = jax.random.uniform(k_theta, (1, n), dtype, maxval=2 * jnp.pi)
    else:
        theta0 = jax.vmap(lambda k: jax.random.uniform(k, (n,), dtype, maxval=2 * jnp.pi))(
            jax.random.split(k_theta, config.n_initial))
    p = sur.params
    return sur.network, p.omega, p.encoding_gain, p.encoding_offset, theta0


def make_model(key: jax.Array, sizes: Sequence[int], config: FitConfig, dtype=None, *,
               realizations: int | None = None, keys: jax.Array | None = None) -> FitModel:
    """``config.realizations`` (or ``realizations``) realizations from independent keys
    ``split(key, R)`` (or the given ``keys`` (R,)), stacked."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    sizes = tuple(int(s) for s in sizes)
    if min(sizes) <= config.k:
        raise ValueError(f"population sizes {sizes} must exceed the graph degree k={config.k}")
    if keys is None:
        keys = jax.random.split(key, config.realizations if realizations is None
                                else realizations)
    draws = [_draw(k, sizes, config, dtype) for k in keys]
    n = sum(sizes)
    # The evaluation is FIELD at every size; the static density is set to a canonical value and
    # the neighbour lists padded to one width, a multiple of 8 slots (pads point at i itself,
    # masked): realizations stack, and fits of graphs of the same sizes share compiled steps.
    width = max(d[0].neighbours.shape[1] for d in draws)
    width += -width % 8
    nets = []
    for net, *_ in draws:
        pad = width - net.neighbours.shape[1]
        own = jnp.broadcast_to(jnp.arange(n)[:, None], (n, pad)).astype(net.neighbours.dtype)
        nets.append(dataclasses.replace(
            net, neighbours=jnp.concatenate([net.neighbours, own], 1),
            neighbour_mask=jnp.concatenate(
                [net.neighbour_mask, jnp.zeros((n, pad), net.neighbour_mask.dtype)], 1),
            density=0.0))
    stack = lambda *xs: jnp.stack(xs)  # noqa: E731
    return FitModel(network=jax.tree.map(stack, *nets),
                    xi=stack(*[d[1] for d in draws]), enc_gain=stack(*[d[2] for d in draws]),
                    enc_offset=stack(*[d[3] for d in draws]),
                    theta0=stack(*[d[4] for d in draws]), normalisation=config.normalisation,
                    dt=float(config.dt), n_steps=config.n_steps, field=FIELD,
                    anchored=config.anchored)


def realization_attention(model: FitModel, params: FitParams) -> jax.Array:
    """Modality attention P_r(t_l) (R, L, M, M) of each realization, mean over its initial
    phases."""

    def one(net, xi, enc_gain, enc_offset, theta0s):
        sur = _surrogate(net, xi, enc_gain, enc_offset, params, model)

        def run(theta0):
            ys = simulate(sur, theta0, dt=model.dt, n_steps=model.n_steps, field=model.field).ys
            return jax.vmap(modality_attention, (0, None))(ys, sur)

        return jax.vmap(run)(theta0s).mean(0)  # (S + 1, M, M)

    grid = jax.vmap(one)(model.network, model.xi, model.enc_gain, model.enc_offset,
                         model.theta0)
    pos = jnp.clip(params.times / model.dt, 0.0, model.n_steps)
    i0 = jnp.clip(jnp.floor(pos), 0, model.n_steps - 1).astype(jnp.int32)
    frac = (pos - i0)[None, :, None, None]
    return (1 - frac) * grid[:, i0] + frac * grid[:, i0 + 1]


def model_attention(model: FitModel, params: FitParams) -> jax.Array:
    """Ensemble-mean modality attention P(t_l) (L, M, M) over the realizations."""
    return realization_attention(model, params).mean(0)


def divergence(pred: jax.Array, target: Target, name: str = "kl") -> tuple[jax.Array, jax.Array]:
    """(loss, per-layer residual (L,)): weighted mean over rows of KL(P* || P) or of the squared
    error summed over the row; pred and target.mass (L, M, M)."""
    t, w = target.mass, target.weight
    if name == "kl":
        rows = jnp.sum(jnp.where(t > 0, t * (jnp.log(jnp.maximum(t, _EPS))
                                            - jnp.log(jnp.maximum(pred, _EPS))), 0.0), -1)
    elif name == "mse":
        rows = jnp.sum((pred - t) ** 2, -1)
    else:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {name!r}")
    per_layer = jnp.sum(w * rows, -1) / jnp.maximum(w.sum(-1), 1)
    return jnp.sum(w * rows) / jnp.maximum(w.sum(), 1), per_layer


#: The box of the positive parameters (B, K, omega spread, anchor) in refits and intervals: the
#: plane of the Lorenz experiment spans 1e-4 .. 1; below 1e-4 the attention no longer changes.
POSITIVE_BOX = (1e-4, 1e2)


def raw_box(raw: RawParams) -> tuple[RawParams, RawParams]:
    """(low, high) bounds of the raw coordinates: log POSITIVE_BOX for the logs, +-1e3 for the
    gains, +-30 for the time logits."""
    lo, hi = (float(jnp.log(b)) for b in POSITIVE_BOX)

    def bound(field, x, upper):
        if field.startswith("log_"):
            v = hi if upper else lo
        else:
            v = (1e3 if field == "gain" else 30.0) * (1 if upper else -1)
        return jnp.full_like(x, v)

    names = [f.name for f in dataclasses.fields(RawParams)]
    return (RawParams(**{f: bound(f, getattr(raw, f), False) for f in names}),
            RawParams(**{f: bound(f, getattr(raw, f), True) for f in names}))


def fit_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The keys a fit with ``key`` draws from: (model realizations, restart initialisations,
    held-out realizations of the intervals' noise covariance)."""
    k_model, k_init, k_held = jax.random.split(key, 3)
    return k_model, k_init, k_held
