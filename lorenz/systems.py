"""Low-dimensional chaotic test systems and a fixed-step RK4 trajectory.

Flows have the diffrax signature ``f(t, y, args) -> dy/dt`` with ``args`` a parameter PyTree
(defaults: the standard chaotic settings, with published Lyapunov spectra in docs/lyapunov.md);
maps have the signature ``g(y, args) -> y_next``. Everything follows the dtype of ``y``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate import rk4
from surrogate.lyapunov import cached_jit
from surrogate.rk4 import Solution

__all__ = [
    "SYSTEMS",
    "HenonParams",
    "LorenzParams",
    "RosslerParams",
    "henon",
    "iterate_map",
    "lorenz63",
    "rk4_trajectory",
    "rossler",
]


@struct.dataclass
class LorenzParams:
    """Lorenz-63 parameters (sigma, rho, beta); defaults are the classic chaotic ones."""

    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0


@struct.dataclass
class RosslerParams:
    """Roessler parameters (a, b, c); defaults a = b = 0.2, c = 5.7."""

    a: float = 0.2
    b: float = 0.2
    c: float = 5.7


@struct.dataclass
class HenonParams:
    """Henon map parameters (a, b); defaults a = 1.4, b = 0.3."""

    a: float = 1.4
    b: float = 0.3


def _check_dim(y: jax.Array, n: int, name: str) -> None:
    if jnp.shape(y) != (n,):
        raise ValueError(f"{name} needs a state y of shape ({n},), got shape {jnp.shape(y)}")


def lorenz63(t, y: jax.Array, args: LorenzParams | None = None) -> jax.Array:
    """Lorenz-63 vector field (x, y, z) (3,) -> d/dt (3,); ``args`` default ``LorenzParams()``."""
    del t
    _check_dim(y, 3, "lorenz63")
    p = LorenzParams() if args is None else args
    x, yy, z = y[0], y[1], y[2]
    return jnp.stack([p.sigma * (yy - x), x * (p.rho - z) - yy, x * yy - p.beta * z]).astype(
        y.dtype
    )


def rossler(t, y: jax.Array, args: RosslerParams | None = None) -> jax.Array:
    """Roessler vector field (x, y, z) (3,) -> d/dt (3,); ``args`` default ``RosslerParams()``."""
    del t
    _check_dim(y, 3, "rossler")
    p = RosslerParams() if args is None else args
    x, yy, z = y[0], y[1], y[2]
    return jnp.stack([-yy - z, x + p.a * yy, p.b + z * (x - p.c)]).astype(y.dtype)


def henon(y: jax.Array, args: HenonParams | None = None) -> jax.Array:
    """Henon map: (x, y) (2,) -> (1 - a x^2 + y, b x). ``args`` defaults to ``HenonParams()``."""
    _check_dim(y, 2, "henon")
    p = HenonParams() if args is None else args
    x, yy = y[0], y[1]
    return jnp.stack([1.0 - p.a * x * x + yy, p.b * x]).astype(y.dtype)


def _check_counts(**counts) -> None:
    for name, (value, minimum) in counts.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _initial_state(y0) -> jax.Array:
    """y0 as a (n,) float array (integers become the default float dtype)."""
    y0 = jnp.asarray(y0)
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(jnp.result_type(float))
    if y0.ndim != 1:
        raise ValueError(f"y0 must have shape (n,), got shape {y0.shape}")
    return y0


def rk4_trajectory(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    y0: jax.Array,
    args: Any = None,
    *,
    dt: float,
    n_steps: int,
    transient: int = 0,
    save_every: int = 1,
    t0: float = 0.0,
) -> Solution:
    """Fixed-step RK4 trajectory of ``vector_field(t, y, args)`` by ``lax.scan``.

    ``transient`` steps are taken first and dropped; then ``n_steps`` steps are taken and every
    ``save_every``-th state is kept, the state after the transient included.

    Args:
        vector_field: f(t, y, args) -> dy/dt with y of shape (n,).
        y0: (n,) initial state; its float dtype is the dtype of the computation.
        dt: step size (time units of the system).
        n_steps: steps after the transient; must be a multiple of ``save_every``.

    Returns:
        ``Solution`` with ``ts`` (n_steps / save_every + 1,) times, ``ys``
        (n_steps / save_every + 1, n) and ``y1`` = ``ys[-1]``.
    """
    rk4.check_steps(dt, n_steps, save_every)
    _check_counts(transient=(transient, 0))
    y0 = _initial_state(y0)
    run = cached_jit(_trajectory_jit, _trajectory, vector_field)
    return run(vector_field, y0, args, dt, t0, n_steps=n_steps, transient=transient,
               save_every=save_every)


def _trajectory(vector_field, y0, args, dt, t0, *, n_steps, transient, save_every):
    dtype = y0.dtype
    dt = jnp.asarray(dt, dtype)
    t0 = jnp.asarray(t0, dtype)

    def step(i, y):
        return rk4.flow_step(vector_field, t0 + i.astype(dtype) * dt, y, args, dt)

    y = jax.lax.fori_loop(0, transient, step, y0) if transient else y0

    def block(y, i0):
        y = jax.lax.fori_loop(0, save_every, lambda j, y: step(i0 + j, y), y)
        return y, y

    n_save = n_steps // save_every
    starts = transient + save_every * jnp.arange(n_save)
    y1, ys = jax.lax.scan(block, y, starts)
    ts = t0 + dt * (transient + save_every * jnp.arange(n_save + 1)).astype(dtype)
    return Solution(y1=y1, ts=ts, ys=jnp.concatenate([y[None], ys]))


_trajectory_jit = jax.jit(
    _trajectory, static_argnums=0, static_argnames=("n_steps", "transient", "save_every")
)


def iterate_map(
    g: Callable[[jax.Array, Any], jax.Array],
    y0: jax.Array,
    args: Any = None,
    *,
    n_steps: int,
    transient: int = 0,
) -> jax.Array:
    """Orbit of the map ``g(y, args)``: (n_steps + 1, n), the state after ``transient`` first."""
    _check_counts(n_steps=(n_steps, 1), transient=(transient, 0))
    y0 = _initial_state(y0)
    run = cached_jit(_orbit_jit, _orbit, g)
    return run(g, y0, args, n_steps=n_steps, transient=transient)


def _orbit(g, y0, args, *, n_steps, transient):
    y = jax.lax.fori_loop(0, transient, lambda i, y: g(y, args), y0) if transient else y0

    def step(y, _):
        y = g(y, args)
        return y, y

    _, ys = jax.lax.scan(step, y, None, length=n_steps)
    return jnp.concatenate([y[None], ys])


_orbit_jit = jax.jit(_orbit, static_argnums=0, static_argnames=("n_steps", "transient"))


#: name -> (dynamics "flow" or "map", function, default parameters, initial state, default dt);
#: used by the CLI.
SYSTEMS = {
    "lorenz": ("flow", lorenz63, LorenzParams(), (1.0, 1.0, 1.0), 0.01),
    "rossler": ("flow", rossler, RosslerParams(), (1.0, 1.0, 0.0), 0.01),
    "henon": ("map", henon, HenonParams(), (0.1, 0.1), 1.0),
}
