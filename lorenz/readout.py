"""Ridge readout from sufficient statistics, and the two-player Shapley values.

A linear readout z_hat = w . f + b is fitted by ridge regression. Everything it needs is in the
*normal equations* of each split, accumulated as features stream past (nothing stored over time):

    G = sum_t f_t f_t^T  (F, F),   h = sum_t f_t z_t  (F, Z),   s = sum_t f_t  (F,),
    zz = sum_t z_t^2  (Z,),        zs = sum_t z_t  (Z,),         n = number of samples.

``ridge`` is the project's one ridge readout, written once for NumPy and JAX statistics:
``fit_ridge`` (lam validated; the observer planes, the baselines and the forecasters call it) and
``lorenz.bias.fixed_ridge_nmse`` (lam fixed, differentiable) run it. ``fit_ridge`` computes in
NumPy float64 whatever the process-wide JAX flags: the readout is fitted on the train split
with the features centred (the bias is not penalised),
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
    "ridge",
    "spd_solve",
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


def _namespace(x):
    """jax.numpy for JAX arrays (and tracers), else NumPy: the ridge below is written once for
    both."""
    return jnp if isinstance(x, jax.Array) else np


def _centred(st: NormalEquations):
    """Feature and target means mu (..., S, F), zbar (..., S, Z) and the centred statistics
    C = G - n mu mu^T (..., S, F, F), c = h - n mu zbar^T (..., S, F, Z) (NumPy or JAX)."""
    mu = st.s / st.n[..., None]
    zbar = st.zs / st.n[..., None]
    C = st.G - st.n[..., None, None] * mu[..., :, None] * mu[..., None, :]
    c = st.h - st.n[..., None, None] * mu[..., :, None] * zbar[..., None, :]
    return mu, zbar, C, c


def _split_nmse(st: NormalEquations, w, b):
    """(..., L, S, Z) NMSE per split of z_hat = f w + b for L readouts w (..., L, F, Z),
    b (..., L, Z): the residual r = w.f + b - z about its split mean, plus n times that mean
    squared (NumPy or JAX)."""
    xp = _namespace(w)
    n = st.n[..., None, :, None]  # (..., 1, S, 1)
    mu, zbar, C, c = _centred(st)
    vz = (st.zz - st.n[..., None] * zbar ** 2)[..., None, :, :]  # (..., 1, S, Z) n var(z)
    lz = w.shape[-3] * w.shape[-1]
    wl = xp.swapaxes(w, -3, -2).reshape(w.shape[:-3] + (w.shape[-2], lz))  # (..., F, L Z)
    cw = C @ wl[..., None, :, :]  # (..., S, F, L Z): one matrix product per split
    sse_c = xp.sum(wl[..., None, :, :] * (cw - 2 * xp.tile(c, w.shape[-3])), -2)
    sse_c = xp.swapaxes(sse_c.reshape(sse_c.shape[:-1] + (w.shape[-3], w.shape[-1])), -3, -2)
    sse_c = sse_c + vz  # (..., L, S, Z)
    rbar = (mu[..., None, :, :] @ w) + b[..., :, None, :] - zbar[..., None, :, :]
    return xp.maximum(sse_c, 0) / vz + n * rbar ** 2 / vz


def spd_solve(A: jax.Array, B: jax.Array) -> jax.Array:
    """x = A^-1 B for a symmetric positive definite A (F, F), B (F, Z): Gauss-Jordan elimination
    of [A | B] in plain XLA ops (one loop of rank-1 updates; no pivoting, which a positive
    definite A does not need); derivatives by the implicit rule dx = A^-1 (dB - dA x), not
    through the loop.

    Not ``jnp.linalg.solve`` or ``cho_solve``: jaxlib's CPU LAPACK kernels split a batch over
    XLA's intra-op thread pool and block until it is done, so two of them running at once (one
    per CPU device of a sharded run, or independent calls in one program, as the coalitions of
    ``lorenz.bias``) can wait for each other forever on a 2-core machine.
    """
    n = A.shape[0]

    def solve(_, b):
        def eliminate(k, m):  # row k scaled to a unit pivot, column k cleared in the others
            row = m[k] / m[k, k]
            return (m - m[:, k, None] * row[None, :]).at[k].set(row)

        m = jax.lax.fori_loop(0, n, eliminate, jnp.concatenate([A, b], -1))
        return m[:, n:]

    return jax.lax.custom_linear_solve(lambda x: A @ x, B, solve, symmetric=True)


def ridge(stats: NormalEquations, idx: np.ndarray, lambdas, train: int = 0):
    """The ridge readout, written once: on the feature indices ``idx`` (static int array),
    fitted on the split ``train`` with the features centred (the bias not penalised),
    w = (C + lam scale I)^-1 c, scale = tr C / F, for every lam of ``lambdas``.

    Returns (ws (..., L, F', Z), bs (..., L, Z), nmse (..., L, S, Z)) with F' = idx.size. NumPy
    statistics: float64 on the host, every lam from one eigendecomposition of C (``fit_ridge``).
    JAX statistics: traceable and smooth in the statistics, one ``spd_solve`` per lam, no batch
    axes (the differentiable fixed-lam readout of ``lorenz.bias``)."""
    xp = _namespace(stats.G)
    sub = NormalEquations(G=stats.G[..., idx[:, None], idx], h=stats.h[..., idx, :],
                          s=stats.s[..., idx], zz=stats.zz, zs=stats.zs, n=stats.n)
    axis = stats.n.ndim - 1  # the split axis
    tr = jax.tree.map(lambda x: xp.take(x, train, axis), sub)
    mu, zbar, C, c = _centred(tr)
    scale = xp.trace(C, axis1=-2, axis2=-1) / idx.size  # (...)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if xp is np:
            e, V = np.linalg.eigh(C)
            a = np.swapaxes(V, -1, -2) @ c  # (..., F, Z)
            lams = np.asarray(lambdas, np.float64)
            den = e[..., None, :, None] + lams[:, None, None] * scale[..., None, None, None]
            ws = V[..., None, :, :] @ (a[..., None, :, :] / den)  # (..., L, F, Z)
        else:
            eye = jnp.eye(idx.size, dtype=C.dtype)
            ws = jax.vmap(lambda lam: spd_solve(C + lam * scale * eye, c))(
                jnp.asarray(lambdas, C.dtype))
        bs = zbar[..., None, :] - xp.einsum("...f,...lfz->...lz", mu, ws)
        errs = _split_nmse(sub, ws, bs)  # (..., L, S, Z)
    return ws, bs, errs


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
    ws, bs, errs = ridge(st, idx, lambdas, train)
    lams = np.asarray(lambdas, np.float64)
    v = errs[..., val, :]
    best = np.argmin(np.where(np.isfinite(v), v, np.inf), axis=-2)  # (..., Z)
    take = lambda x: np.take_along_axis(x, best[..., None, None, :], -3)[..., 0, :, :]  # noqa
    w_sub = take(ws)
    w = np.zeros(w_sub.shape[:-2] + (n_feat, w_sub.shape[-1]))
    w[..., idx, :] = w_sub
    b = np.take_along_axis(bs, best[..., None, :], -2)[..., 0, :]
    return RidgeFit(w=w, b=b, lam=lams[best], nmse=take(errs),
                    edge=(best == 0) | (best == lams.size - 1))


def predict(fit: RidgeFit, f) -> np.ndarray:
    """z_hat (..., T, Z) from features f (..., T, F)."""
    return np.asarray(f, np.float64) @ fit.w + fit.b[..., None, :]


def shapley2(v_x, v_y, v_xy, v_empty=0.0):
    """Exact two-player Shapley values (..., 2) = (phi_X, phi_Y) of a game with values v({X}),
    v({Y}), v({X, Y}), v({}): phi_X = [(v_X - v_0) + (v_XY - v_Y)] / 2; they sum to
    v_XY - v_0 (efficiency). NumPy float64, or JAX (traceable) when ``v_xy`` is a JAX array."""
    xp = _namespace(v_xy)
    if xp is np:
        v_x, v_y, v_xy = (np.asarray(v, np.float64) for v in (v_x, v_y, v_xy))
    phi_x = 0.5 * ((v_x - v_empty) + (v_xy - v_y))
    phi_y = 0.5 * ((v_y - v_empty) + (v_xy - v_x))
    return xp.stack([phi_x, phi_y], -1)
