"""Phase clusters, locking and synchronization of oscillator populations.

``phase_clusters`` / ``locking_clusters``: groups of oscillators at a common phase (one snapshot)
or phase-locked over a trajectory, with the count per modality; ``cross_population_locking`` and
``synchrony``: locking between modalities' mean fields and the Kuramoto order parameter per
modality (``surrogate.metrics.order_parameter``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate.metrics import order_parameter

__all__ = ["PhaseClusters", "Synchrony", "cross_population_locking", "locking_clusters",
           "locking_matrix", "phase_clusters", "synchrony"]


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
    return jnp.cos(thetas) @ onehot / size[None, :], jnp.sin(thetas) @ onehot / size[None, :]


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
