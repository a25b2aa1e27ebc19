"""The echo-state property, measured: two copies of a driven network, one drive.

A driven surrogate has fading memory (the echo-state property, generalized synchronization to
its drive) when copies started from different phases under the same input converge to one
trajectory; the largest conditional Lyapunov exponent (``surrogate.lyapunov``) is their rate.
Without input anchoring they never converge: a global phase shift is an exact symmetry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from surrogate.integrate import simulate
from surrogate.model import Surrogate

__all__ = ["EchoDistance", "phase_distance", "echo_distance"]


@struct.dataclass
class EchoDistance:
    """``ts`` (T,) times; ``distance`` (T,) ``phase_distance`` of the two copies at ``ts``."""

    ts: jax.Array
    distance: jax.Array


def phase_distance(theta_a: jax.Array, theta_b: jax.Array) -> jax.Array:
    """Root-mean-square chord distance of two phase vectors (..., N): sqrt(mean |e^{i a} -
    e^{i b}|^2) = sqrt(mean(2 - 2 cos(a - b))); 0 for equal phases (mod 2 pi), at most 2."""
    return jnp.sqrt(jnp.mean(2 - 2 * jnp.cos(theta_a - theta_b), axis=-1))


def echo_distance(sur: Surrogate, theta_a: jax.Array, theta_b: jax.Array, *, dt: float,
                  n_steps: int, save_every: int = 1, t0: float = 0.0,
                  field="auto") -> EchoDistance:
    """Drive two copies of ``sur`` (its drive, its parameters) from phases ``theta_a`` and
    ``theta_b`` (N,) and return their distance over time (fixed-step RK4, ``simulate``'s
    arguments)."""
    run = jax.vmap(lambda th: simulate(sur, th, dt=dt, n_steps=n_steps, t0=t0,
                                       save_every=save_every, field=field))
    traj = run(jnp.stack([jnp.asarray(theta_a, sur.dtype), jnp.asarray(theta_b, sur.dtype)]))
    return EchoDistance(ts=traj.ts[0], distance=phase_distance(traj.ys[0], traj.ys[1]))
