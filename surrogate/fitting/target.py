"""The fit target: per layer, the row-normalised modality-block attention of attention bundles.

A bundle holds ``block_mass`` (L, H, M_b, M_b): per layer and head, the mean attention mass that
the query rows of modality a put on the keys of modality b. ``bundle_target`` keeps the
modalities that become surrogate populations (by default ``("audio", "vision")`` -> populations
0 and 1; text and special tokens have no oscillators), averages over the heads (all, or a head
group given by indices) and renormalises each row over the kept modalities:

    P*[l, a, b] = m[l, a, b] / sum_{b' kept} m[l, a, b'],        (L, M, M)

the share of a's attention that goes to b among the modelled modalities: what the surrogate's
``modality_attention`` measures. Rows of a modality without query rows, or with no mass on the
kept modalities, get weight 0. See docs/fit.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mllm_probe.bundle import Bundle, load_bundle

__all__ = ["Target", "bundle_target", "combine_targets", "load_target", "sizes_from_counts"]


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


def bundle_target(
    bundle: Bundle,
    modalities: Sequence[str] = ("audio", "vision"),
    heads: Sequence[int] | None = None,
    source: str = "<in memory>",
) -> Target:
    """The fit target of one bundle (module docstring); ``heads``: indices of a head group
    (default all heads). Raises ValueError naming ``source`` and the field on a mismatch."""
    modalities = tuple(modalities)
    if len(modalities) < 2 or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be >= 2 distinct names, got {list(modalities)}")
    missing = [m for m in modalities if m not in bundle.modalities]
    if missing:
        raise ValueError(f"{source}: field 'modalities': {missing} not among the bundle's "
                         f"modalities {list(bundle.modalities)}")
    cols = [bundle.modalities.index(m) for m in modalities]
    mass = np.asarray(bundle.block_mass, np.float64)
    if heads is not None:
        heads = [int(h) for h in heads]
        bad = [h for h in heads if not 0 <= h < bundle.num_heads]
        if not heads or bad:
            raise ValueError(f"{source}: heads {heads} must be non-empty indices in "
                             f"[0, {bundle.num_heads})")
        mass = mass[:, heads]
    sub = mass.mean(1)[:, cols][:, :, cols]  # (L, M, M)
    total = sub.sum(-1)
    counts = bundle.query_counts()[cols]
    weight = (total > 1e-6) & (counts > 0)[None, :]
    if not weight.any():
        raise ValueError(f"{source}: field 'query_index': no query row of {list(modalities)} puts "
                         f"attention on these modalities (query set {dict(bundle.query_set)}); "
                         f"capture with a query set that includes them, e.g. --query all")
    share = np.divide(sub, total[..., None], out=np.zeros_like(sub), where=weight[..., None])
    tokens = np.bincount(bundle.token_modality, minlength=len(bundle.modalities))[cols]
    dtype = jnp.result_type(float)
    return Target(mass=jnp.asarray(share, dtype), weight=jnp.asarray(weight, dtype),
                  modalities=modalities, token_counts=tuple(float(t) for t in tokens),
                  sources=(source,))


def load_target(path, modalities=("audio", "vision"), heads=None) -> Target:
    """``bundle_target`` of a bundle file (read through ``mllm_probe.bundle``, no torch)."""
    path = os.fspath(path)
    return bundle_target(load_bundle(path), modalities, heads, source=path)


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
