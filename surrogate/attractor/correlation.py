"""Correlation dimension by Grassberger-Procaccia.

C(r) is the fraction of pairs of points (pairs closer in time than a Theiler window excluded) at
distance < r; D2 is the slope of log C against log r over a scaling region chosen automatically
(the longest run of radii whose local slopes stay within a relative tolerance of the fitted
slope) and reported with the result. A Theiler window ``theiler = w`` excludes the pairs with
|i - j| <= w (w = 0: only the self-pairs).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate._checks import check_count
from surrogate.attractor.trajectory import as_trajectory, squared_distances

__all__ = ["CorrelationDimension", "correlation_dimension", "correlation_sum"]


@struct.dataclass
class CorrelationDimension:
    """Grassberger-Procaccia estimate.

    Attributes:
        dimension: () slope of log C(r) vs log r over the scaling region (NaN if none was found).
        radii: (R,) radii, ascending, in the units of the points.
        correlation_sum: (R,) C(r): fraction of admissible pairs at distance < r.
        pair_counts: (R,) number of admissible pairs at distance < r.
        region: (2,) int, first and last radius index (inclusive) of the scaling region.
        scaling_range: (2,) the radii at the ends of the scaling region.
        spread: () largest relative deviation |s_i / dimension - 1| of the local slopes s_i in it.
    """

    dimension: jax.Array
    radii: jax.Array
    correlation_sum: jax.Array
    pair_counts: jax.Array
    region: jax.Array
    scaling_range: jax.Array
    spread: jax.Array


def _default_radii(x: jax.Array, n_radii: int, decades: float) -> jax.Array:
    """Log-spaced radii from diam * 10^-decades to diam, diam the bounding-box diagonal."""
    diam = jnp.linalg.norm(x.max(0) - x.min(0))
    return diam * jnp.logspace(-decades, 0, n_radii, dtype=x.dtype)


def correlation_sum(
    points: jax.Array, radii: jax.Array, *, theiler: int = 0, block: int = 128
) -> tuple[jax.Array, jax.Array]:
    """Correlation sum of a trajectory ``points`` (T, d) (or (T,)) at ``radii`` (R,), ascending.

    Euclidean distances; pairs with |i - j| <= theiler are excluded. Rows are processed in blocks
    of ``block`` (memory block x T).

    Returns:
        ``(C, counts)``: C (R,) fraction of admissible pairs closer than r, counts (R,) int.
    """
    x = as_trajectory(points)
    theiler = check_count(theiler, "theiler", 0)
    block = check_count(block, "block", 1)
    radii = jnp.asarray(radii, x.dtype)
    if radii.ndim != 1 or radii.shape[0] < 1:
        raise ValueError(f"radii must have shape (R,), got {radii.shape}")
    t = x.shape[0]
    if theiler >= t - 1:
        raise ValueError(f"theiler={theiler} leaves no pairs among T={t} points")
    return _correlation_sum(x, radii, theiler=theiler, block=block)


@partial(jax.jit, static_argnames=("theiler", "block"))
def _correlation_sum(x, radii, *, theiler, block):
    t = x.shape[0]
    r2 = radii**2
    n_r = r2.shape[0]
    n_blocks = -(-t // block)
    pad = n_blocks * block - t
    xp = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)])
    cols = jnp.arange(t)

    def rows(b):
        i = b * block + jnp.arange(block)
        d2 = squared_distances(jax.lax.dynamic_slice_in_dim(xp, b * block, block), x)
        keep = (cols[None, :] > i[:, None] + theiler) & (i[:, None] < t)  # each pair once
        idx = jnp.searchsorted(r2, d2, side="right", method="scan")  # radii <= d
        return jnp.bincount(jnp.where(keep, idx, n_r).ravel(), length=n_r + 1)[:n_r]

    hist = jax.lax.map(rows, jnp.arange(n_blocks)).sum(0)
    counts = jnp.cumsum(hist)  # pairs with d < r_k: those with fewer than k+1 radii <= d
    n_pairs = (t - theiler - 1) * (t - theiler) // 2
    return counts / jnp.asarray(n_pairs, x.dtype), counts


def _scaling_region(log_r, log_c, valid, tol: float, min_points: int):
    """Longest window of consecutive valid points whose local slopes lie within tol (relative)
    of the window's least-squares slope; ties: the smallest spread. Falls back to the window of
    ``min_points`` with the smallest spread when none is within tol."""
    n = log_r.shape[0]
    a, b = np.triu_indices(n, min_points - 1)  # all windows [a, b] with b - a + 1 >= min_points
    a, b = jnp.asarray(a), jnp.asarray(b)
    m = (b - a + 1).astype(log_r.dtype)

    def pre(v):
        return jnp.concatenate([jnp.zeros((1,), v.dtype), jnp.cumsum(v)])

    def wsum(p):
        return p[b + 1] - p[a]

    sx, sy = wsum(pre(log_r)), wsum(pre(log_c))
    sxx, sxy = wsum(pre(log_r * log_r)), wsum(pre(log_r * log_c))
    slope = (m * sxy - sx * sy) / (m * sxx - sx * sx)
    intercept = (sy - slope * sx) / m
    n_invalid = wsum(pre((~valid).astype(jnp.int32)))
    local = jnp.diff(log_c) / jnp.diff(log_r)  # slope between points q and q+1
    q = jnp.arange(n - 1)
    inside = (q[None, :] >= a[:, None]) & (q[None, :] < b[:, None])
    dev = jnp.where(inside, jnp.abs(local[None, :] / slope[:, None] - 1), 0).max(-1)
    ok = (n_invalid == 0) & jnp.isfinite(slope) & (slope > 0)
    dev = jnp.where(ok, dev, jnp.inf)
    within = dev <= tol
    length = jnp.where(within, m, 0)
    best_len = length.max()
    # Among the longest windows within tol take the smallest spread; without any, the smallest.
    score = jnp.where(best_len > 0, jnp.where(length == best_len, dev, jnp.inf), dev)
    w = jnp.argmin(score)
    found = jnp.isfinite(score[w])
    return (
        jnp.where(found, slope[w], jnp.nan),
        jnp.stack([a[w], b[w]]),
        jnp.where(found, dev[w], jnp.nan),
        intercept[w],
    )


@partial(jax.jit, static_argnames=("min_points",))
def _fit_region(radii, c, counts, min_pairs, tol, *, min_points):
    valid = (counts >= min_pairs) & (c < 1) & (radii > 0)
    log_r = jnp.log(jnp.where(radii > 0, radii, 1))
    log_c = jnp.log(jnp.where(counts > 0, c, 1))
    dim, region, spread, _ = _scaling_region(log_r, log_c, valid, tol, min_points)
    return dim, region, spread


def correlation_dimension(
    points: jax.Array,
    radii: jax.Array | None = None,
    *,
    theiler: int = 0,
    n_radii: int = 40,
    decades: float = 3.0,
    min_pairs: int = 500,
    tol: float = 0.05,
    min_points: int = 8,
    block: int = 128,
) -> CorrelationDimension:
    """Correlation dimension D2 of a trajectory ``points`` (T, d) by Grassberger-Procaccia.

    Args:
        points: (T, d) samples along a trajectory (or (T,) for a scalar series, or (T, m) delay
            vectors); uniform in time if a Theiler window is used.
        radii: (R,) ascending radii; default ``n_radii`` log-spaced over ``decades`` decades below
            the bounding-box diagonal of the points.
        theiler: pairs with |i - j| <= theiler are excluded (temporal correlation).
        min_pairs: radii with fewer admissible pairs closer than r are not used (statistics).
        tol: the local slopes in the scaling region lie within ``tol`` (relative) of its slope.
        min_points: fewest radii in a scaling region.

    Returns:
        ``CorrelationDimension`` with the estimate, the curve C(r) and the region used.
    """
    x = as_trajectory(points)
    n_radii = check_count(n_radii, "n_radii", 2)
    min_points = check_count(min_points, "min_points", 2)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got tol={tol!r}")
    radii = _default_radii(x, n_radii, decades) if radii is None else jnp.asarray(radii, x.dtype)
    if radii.ndim != 1 or radii.shape[0] < min_points:
        raise ValueError(
            f"radii must have shape (R,) with R >= min_points={min_points}, got {radii.shape}"
        )
    c, counts = correlation_sum(x, radii, theiler=theiler, block=block)
    dim, region, spread = _fit_region(radii, c, counts, min_pairs, tol, min_points=min_points)
    return CorrelationDimension(
        dimension=dim,
        radii=radii,
        correlation_sum=c,
        pair_counts=counts,
        region=region,
        scaling_range=radii[region],
        spread=spread,
    )
