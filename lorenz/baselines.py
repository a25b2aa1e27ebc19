"""Baselines of the observer task on the same data and splits as the surrogate.

* ``raw``: ridge on [x(t), y(t)]. By the symmetry (x, y, z) -> (-x, -y, z) of Lorenz-63, z is
  uncorrelated with any linear function of x and y: its NMSE is close to 1.
* ``ngrc``: ridge on NG-RC features (Gauthier et al. 2021): [x, y] at ``k`` delays ``skip``
  samples apart plus all their unique quadratic monomials.
* ``esn``: an echo-state network of ``n`` tanh units (the surrogate's size) driven by [x, y],
  ridge on its states.

Each returns the ``RidgeFit`` of the readout (NMSE per split in ``.nmse``).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lorenz.data import LorenzSeries, Splits
from lorenz.readout import RidgeFit, fit_ridge, normal_equations, stats_dtype

__all__ = [
    "delay_features",
    "quadratic_features",
    "ngrc_features",
    "ESN",
    "make_esn",
    "esn_states",
    "observer_baselines",
]


def delay_features(u: jax.Array, k: int, skip: int) -> jax.Array:
    """[u(t), u(t - skip), ..., u(t - (k-1) skip)]: (T, D) -> (T, k D); early rows repeat u(0)."""
    if k < 1 or skip < 1:
        raise ValueError(f"need k >= 1 and skip >= 1, got k={k}, skip={skip}")
    pad = jnp.concatenate([jnp.repeat(u[:1], (k - 1) * skip, 0), u])
    t = u.shape[0]
    return jnp.concatenate([pad[(k - 1 - j) * skip:(k - 1 - j) * skip + t] for j in range(k)], -1)


def quadratic_features(lin: jax.Array) -> jax.Array:
    """Unique quadratic monomials lin_i lin_j, i <= j: (T, D) -> (T, D (D + 1) / 2)."""
    i, j = np.triu_indices(lin.shape[-1])
    return lin[:, i] * lin[:, j]


def ngrc_features(u: jax.Array, k: int = 4, skip: int = 5) -> jax.Array:
    """NG-RC feature vector [linear delays, quadratic monomials] (without the constant)."""
    lin = delay_features(u, k, skip)
    return jnp.concatenate([lin, quadratic_features(lin)], -1)


@struct.dataclass
class ESN:
    """Echo-state network weights: recurrent (n, n), input (n, D), bias (n,); leak rate."""

    w: jax.Array
    w_in: jax.Array
    bias: jax.Array
    leak: float = struct.field(pytree_node=False, default=1.0)


def make_esn(key: jax.Array, n: int = 100, n_inputs: int = 2, *, radius: float = 0.9,
             density: float = 0.1, input_scale: float = 0.5, leak: float = 1.0) -> ESN:
    """Random ESN with spectral radius ``radius`` (built on the host: needs eigenvalues)."""
    k_w, k_mask, k_in, k_b = jax.random.split(key, 4)
    w = np.asarray(jax.random.normal(k_w, (n, n))
                   * jax.random.bernoulli(k_mask, density, (n, n)), np.float64)
    w = w * (radius / np.max(np.abs(np.linalg.eigvals(w))))
    w_in = jax.random.uniform(k_in, (n, n_inputs), minval=-input_scale, maxval=input_scale)
    bias = jax.random.uniform(k_b, (n,), minval=-0.2, maxval=0.2)
    return ESN(w=jnp.asarray(w, jnp.float32), w_in=w_in, bias=bias, leak=leak)


def esn_states(esn: ESN, u: jax.Array) -> jax.Array:
    """States (T, n) of the echo-state network driven by u (T, D), from a zero state."""
    w, w_in, bias = (x.astype(u.dtype) for x in (esn.w, esn.w_in, esn.bias))

    def step(r, ut):
        r = (1 - esn.leak) * r + esn.leak * jnp.tanh(w @ r + w_in @ ut + bias)
        return r, r

    _, states = jax.lax.scan(step, jnp.zeros((w.shape[0],), u.dtype), u)
    return states


@jax.jit
def _features(esn: ESN, xy: jax.Array) -> dict[str, jax.Array]:
    return {"raw": xy, "ngrc": ngrc_features(xy), "esn": esn_states(esn, xy)}


@jax.jit
def _readout(f: jax.Array, z: jax.Array, ids: jax.Array) -> RidgeFit:
    return fit_ridge(normal_equations(f, z, ids))


def observer_baselines(esn: ESN, series: LorenzSeries, splits: Splits) -> dict[str, RidgeFit]:
    """Fit the three baselines on [x, y] -> z; returns name -> RidgeFit.

    The readouts run one after the other: independent LAPACK calls side by side in one XLA:CPU
    program deadlocked it with several host devices (measured, jax 0.10.2).
    """
    xy, z = series.u[:, :2], series.u[:, 2:3]
    ids = jnp.asarray(splits.ids())
    dtype = stats_dtype()
    return {name: jax.block_until_ready(_readout(f.astype(dtype), z.astype(dtype), ids))
            for name, f in _features(esn, xy).items()}
