"""The fit target: per layer, the row-normalised modality-block attention (arrays only).

    P*[l, a, b] = m[l, a, b] / sum_{b' kept} m[l, a, b'],        (L, M, M)

the share of a's attention that goes to b among the modelled modalities: what the surrogate's
``modality_attention`` measures. Rows of a modality without query rows, or with no mass on the
kept modalities, get weight 0. Reading a bundle file into these arrays belongs to the bundle
format (``mllm_probe.bundle.block_shares`` / ``load_block_shares``): the core knows no file
format. See docs/fit.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = ["Target", "combine_targets", "make_target", "sizes_from_counts"]


@struct.dataclass
class Target:
    """Fit target: ``mass`` (L, M, M) row shares P*[l, a, b], ``weight`` (L, M) row weights (0/1),
    static ``modalities`` (M names), ``token_counts`` (M,) tokens per modality, ``sources``."""

    mass: jax.Array
    weight: jax.Array
    modalities: tuple[str, ...] = struct.field(pytree_node=False)
    token_counts: tuple[float, ...] = struct.field(pytree_node=False)
    sources: tuple[str, ...] = struct.field(pytree_node=False, default=())

    @property
    def num_layers(self) -> int:
        return int(self.mass.shape[0])


def make_target(mass, weight=None, modalities: Sequence[str] = ("audio", "vision"),
                token_counts: Sequence[float] | None = None,
                sources: Sequence[str] = ()) -> Target:
    """A ``Target`` from arrays: ``mass`` (L, M, M) row shares, ``weight`` (L, M) (default all
    rows 1), ``token_counts`` (M,) (default equal). ValueError naming the bad shape or value."""
    mass = np.asarray(mass, np.float64)
    if mass.ndim != 3 or mass.shape[1] != mass.shape[2] or mass.shape[1] < 2:
        raise ValueError(f"target mass must have shape (L, M, M) with M >= 2, got {mass.shape}")
    L, m = mass.shape[:2]
    weight = np.ones((L, m)) if weight is None else np.asarray(weight, np.float64)
    if weight.shape != (L, m):
        raise ValueError(f"target weight must have shape {(L, m)}, got {weight.shape}")
    if not (np.all(np.isfinite(mass)) and np.all(mass >= 0)):
        raise ValueError("target mass must be finite and >= 0")
    modalities = tuple(modalities)
    if len(modalities) != m:
        raise ValueError(f"{m} target modalities expected, got {list(modalities)}")
    counts = np.ones(m) if token_counts is None else np.asarray(token_counts, float)
    dtype = jnp.result_type(float)
    return Target(mass=jnp.asarray(mass, dtype), weight=jnp.asarray(weight > 0, dtype),
                  modalities=modalities, token_counts=tuple(float(c) for c in counts),
                  sources=tuple(sources))


def combine_targets(targets: Sequence[Target]) -> Target:
    """One target from several bundles with the same layers and modalities: rows averaged with
    equal weight over the bundles in which they are present."""
    targets = list(targets)
    if not targets:
        raise ValueError("no targets to combine")
    first = targets[0]
    for t in targets[1:]:
        if t.mass.shape != first.mass.shape or t.modalities != first.modalities:
            raise ValueError(f"{t.sources[0]}: field 'block_mass': {t.num_layers} layers of "
                             f"{list(t.modalities)} do not match {first.sources[0]} "
                             f"({first.num_layers} layers of {list(first.modalities)})")
    w = np.stack([np.asarray(t.weight) for t in targets])  # (B, L, M)
    m = np.stack([np.asarray(t.mass) for t in targets])
    wsum = w.sum(0)
    mass = np.divide((w[..., None] * m).sum(0), wsum[..., None], out=np.zeros_like(m[0]),
                     where=wsum[..., None] > 0)
    counts = np.mean([t.token_counts for t in targets], 0)
    dtype = jnp.result_type(float)
    return Target(mass=jnp.asarray(mass, dtype), weight=jnp.asarray(wsum > 0, dtype),
                  modalities=first.modalities, token_counts=tuple(float(c) for c in counts),
                  sources=tuple(s for t in targets for s in t.sources))


def sizes_from_counts(counts: Sequence[float], n_total: int, min_size: int) -> tuple[int, ...]:
    """Population sizes proportional to token ``counts``, summing to ``n_total``, each
    >= ``min_size`` (largest-remainder rounding)."""
    counts = np.asarray(counts, float)
    m = counts.size
    if n_total < m * min_size:
        raise ValueError(f"n_total={n_total} is below {m} populations x min_size={min_size}")
    if counts.sum() <= 0:
        counts = np.ones(m)
    free = n_total - m * min_size
    share = free * counts / counts.sum()
    base = np.floor(share).astype(int)
    order = np.argsort(-(share - base))
    base[order[: free - base.sum()]] += 1
    return tuple(int(b + min_size) for b in base)
