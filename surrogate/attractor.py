"""Attractor analysis: correlation dimension, recurrence quantification, phase clusters, locking.

* ``correlation_dimension``: Grassberger-Procaccia. C(r) is the fraction of pairs of points (pairs
  closer in time than a Theiler window excluded) at distance < r; D2 is the slope of log C against
  log r over a scaling region chosen automatically (the longest run of radii whose local slopes stay
  within a relative tolerance of the fitted slope) and reported with the result.
* ``recurrence_quantification``: recurrence rate RR, determinism DET (share of recurrence points on
  diagonal lines of length >= l_min) and laminarity LAM (share on vertical lines >= v_min).
* ``phase_clusters`` / ``locking_clusters``: groups of oscillators at a common phase (one snapshot)
  or phase-locked over a trajectory, with the count per modality; ``cross_population_locking`` and
  ``synchrony``: locking between modalities' mean fields and the Kuramoto order parameter per
  modality (``surrogate.metrics.order_parameter``).

Conventions: a Theiler window ``theiler = w`` excludes the pairs with |i - j| <= w (w = 0: only the
self-pairs). All functions are jit-able (array sizes fixed by static arguments) and act on one
trajectory or state; vmap at the call site.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate.metrics import order_parameter

__all__ = [
    "CorrelationDimension",
    "PhaseClusters",
    "RecurrenceQuantification",
    "Synchrony",
    "correlation_dimension",
    "correlation_sum",
    "cross_population_locking",
    "locking_clusters",
    "locking_matrix",
    "phase_clusters",
    "recurrence_matrix",
    "recurrence_quantification",
    "synchrony",
]


def _points(x, name: str = "points") -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (T,) or (T, d) with T >= 2, got {x.shape}")
    return x


def _count(value, name: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Correlation dimension (Grassberger-Procaccia)


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


def _sq_dist(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances (P, Q) between rows of a (P, d) and b (Q, d); differences
    (exact) for small d, a centred Gram matrix for large d."""
    if a.shape[1] <= 8:
        return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, -1)
    centre = b.mean(0)
    a, b = a - centre, b - centre
    d2 = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2 * a @ b.T
    return jnp.maximum(d2, 0)


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
    x = _points(points)
    theiler = _count(theiler, "theiler", 0)
    block = _count(block, "block", 1)
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
        d2 = _sq_dist(jax.lax.dynamic_slice_in_dim(xp, b * block, block), x)
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
    x = _points(points)
    n_radii = _count(n_radii, "n_radii", 2)
    min_points = _count(min_points, "min_points", 2)
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


# ----------------------------------------------------------------------------------------------
# Recurrence quantification


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
    x = _points(points)
    theiler = _count(theiler, "theiler", 0)
    if isinstance(threshold, (int, float)) and not threshold > 0:
        raise ValueError(f"threshold must be positive, got threshold={threshold!r}")
    d2 = _sq_dist(x, x)
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
    l_min = _count(l_min, "l_min", 1)
    v_min = l_min if v_min is None else _count(v_min, "v_min", 1)
    x = _points(points)
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


# ----------------------------------------------------------------------------------------------
# Phase clusters and locking of oscillator populations


def _population(network, n: int) -> tuple[jax.Array, int]:
    """(N,) population index and M from a Surrogate, a Network or None (one population)."""
    net = getattr(network, "network", network)
    if net is None:
        return jnp.zeros((n,), jnp.int32), 1
    if net.n != n:
        raise ValueError(f"phases have {n} oscillators but the network has {net.n}")
    return jnp.asarray(net.population), net.n_populations


def _canonical(labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Relabel clusters 0..C-1 in order of their lowest-index member; returns (labels, C)."""
    n = labels.shape[0]
    idx = jnp.arange(n)
    first = jax.ops.segment_min(idx, labels, num_segments=n)[labels]
    is_first = first == idx
    rank = jnp.cumsum(is_first) - 1
    return rank[first], jnp.sum(is_first)


@struct.dataclass
class PhaseClusters:
    """Clusters of oscillators.

    Attributes:
        labels: (N,) int cluster of each oscillator, 0..n_clusters-1, numbered by lowest member.
        n_clusters: () int number of clusters.
        sizes: (N,) int members of cluster c at index c (zero past n_clusters).
        per_population: (M,) int number of distinct clusters among each population's oscillators.
        n_shared: () int clusters with members from more than one population.
    """

    labels: jax.Array
    n_clusters: jax.Array
    sizes: jax.Array
    per_population: jax.Array
    n_shared: jax.Array


def _summarise(labels, population, m) -> PhaseClusters:
    labels, n_clusters = _canonical(labels)
    n = labels.shape[0]
    sizes = jnp.zeros((n,), jnp.int32).at[labels].add(1)
    present = jnp.zeros((m, n), bool).at[population, labels].set(True)
    return PhaseClusters(
        labels=labels,
        n_clusters=n_clusters,
        sizes=sizes,
        per_population=present.sum(1),
        n_shared=jnp.sum(present.sum(0) > 1),
    )


def phase_clusters(theta: jax.Array, network=None, *, tol: float = 0.1) -> PhaseClusters:
    """Phase clusters of one state theta (N,) (radians): single linkage on the circle.

    Oscillators are sorted by phase mod 2 pi; a gap wider than ``tol`` (radians) between
    neighbours on the circle separates clusters. ``network``: a Surrogate or Network giving the
    populations (modalities), or None for one population. Apply to the end state of a trajectory
    (after the transient) or vmap over time; for clusters of oscillators locked at different
    frequencies use ``locking_clusters``.
    """
    theta = jnp.asarray(theta)
    if theta.ndim != 1 or theta.shape[0] < 1:
        raise ValueError(f"theta must have shape (N,), got {theta.shape}")
    if not 0 < tol < 2 * np.pi:
        raise ValueError(f"tol must be in (0, 2 pi) radians, got tol={tol!r}")
    population, m = _population(network, theta.shape[0])
    return _phase_clusters(theta, population, tol, m=m)


@partial(jax.jit, static_argnames=("m",))
def _phase_clusters(theta, population, tol, *, m):
    phi = jnp.mod(theta, 2 * jnp.pi)
    order = jnp.argsort(phi)
    s = phi[order]
    gaps = jnp.concatenate([jnp.diff(s), s[:1] + 2 * jnp.pi - s[-1:]])  # gap after each, cyclic
    breaks = gaps > tol
    n_breaks = jnp.sum(breaks)
    # Sorted element q belongs to the cluster after the breaks before it; the run after the last
    # break wraps round to the first one (unless the wrap gap itself is a break).
    before = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(breaks)[:-1]])
    lab_sorted = jnp.where(n_breaks > 0, before % jnp.maximum(n_breaks, 1), 0)
    labels = jnp.zeros_like(lab_sorted).at[order].set(lab_sorted)
    return _summarise(labels, population, m)


@jax.jit
def locking_matrix(thetas: jax.Array) -> jax.Array:
    """(N, N) phase-locking values |<exp(i (theta_j - theta_i))>_t| of a trajectory (T, N)."""
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2:
        raise ValueError(f"thetas must have shape (T, N), got {thetas.shape}")
    c, s = jnp.cos(thetas), jnp.sin(thetas)
    t = thetas.shape[0]
    re = (c.T @ c + s.T @ s) / t  # <cos(tj - ti)>
    im = (c.T @ s - s.T @ c) / t  # <sin(tj - ti)>
    return jnp.hypot(re, im)


def locking_clusters(thetas: jax.Array, network=None, *, threshold: float = 0.95) -> PhaseClusters:
    """Clusters of mutually phase-locked oscillators over a trajectory ``thetas`` (T, N).

    Two oscillators are linked when their phase-locking value (``locking_matrix``) is at least
    ``threshold``; clusters are the connected components. Oscillators locked at a constant phase
    difference share a cluster; drifting ones do not.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got threshold={threshold!r}")
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2:
        raise ValueError(f"thetas must have shape (T, N), got {thetas.shape}")
    population, m = _population(network, thetas.shape[1])
    return _locking_clusters(thetas, population, threshold, m=m)


@partial(jax.jit, static_argnames=("m",))
def _locking_clusters(thetas, population, threshold, *, m):
    plv = locking_matrix(thetas)
    n = plv.shape[0]
    linked = (plv >= threshold) | jnp.eye(n, dtype=bool)

    def spread(state):
        labels, _ = state
        new = jnp.min(jnp.where(linked, labels[None, :], n), axis=1)
        return new, jnp.any(new != labels)

    labels, _ = jax.lax.while_loop(lambda s: s[1], spread, (jnp.arange(n), jnp.array(True)))
    return _summarise(labels, population, m)


def _mean_fields(thetas: jax.Array, population: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """Real and imaginary parts of each population's mean field, (T, M) each."""
    onehot = jax.nn.one_hot(population, m, dtype=thetas.dtype)
    size = onehot.sum(0)
    return jnp.cos(thetas) @ onehot / size, jnp.sin(thetas) @ onehot / size


def cross_population_locking(thetas: jax.Array, network) -> jax.Array:
    """(M, M) locking between populations' mean-field phases over a trajectory (T, N).

    L[a, b] = |<exp(i (Phi_a - Phi_b))>_t|, Phi_a the phase of population a's mean field
    Z_a = <exp(i theta_j)>_{j in a}. 1: the modalities keep a fixed phase relation; ~0: they
    drift. Diagonal entries are 1. Times at which a mean field vanishes count as unlocked.
    """
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2:
        raise ValueError(f"thetas must have shape (T, N), got {thetas.shape}")
    population, m = _population(network, thetas.shape[1])
    return _cross_locking(thetas, population, m=m)


@partial(jax.jit, static_argnames=("m",))
def _cross_locking(thetas, population, *, m):
    re, im = _mean_fields(thetas, population, m)
    mag = jnp.hypot(re, im)
    nz = mag > 0
    cos_p = jnp.where(nz, re / jnp.where(nz, mag, 1), 0)
    sin_p = jnp.where(nz, im / jnp.where(nz, mag, 1), 0)
    t = thetas.shape[0]
    rr = (cos_p.T @ cos_p + sin_p.T @ sin_p) / t
    ii = (sin_p.T @ cos_p - cos_p.T @ sin_p) / t
    return jnp.hypot(rr, ii)


@struct.dataclass
class Synchrony:
    """Synchronization summary of a surrogate trajectory.

    Attributes:
        order: (M,) time-mean Kuramoto order parameter R_m of each population.
        order_final: (M,) R_m at the last state.
        locking: (M, M) ``cross_population_locking``.
        clusters: ``PhaseClusters`` of the last state.
    """

    order: jax.Array
    order_final: jax.Array
    locking: jax.Array
    clusters: PhaseClusters


def synchrony(thetas: jax.Array, sur, *, tol: float = 0.1) -> Synchrony:
    """Order parameters, cross-population locking and end-state phase clusters of a surrogate
    trajectory ``thetas`` (T, N) (e.g. ``simulate(...).ys`` after a transient)."""
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2:
        raise ValueError(f"thetas must have shape (T, N), got {thetas.shape}")
    order = jax.vmap(lambda th: order_parameter(th, sur))(thetas)
    return Synchrony(
        order=order.mean(0),
        order_final=order[-1],
        locking=cross_population_locking(thetas, sur),
        clusters=phase_clusters(thetas[-1], sur, tol=tol),
    )
