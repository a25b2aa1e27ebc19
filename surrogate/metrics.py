"""Order parameters and modality-level attention metrics; all differentiable, one state each.

Every function takes one phase vector theta (N,) (vmap over time or over a batch at the call site).
Attention shares use row-normalised attention, alpha_ij / sum_j alpha_ij, so they are shares in
[0, 1] for every normalisation mode (for "softmax" rows already sum to 1); an oscillator with no
neighbours contributes zero.

Modality dominance. With P the (M, M) modality attention matrix (P[a, b] = mean over queries i of
modality a of the attention share i gives to keys of modality b), the dominance of a over b is

    D_ab = log(P[b, a] / P[a, b]),

the log ratio of the attention modality a receives from b to the attention b receives from a.
D_ab > 0: b's tokens look at a more than a's look at b (a dominates); D_ab = -D_ba; D = 0 for a
symmetric system. It is the quantity an MLLM bundle gives directly (e.g. audio -> video vs
video -> audio attention mass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from surrogate.model import Surrogate, attention_weights

__all__ = [
    "order_parameter",
    "kuramoto_order",
    "modality_attention",
    "cross_modal_share",
    "modality_cross_share",
    "dominance_index",
    "dominance",
]


def _membership(sur: Surrogate, dtype) -> jax.Array:
    """(N, M) one-hot modality membership."""
    return jax.nn.one_hot(sur.network.population, sur.network.n_populations, dtype=dtype)


def kuramoto_order(theta: jax.Array) -> jax.Array:
    """Global Kuramoto order parameter |mean_i exp(i theta_i)|, scalar in [0, 1]."""
    return jnp.hypot(jnp.mean(jnp.cos(theta)), jnp.mean(jnp.sin(theta)))


def order_parameter(theta: jax.Array, sur: Surrogate) -> jax.Array:
    """Kuramoto order parameter per population, (M,): R_m = |mean_{i in m} exp(i theta_i)|."""
    onehot = _membership(sur, theta.dtype)
    size = onehot.sum(0)
    c = jnp.cos(theta) @ onehot / size
    s = jnp.sin(theta) @ onehot / size
    return jnp.hypot(c, s)


def _row_normalised(theta: jax.Array, sur: Surrogate) -> jax.Array:
    alpha = attention_weights(theta, sur)
    z = alpha.sum(-1, keepdims=True)
    return alpha / jnp.where(z > 0, z, 1)


def modality_attention(theta: jax.Array, sur: Surrogate) -> jax.Array:
    """(M, M) modality attention matrix P[a, b]: mean over queries in a of their share on b."""
    onehot = _membership(sur, theta.dtype)
    per_query = _row_normalised(theta, sur) @ onehot  # (N, M)
    return (onehot.T @ per_query) / onehot.sum(0)[:, None]


def cross_modal_share(theta: jax.Array, sur: Surrogate) -> jax.Array:
    """(N,) share of each oscillator's attention on keys of other modalities."""
    onehot = _membership(sur, theta.dtype)
    per_query = _row_normalised(theta, sur) @ onehot
    own = jnp.sum(per_query * onehot, -1)
    return per_query.sum(-1) - own


def modality_cross_share(theta: jax.Array, sur: Surrogate) -> jax.Array:
    """(M,) mean cross-modal attention share of the queries of each modality."""
    p = modality_attention(theta, sur)
    return p.sum(-1) - jnp.diagonal(p)


def dominance_index(p: jax.Array, a: int = 0, b: int = 1) -> jax.Array:
    """D_ab = log(P[b, a] / P[a, b]) from a modality attention matrix P (M, M) (module doc)."""
    m = p.shape[-1]
    if not (0 <= a < m and 0 <= b < m) or a == b:
        raise ValueError(f"modalities a={a}, b={b} must differ and lie in 0..{m - 1}")
    return jnp.log(p[..., b, a]) - jnp.log(p[..., a, b])


def dominance(theta: jax.Array, sur: Surrogate, a: int = 0, b: int = 1) -> jax.Array:
    """Dominance of modality a over b at phases theta (N,); scalar (see ``dominance_index``)."""
    return dominance_index(modality_attention(theta, sur), a, b)
