"""Recurrence quantification: recurrence rate RR, determinism DET (share of recurrence points on
diagonal lines of length >= l_min) and laminarity LAM (share on vertical lines >= v_min).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

from surrogate._checks import check_count
from surrogate.attractor.trajectory import as_trajectory, squared_distances

__all__ = ["RecurrenceQuantification", "recurrence_matrix", "recurrence_quantification"]


@struct.dataclass
class RecurrenceQuantification:
    """Recurrence quantification of one trajectory (pairs inside the Theiler window excluded).

    Attributes:
        recurrence_rate: () RR, recurrence points / admissible pairs.
        determinism: () DET, share of recurrence points on diagonal lines of length >= l_min.
        laminarity: () LAM, share of recurrence points on vertical lines of length >= v_min.
        threshold: () the recurrence distance epsilon (points closer than it recur).
        l_min, v_min, theiler: the line lengths and window used (static).
    """

    recurrence_rate: jax.Array
    determinism: jax.Array
    laminarity: jax.Array
    threshold: jax.Array
    l_min: int = struct.field(pytree_node=False, default=2)
    v_min: int = struct.field(pytree_node=False, default=2)
    theiler: int = struct.field(pytree_node=False, default=0)


def recurrence_matrix(points: jax.Array, threshold, *, theiler: int = 0) -> jax.Array:
    """(T, T) bool recurrence matrix: ||x_i - x_j|| < threshold and |i - j| > theiler."""
    x = as_trajectory(points)
    theiler = check_count(theiler, "theiler", 0)
    if isinstance(threshold, (int, float)) and not threshold > 0:
        raise ValueError(f"threshold must be positive, got threshold={threshold!r}")
    d2 = squared_distances(x, x)
    t = x.shape[0]
    i = jnp.arange(t)
    far = jnp.abs(i[:, None] - i[None, :]) > theiler
    return (d2 < jnp.asarray(threshold, x.dtype) ** 2) & far


def _points_on_lines(r: jax.Array, min_len: int, diagonal: bool) -> jax.Array:
    """Number of recurrence points lying on diagonal (or vertical) lines of length >= min_len.

    A forward scan over rows gives the run length ending at each point, a backward scan the run
    length starting there; a point's line length is their sum minus one.
    """
    ri = r.astype(jnp.int32)

    def shift(v, direction):
        if not diagonal:
            return v
        if direction > 0:  # v[j - 1] -> position j
            return jnp.concatenate([jnp.zeros((1,), v.dtype), v[:-1]])
        return jnp.concatenate([v[1:], jnp.zeros((1,), v.dtype)])

    def fwd(prev, row):
        cur = row * (shift(prev, +1) + 1)
        return cur, cur

    zero = jnp.zeros((r.shape[1],), jnp.int32)
    _, ending = jax.lax.scan(fwd, zero, ri)

    def bwd(carry, rows):
        nxt, acc = carry
        row, end = rows
        cur = row * (shift(nxt, -1) + 1)
        acc = acc + jnp.sum((cur + end - 1 >= min_len) & (row > 0), dtype=jnp.int32)
        return (cur, acc), None

    (_, total), _ = jax.lax.scan(bwd, (zero, jnp.zeros((), jnp.int32)), (ri, ending), reverse=True)
    return total


@partial(jax.jit, static_argnames=("dtype", "l_min", "v_min"))
def _line_shares(r, n_rec, dtype, *, l_min, v_min):
    denom = jnp.maximum(n_rec, 1).astype(dtype)
    det = jnp.where(n_rec > 0, _points_on_lines(r, l_min, True) / denom, jnp.nan)
    lam = jnp.where(n_rec > 0, _points_on_lines(r, v_min, False) / denom, jnp.nan)
    return det, lam


def recurrence_quantification(
    points: jax.Array,
    threshold,
    *,
    l_min: int = 2,
    v_min: int | None = None,
    theiler: int = 0,
) -> RecurrenceQuantification:
    """RR, DET and LAM of a trajectory ``points`` (T, d) or (T,) (Marwan et al. 2007).

    Args:
        threshold: recurrence distance epsilon (Euclidean, units of the points).
        l_min: shortest diagonal line counted in DET (2 is usual).
        v_min: shortest vertical line counted in LAM (default l_min).
        theiler: pairs with |i - j| <= theiler are not recurrences (0: the main diagonal only).

    Memory is O(T^2): T up to a few thousand.
    """
    l_min = check_count(l_min, "l_min", 1)
    v_min = l_min if v_min is None else check_count(v_min, "v_min", 1)
    x = as_trajectory(points)
    r = recurrence_matrix(x, threshold, theiler=theiler)
    t = r.shape[0]
    n_pairs = t * t - (t + 2 * sum(max(t - k, 0) for k in range(1, theiler + 1)))
    n_rec = jnp.sum(r)
    dtype = x.dtype
    det, lam = _line_shares(r, n_rec, dtype, l_min=l_min, v_min=v_min)
    return RecurrenceQuantification(
        recurrence_rate=(n_rec / max(n_pairs, 1)).astype(dtype),
        determinism=det.astype(dtype),
        laminarity=lam.astype(dtype),
        threshold=jnp.asarray(threshold, dtype),
        l_min=l_min,
        v_min=v_min,
        theiler=int(theiler),
    )
