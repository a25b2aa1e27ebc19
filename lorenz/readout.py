"""Ridge readout from sufficient statistics, and the two-player Shapley values.

A linear readout z_hat = w . f + b is fitted by ridge regression. Everything it needs is in the
*normal equations* of each split, accumulated as features stream past (nothing stored over time):

    G = sum_t f_t f_t^T  (F, F),   h = sum_t f_t z_t  (F, Z),   s = sum_t f_t  (F,),
    zz = sum_t z_t^2  (Z,),        zs = sum_t z_t  (Z,),         n = number of samples.

``fit_ridge`` is the project's one ridge readout (the observer planes, the baselines and the
forecasters call it). It computes in NumPy float64 whatever the process-wide JAX flags: the
readout is fitted on the train split with the features centred (the bias is not penalised),
w = (C + lam scale I)^-1 c with C = G - n mu mu^T, c = h - n mu zbar, scale = tr C / F, for every
lam of ``LAMBDAS`` at once from one eigendecomposition of C. lam is chosen per target by the
validation NMSE; a choice at either end of the grid is flagged (``RidgeFit.edge``). The NMSE of
a split comes from its statistics as the mean squared residual about the split's own means,
sum (r - rbar)^2 + n rbar^2 with r = w.f + b - z, which cancels far less than the raw quadratic
form. NMSE = mean((z_hat - z)^2) / var(z), per target.

Leaves may carry leading batch axes (points, replications): ``fit_ridge`` broadcasts over them.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "NormalEquations",
    "normal_equations",
    "accumulate",
    "RidgeFit",
    "fit_ridge",
    "nmse",
    "predict",
    "shapley2",
    "LAMBDAS",
    "stats_dtype",
    "one_blas_thread",
]

#: Regularisation grid (relative to the mean feature variance times n): wide enough that the
#: choice is interior on the experiment's data (an edge choice is flagged).
LAMBDAS = tuple(10.0 ** k for k in range(-16, 3))


def stats_dtype():
    """float64 when JAX has x64 enabled, else float32: the dtype of the streamed JAX statistics
    of ``lorenz.observer.observer_statistics`` (the differentiable path of ``lorenz.bias``)."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


@struct.dataclass
class NormalEquations:
    """Sufficient statistics of least squares for S splits, F features, Z targets (module doc);
    leaves may have leading batch axes."""

    G: jax.Array  # (..., S, F, F)
    h: jax.Array  # (..., S, F, Z)
    s: jax.Array  # (..., S, F)
    zz: jax.Array  # (..., S, Z)
    zs: jax.Array  # (..., S, Z)
    n: jax.Array  # (..., S)

    @classmethod
    def zeros(cls, n_splits: int, n_features: int, n_targets: int, dtype=jnp.float32):
        z = lambda *shape: jnp.zeros(shape, dtype)  # noqa: E731
        return cls(G=z(n_splits, n_features, n_features), h=z(n_splits, n_features, n_targets),
                   s=z(n_splits, n_features), zz=z(n_splits, n_targets),
                   zs=z(n_splits, n_targets), n=z(n_splits))

    @classmethod
    def from_gram(cls, gram: np.ndarray, n_targets: int) -> NormalEquations:
        """Statistics from the Gram matrix (..., S, F + 1 + Z, F + 1 + Z) of [f, 1, z]."""
        f = gram.shape[-1] - 1 - n_targets
        return cls(G=gram[..., :f, :f], h=gram[..., :f, f + 1:], s=gram[..., :f, f],
                   zz=np.diagonal(gram[..., f + 1:, f + 1:], axis1=-2, axis2=-1),
                   zs=gram[..., f, f + 1:], n=gram[..., f, f])


def accumulate(stats: NormalEquations, split: jax.Array, f: jax.Array, z: jax.Array,
               ) -> NormalEquations:
    """Add samples f (T, F), z (T, Z) with split ids ``split`` (T,) (-1: skip) to ``stats``
    (JAX, traceable: the streamed statistics of ``observer_statistics``)."""
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


def one_blas_thread():
    """A context in which NumPy's BLAS runs on one thread (``threadpoolctl``, scoped): the host
    statistics are many small products, and OpenBLAS threads waiting for each other on a
    shared 2-core machine burned 10x the CPU time of one thread (measured: 4.6 against 44
    GFLOP/s per CPU second). Without threadpoolctl, a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def normal_equations(f, z, split, n_splits: int = 3) -> NormalEquations:
    """float64 NumPy statistics of stored features f (T, F), targets z (T, Z), split ids (T,)
    (-1: skipped), one matrix product of [f, 1, z] per split."""
    f, z, split = np.asarray(f, np.float64), np.asarray(z, np.float64), np.asarray(split)
    x = np.concatenate([f, np.ones((f.shape[0], 1)), z], -1)
    gram = np.stack([x[split == k].T @ x[split == k] for k in range(n_splits)])
    return NormalEquations.from_gram(gram, z.shape[-1])


@dataclasses.dataclass(frozen=True)
class RidgeFit:
    """A fitted readout (NumPy float64; leading batch axes ``...`` as the statistics'):
    weights (..., F, Z), bias (..., Z), chosen lam (..., Z), NMSE per split (..., S, Z),
    ``edge`` (..., Z): lam at an end of the grid."""

    w: np.ndarray
    b: np.ndarray
    lam: np.ndarray
    nmse: np.ndarray
    edge: np.ndarray


def _split_nmse(st: NormalEquations, w, b):
    """(..., L, S, Z) NMSE per split of z_hat = f w + b for L readouts w (..., L, F, Z),
    b (..., L, Z): the residual r = w.f + b - z about its split mean, plus n times that mean
    squared."""
    n = st.n[..., None, :, None]  # (..., 1, S, 1)
    mu = st.s / st.n[..., None]  # (..., S, F)
    zbar = st.zs / st.n[..., None]  # (..., S, Z)
    C = st.G - st.n[..., None, None] * mu[..., :, None] * mu[..., None, :]
    c = st.h - st.n[..., None, None] * mu[..., :, None] * zbar[..., None, :]
    vz = (st.zz - st.n[..., None] * zbar ** 2)[..., None, :, :]  # (..., 1, S, Z) n var(z)
    lz = w.shape[-3] * w.shape[-1]
    wl = np.swapaxes(w, -3, -2).reshape(w.shape[:-3] + (w.shape[-2], lz))  # (..., F, L Z)
    cw = C @ wl[..., None, :, :]  # (..., S, F, L Z): one matrix product per split
    sse_c = np.sum(wl[..., None, :, :] * (cw - 2 * np.tile(c, w.shape[-3])), -2)
    sse_c = np.swapaxes(sse_c.reshape(sse_c.shape[:-1] + (w.shape[-3], w.shape[-1])), -3, -2)
    sse_c = sse_c + vz  # (..., L, S, Z)
    rbar = (mu[..., None, :, :] @ w) + b[..., :, None, :] - zbar[..., None, :, :]
    return np.maximum(sse_c, 0) / vz + n * rbar ** 2 / vz


def fit_ridge(stats: NormalEquations, features=None, lambdas=LAMBDAS, train: int = 0,
              val: int = 1) -> RidgeFit:
    """Ridge readout on the feature indices ``features`` (default all), lam chosen on ``val``
    per target from ``lambdas``; float64 NumPy whatever the inputs' dtype (module doc).

    Weights of features outside ``features`` are 0. ``nmse`` holds every split's NMSE at the
    chosen lam.
    """
    with one_blas_thread():
        return _fit_ridge(stats, features, lambdas, train, val)


def _fit_ridge(stats, features, lambdas, train, val) -> RidgeFit:
    st = jax.tree.map(lambda x: np.asarray(x, np.float64), stats)
    n_feat = st.G.shape[-1]
    idx = np.arange(n_feat) if features is None else np.asarray(features, int)
    sub = NormalEquations(G=st.G[..., idx[:, None], idx], h=st.h[..., idx, :],
                          s=st.s[..., idx], zz=st.zz, zs=st.zs, n=st.n)
    axis = st.n.ndim - 1  # the split axis
    tr = jax.tree.map(lambda x: np.take(x, train, axis), sub)
    mu, zbar = tr.s / tr.n[..., None], tr.zs / tr.n[..., None]
    C = tr.G - tr.n[..., None, None] * mu[..., :, None] * mu[..., None, :]
    c = tr.h - tr.n[..., None, None] * mu[..., :, None] * zbar[..., None, :]
    scale = np.trace(C, axis1=-2, axis2=-1) / idx.size  # (...)
    e, V = np.linalg.eigh(C)
    a = np.swapaxes(V, -1, -2) @ c  # (..., F, Z)
    lams = np.asarray(lambdas, np.float64)
    den = e[..., None, :, None] + lams[:, None, None] * scale[..., None, None, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ws = V[..., None, :, :] @ (a[..., None, :, :] / den)  # (..., L, F, Z)
        bs = zbar[..., None, :] - np.einsum("...f,...lfz->...lz", mu, ws)
        errs = _split_nmse(sub, ws, bs)  # (..., L, S, Z)
    v = errs[..., val, :]
    best = np.argmin(np.where(np.isfinite(v), v, np.inf), axis=-2)  # (..., Z)
    take = lambda x: np.take_along_axis(x, best[..., None, None, :], -3)[..., 0, :, :]  # noqa
    w_sub = take(ws)
    w = np.zeros(w_sub.shape[:-2] + (n_feat, w_sub.shape[-1]))
    w[..., idx, :] = w_sub
    b = np.take_along_axis(bs, best[..., None, :], -2)[..., 0, :]
    return RidgeFit(w=w, b=b, lam=lams[best], nmse=take(errs),
                    edge=(best == 0) | (best == lams.size - 1))


def nmse(stats: NormalEquations, split: int, w: jax.Array, b: jax.Array) -> jax.Array:
    """(Z,) NMSE of z_hat = f w + b on one split, from its statistics alone (JAX, traceable:
    the differentiable fixed-lam readout of ``lorenz.bias``)."""
    st = jax.tree.map(lambda x: x[split], stats)
    n = st.n
    # sum (w.f + b - z)^2 = w'Gw + 2 b w's + n b^2 - 2 w'h - 2 b zs + zz
    sse = (jnp.einsum("fz,fg,gz->z", w, st.G, w) + 2 * b * (w.T @ st.s) + n * b * b
           - 2 * jnp.einsum("fz,fz->z", w, st.h) - 2 * b * st.zs + st.zz)
    var = st.zz / n - (st.zs / n) ** 2
    return jnp.maximum(sse, 0) / (n * var)


def predict(fit: RidgeFit, f) -> np.ndarray:
    """z_hat (..., T, Z) from features f (..., T, F)."""
    return np.asarray(f, np.float64) @ fit.w + fit.b[..., None, :]


def shapley2(v_x, v_y, v_xy, v_empty=0.0) -> np.ndarray:
    """Exact two-player Shapley values (..., 2) = (phi_X, phi_Y) of a game with values v({X}),
    v({Y}), v({X, Y}), v({}): phi_X = [(v_X - v_0) + (v_XY - v_Y)] / 2; they sum to
    v_XY - v_0 (efficiency)."""
    v_x, v_y, v_xy = (np.asarray(v, np.float64) for v in (v_x, v_y, v_xy))
    phi_x = 0.5 * ((v_x - v_empty) + (v_xy - v_y))
    phi_y = 0.5 * ((v_y - v_empty) + (v_xy - v_x))
    return np.stack([phi_x, phi_y], -1)
