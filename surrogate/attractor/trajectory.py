"""Shared checks of the attractor measures: trajectories as (T, d) float arrays, integer
arguments, pairwise squared distances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["as_trajectory", "squared_distances"]


def as_trajectory(x, name: str = "points") -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (T,) or (T, d) with T >= 2, got {x.shape}")
    return x




def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances (P, Q) between rows of a (P, d) and b (Q, d); differences
    (exact) for small d, a centred Gram matrix for large d."""
    if a.shape[1] <= 8:
        return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, -1)
    centre = b.mean(0)
    a, b = a - centre, b - centre
    d2 = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2 * a @ b.T
    return jnp.maximum(d2, 0)
