"""The semantic network: Watts-Strogatz graphs inside each modality plus random cross links.

The graph is undirected and has no self-loops. It is built once, on the host, from an explicit JAX
PRNG key (same key, same graph) and then carried as a PyTree of arrays:

* ``adjacency``: (N, N) float {0, 1}, ``a_ij = 1`` when j is a neighbour of i;
* ``population``: (N,) int, the modality sigma(i) of each oscillator (0..M-1, contiguous blocks);
* ``neighbours`` / ``neighbour_mask``: (N, D) gathered neighbour lists padded to the largest degree
  D (pad slots point at i itself and are masked out), for the sparse fast path;
* static ``sizes`` (oscillators per modality) and ``density`` (fraction of ordered pairs i != j
  that are edges).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate._checks import check_count

__all__ = ["Network", "watts_strogatz", "cross_links", "build_network", "from_adjacency"]


@struct.dataclass
class Network:
    """Coupling graph of M populations of phase oscillators (see module docstring for shapes)."""

    adjacency: jax.Array
    population: jax.Array
    neighbours: jax.Array
    neighbour_mask: jax.Array
    sizes: tuple[int, ...] = struct.field(pytree_node=False)
    density: float = struct.field(pytree_node=False)

    @property
    def n(self) -> int:
        """Number of oscillators N."""
        return sum(self.sizes)

    @property
    def n_populations(self) -> int:
        """Number of modalities M."""
        return len(self.sizes)


def _rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by the bits of a JAX key (typed or raw uint32)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def _check_ws(n: int, k: int, p: float) -> None:
    check_count(n, "n", 2)
    if not isinstance(k, (int, np.integer)) or k < 0 or k % 2:
        raise ValueError(f"k must be a non-negative even integer, got k={k!r}")
    if k >= n:
        raise ValueError(f"k must be smaller than n, got k={k}, n={n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"rewiring probability p must be in [0, 1], got p={p!r}")


def watts_strogatz(key: jax.Array, n: int, k: int, p: float) -> np.ndarray:
    """Watts-Strogatz small-world graph, (n, n) symmetric 0/1 array, no self-loops.

    A ring where every node links to its k/2 nearest neighbours on each side; then each edge
    (i, i + j), j = 1..k/2, is rewired with probability p to (i, w), w uniform among the nodes that
    are neither i nor already linked to i (Watts and Strogatz 1998). The edge count n k / 2 is
    kept exactly.
    """
    _check_ws(n, k, p)
    rng = _rng(key)
    a = np.zeros((n, n), dtype=bool)
    idx = np.arange(n)
    for j in range(1, k // 2 + 1):
        a[idx, (idx + j) % n] = a[(idx + j) % n, idx] = True
    for j in range(1, k // 2 + 1):
        for i in range(n):
            if rng.random() >= p:
                continue
            t = (i + j) % n
            if not a[i, t]:  # already rewired away by an earlier step
                continue
            free = np.flatnonzero(~a[i])
            free = free[free != i]
            if free.size == 0:
                continue
            w = rng.choice(free)
            a[i, t] = a[t, i] = False
            a[i, w] = a[w, i] = True
    return a


def cross_links(key: jax.Array, n_a: int, n_b: int, density: float) -> np.ndarray:
    """Random bipartite links, (n_a, n_b) 0/1 array, each pair linked with probability
    ``density``."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"cross-link density must be in [0, 1], got {density!r}")
    return _rng(key).random((n_a, n_b)) < density


def from_adjacency(adjacency, sizes: Sequence[int]) -> Network:
    """Wrap a given (N, N) 0/1 adjacency (any graph) with populations of the given sizes."""
    a = np.asarray(adjacency)
    sizes = tuple(int(s) for s in sizes)
    n = sum(sizes)
    if a.shape != (n, n):
        raise ValueError(f"adjacency must have shape ({n}, {n}) for sizes={sizes}, got {a.shape}")
    if any(s < 1 for s in sizes) or len(sizes) < 1:
        raise ValueError(f"population sizes must be positive, got sizes={sizes}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("adjacency entries must be 0 or 1")
    if np.any(np.diag(a)):
        raise ValueError("adjacency must have no self-loops (zero diagonal)")
    a = a.astype(bool)
    degree = a.sum(1)
    d = max(int(degree.max()), 1)
    nbr = np.tile(np.arange(n)[:, None], (1, d))
    mask = np.zeros((n, d), dtype=bool)
    for i in range(n):
        js = np.flatnonzero(a[i])
        nbr[i, : js.size] = js
        mask[i, : js.size] = True
    population = np.repeat(np.arange(len(sizes)), sizes)
    return Network(
        adjacency=jnp.asarray(a, dtype=jnp.float32),
        population=jnp.asarray(population, dtype=jnp.int32),
        neighbours=jnp.asarray(nbr, dtype=jnp.int32),
        neighbour_mask=jnp.asarray(mask),
        sizes=sizes,
        density=float(a.sum() / max(n * (n - 1), 1)),
    )


def build_network(
    key: jax.Array,
    sizes: Sequence[int] = (50, 50),
    k: int = 10,
    p: float = 0.01,
    cross_density: float = 0.1,
) -> Network:
    """The semantic network (docs/model.md).

    Args:
        key: PRNG key; the graph is a deterministic function of it.
        sizes: oscillators per modality, M >= 1 entries.
        k: Watts-Strogatz degree inside each modality (even, < size).
        p: Watts-Strogatz rewiring probability.
        cross_density: probability of a link between two oscillators of different modalities.
    """
    sizes = tuple(sizes)
    if len(sizes) < 1:
        raise ValueError("sizes must name at least one population")
    for s in sizes:
        _check_ws(s, k, p)
    if not 0.0 <= cross_density <= 1.0:
        raise ValueError(f"cross_density must be in [0, 1], got {cross_density!r}")
    m = len(sizes)
    keys = jax.random.split(key, m + m * m)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    a = np.zeros((offsets[-1],) * 2, dtype=bool)
    for b in range(m):
        sl = slice(offsets[b], offsets[b + 1])
        a[sl, sl] = watts_strogatz(keys[b], sizes[b], k, p)
    for b in range(m):
        for c in range(b + 1, m):
            links = cross_links(keys[m + b * m + c], sizes[b], sizes[c], cross_density)
            a[offsets[b] : offsets[b + 1], offsets[c] : offsets[c + 1]] = links
            a[offsets[c] : offsets[c + 1], offsets[b] : offsets[b + 1]] = links.T
    return from_adjacency(a, sizes)
