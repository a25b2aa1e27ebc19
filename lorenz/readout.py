"""Ridge readout from sufficient statistics, and dynamical Shapley values of feature groups.

A linear readout z_hat = w . f + b is fitted by ridge regression. Everything it needs is in the
*normal equations* of each split, accumulated as features stream past (nothing stored over time):

    G = sum_t f_t f_t^T  (F, F),   h = sum_t f_t z_t  (F, Z),   s = sum_t f_t  (F,),
    zz = sum_t z_t^2  (Z,),        zs = sum_t z_t  (Z,),         n = number of samples.

The readout is fitted on the train split with the features centred (the bias is not penalised):
w = (C + lam n I)^-1 c, C = G - n mu mu^T, c = h - n mu zbar, for every lam of a grid at once
by one Cholesky factorisation per lam; lam is chosen by the validation NMSE, and the NMSE of the
held-out split is computed from its own statistics (an exact quadratic form, so no predictions
are needed). NMSE = mean((z_hat - z)^2) / var(z), per target.

Feature groups (modalities) are selected by a 0/1 mask over features: the masked problem is the
ridge problem on those features only, so Shapley values of the groups follow from one set of
statistics (docs/lorenz.md): v(S) = -NMSE(S), v(empty) = -1.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from flax import struct

__all__ = [
    "NormalEquations",
    "normal_equations",
    "accumulate",
    "RidgeFit",
    "fit_ridge",
    "spd_solve",
    "nmse",
    "predict",
    "shapley_values",
    "DEFAULT_LAMBDAS",
    "stats_dtype",
]

#: Regularisation grid (relative to the number of training samples).
DEFAULT_LAMBDAS = tuple(10.0 ** k for k in range(-9, 2))


def stats_dtype():
    """float64 when JAX has x64 enabled, else float32: the dtype of readout statistics (the
    quadratic forms of the NMSE cancel strongly, so float64 is used whenever available)."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


@struct.dataclass
class NormalEquations:
    """Sufficient statistics of least squares for S splits, F features, Z targets (module doc)."""

    G: jax.Array  # (S, F, F)
    h: jax.Array  # (S, F, Z)
    s: jax.Array  # (S, F)
    zz: jax.Array  # (S, Z)
    zs: jax.Array  # (S, Z)
    n: jax.Array  # (S,)

    @classmethod
    def zeros(cls, n_splits: int, n_features: int, n_targets: int, dtype=jnp.float32):
        z = lambda *shape: jnp.zeros(shape, dtype)  # noqa: E731
        return cls(G=z(n_splits, n_features, n_features), h=z(n_splits, n_features, n_targets),
                   s=z(n_splits, n_features), zz=z(n_splits, n_targets),
                   zs=z(n_splits, n_targets), n=z(n_splits))


def accumulate(stats: NormalEquations, split: jax.Array, f: jax.Array, z: jax.Array,
               ) -> NormalEquations:
    """Add samples f (T, F), z (T, Z) with split ids ``split`` (T,) (-1: skip) to ``stats``."""
    onehot = jax.nn.one_hot(split, stats.n.shape[0], dtype=f.dtype)  # (T, S); -1 -> zeros
    hi = jax.lax.Precision.HIGHEST
    fw = onehot[:, :, None] * f[:, None, :]  # (T, S, F)
    return NormalEquations(
        G=stats.G + jnp.einsum("tsf,tg->sfg", fw, f, precision=hi),
        h=stats.h + jnp.einsum("tsf,tz->sfz", fw, z, precision=hi),
        s=stats.s + fw.sum(0),
        zz=stats.zz + jnp.einsum("ts,tz->sz", onehot, z * z, precision=hi),
        zs=stats.zs + jnp.einsum("ts,tz->sz", onehot, z, precision=hi),
        n=stats.n + onehot.sum(0),
    )


def normal_equations(f: jax.Array, z: jax.Array, split: jax.Array, n_splits: int = 3):
    """Statistics of stored features f (T, F) and targets z (T, Z) with split ids (T,)."""
    init = NormalEquations.zeros(n_splits, f.shape[-1], z.shape[-1], f.dtype)
    return accumulate(init, split, f, z)


@struct.dataclass
class RidgeFit:
    """A fitted readout: weights (F, Z), bias (Z,), chosen lam (Z,), NMSE per split (S, Z)."""

    w: jax.Array
    b: jax.Array
    lam: jax.Array
    nmse: jax.Array


def _split(stats: NormalEquations, i: int):
    return jax.tree.map(lambda x: x[i], stats)


def nmse(stats: NormalEquations, split: int, w: jax.Array, b: jax.Array) -> jax.Array:
    """(Z,) NMSE of z_hat = f w + b on one split, from its statistics alone."""
    st = _split(stats, split)
    n = st.n
    # sum (w.f + b - z)^2 = w'Gw + 2 b w's + n b^2 - 2 w'h - 2 b zs + zz
    sse = (jnp.einsum("fz,fg,gz->z", w, st.G, w) + 2 * b * (w.T @ st.s) + n * b * b
           - 2 * jnp.einsum("fz,fz->z", w, st.h) - 2 * b * st.zs + st.zz)
    var = st.zz / n - (st.zs / n) ** 2
    return jnp.maximum(sse, 0) / (n * var)


def spd_solve(A: jax.Array, B: jax.Array) -> jax.Array:
    """x = A^-1 B for a symmetric positive definite A (F, F), B (F, Z), by Cholesky in plain
    XLA ops (column loop, matrix-vector products).

    Not ``jax.scipy.linalg.cho_solve``: jaxlib's CPU LAPACK kernels split a batch over XLA's
    intra-op thread pool and block until it is done, so two of them running at once (one per
    CPU device of a sharded sweep, or two independent calls in one program) wait for each other
    forever on a 2-core machine (seen with gdb: both pool threads in ParallelBatchMap).
    """
    n = A.shape[0]
    rows = jnp.arange(n)

    def column(j, L):  # left-looking: column j from the columns < j (zero elsewhere)
        v = A[:, j] - L @ L[j]
        return L.at[:, j].set(jnp.where(rows >= j, v / jnp.sqrt(v[j]), 0))

    L = jax.lax.fori_loop(0, n, column, jnp.zeros_like(A))
    diag = jnp.diagonal(L)

    def forward(i, y):  # L y = B
        return y.at[i].set((B[i] - L[i] @ y) / diag[i])

    def backward(k, x):  # L^T x = y
        i = n - 1 - k
        return x.at[i].set((y[i] - L[:, i] @ x) / diag[i])

    y = jax.lax.fori_loop(0, n, forward, jnp.zeros_like(B))
    return jax.lax.fori_loop(0, n, backward, jnp.zeros_like(B))


@functools.partial(jax.jit, static_argnames=("lambdas", "train", "val"))
def fit_ridge(
    stats: NormalEquations,
    mask: jax.Array | None = None,
    lambdas=DEFAULT_LAMBDAS,
    train: int = 0,
    val: int = 1,
) -> RidgeFit:
    """Ridge readout on the features where ``mask`` (F,) is 1, lam chosen on ``val`` per target.

    ``nmse`` of the result holds every split's NMSE at the chosen lam.
    """
    st = _split(stats, train)
    n_feat = st.G.shape[0]
    m = jnp.ones((n_feat,), st.G.dtype) if mask is None else jnp.asarray(mask, st.G.dtype)
    mu = st.s / st.n
    zbar = st.zs / st.n
    C = st.G - st.n * jnp.outer(mu, mu)
    c = st.h - st.n * mu[:, None] * zbar[None, :]
    # Masked-out features: zero coupling, unit diagonal, zero right-hand side -> zero weights.
    C = C * jnp.outer(m, m) + jnp.diag(1 - m)
    c = c * m[:, None]
    scale = jnp.trace(C) / n_feat  # lam is relative to the mean feature variance times n
    lams = jnp.asarray(lambdas, st.G.dtype)
    eye = jnp.eye(n_feat, dtype=C.dtype)

    def solve(lam):  # one Cholesky per lam: far cheaper than eigh on XLA:CPU, batches well
        w = spd_solve(C + lam * scale * eye, c)
        w = w * m[:, None]
        return w, zbar - mu @ w

    ws, bs = jax.vmap(solve)(lams)  # (L, F, Z), (L, Z)
    val_err = jax.vmap(lambda w, b: nmse(stats, val, w, b))(ws, bs)  # (L, Z)
    best = jnp.argmin(jnp.where(jnp.isfinite(val_err), val_err, jnp.inf), axis=0)  # (Z,)
    w = jnp.take_along_axis(ws, best[None, None, :], 0)[0]
    b = jnp.take_along_axis(bs, best[None, :], 0)[0]
    errs = jnp.stack([nmse(stats, i, w, b) for i in range(stats.n.shape[0])])
    return RidgeFit(w=w, b=b, lam=lams[best], nmse=errs)


def predict(fit: RidgeFit, f: jax.Array) -> jax.Array:
    """z_hat (T, Z) from features f (T, F)."""
    return f @ fit.w + fit.b


def shapley_values(value, n_players: int) -> jax.Array:
    """Exact Shapley values (n_players,) of a game ``value(mask) -> scalar``, mask (n,) 0/1.

    phi_i = sum over S not containing i of |S|! (n - |S| - 1)! / n! [v(S + i) - v(S)];
    they sum to v(all) - v(empty) (efficiency). ``value`` is called once per coalition.
    """
    coalitions = [frozenset(c) for r in range(n_players + 1)
                  for c in itertools.combinations(range(n_players), r)]
    v = {c: value(jnp.asarray([float(j in c) for j in range(n_players)])) for c in coalitions}
    fact = math.factorial
    phi = []
    for i in range(n_players):
        terms = [fact(len(c)) * fact(n_players - len(c) - 1) / fact(n_players) * (v[c | {i}] - v[c])
                 for c in coalitions if i not in c]
        phi.append(sum(terms))
    return jnp.stack(phi)
