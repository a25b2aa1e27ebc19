"""Levenberg-Marquardt on every lane of a batch: the one damped Gauss-Newton routine of the fit
(the polish of the restarts, the re-optimisation along likelihood profiles)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

__all__ = ["Residuals", "levenberg_marquardt"]

#: ``residuals(x)`` for raw vectors x (n, T): residuals e (n, d), their Jacobian (n, d, T) and
#: a pytree of per-lane arrays (leading axis n) kept for the accepted points.
Residuals = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, object]]
#: ``values(x)``: the residuals and the pytree without the Jacobian.
Values = Callable[[np.ndarray], tuple[np.ndarray, object]]


def levenberg_marquardt(residuals: Residuals, x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                        steps: int, free: np.ndarray | None = None,
                        lam: np.ndarray | None = None, values: Values | None = None):
    """``steps`` steps minimising sum e^2 on every lane of ``x`` (n, T) within the box
    ``lo``/``hi`` (T,), over the coordinates ``free`` (n, T) bool (default all): Marquardt's
    diagonal scaling, damping ``lam`` (n,) (default 1e-2) x0.3 on success, x10 on failure; a lane
    whose sum is not finite stays put. With ``values``, candidates are evaluated without their
    Jacobian and the starting point's is kept (the chord method: one Jacobian per call, each
    further step at the cost of a residual). Returns (x, sum e^2 (n,), lam, aux) at the
    accepted points."""
    x = np.array(x, np.float64)
    free = np.ones(x.shape, bool) if free is None else free
    lam = np.full(x.shape[0], 1e-2) if lam is None else np.array(lam, np.float64)
    e, j, aux = residuals(x)
    chi = np.sum(e ** 2, -1)
    chi = np.where(np.isfinite(chi), chi, np.inf)
    for _ in range(steps):
        cand = x.copy()
        for r in range(x.shape[0]):
            f = np.flatnonzero(free[r])
            if not np.isfinite(chi[r]) or f.size == 0:
                continue
            a = j[r][:, f].T @ j[r][:, f]
            g = j[r][:, f].T @ e[r]
            damped = a + lam[r] * np.diag(np.diag(a) + 1e-12)
            try:
                cand[r, f] = np.clip(x[r, f] + np.linalg.solve(damped, -g), lo[f], hi[f])
            except np.linalg.LinAlgError:
                lam[r] *= 10
        if values is None:
            e_new, j_new, aux_new = residuals(cand)
        else:
            (e_new, aux_new), j_new = values(cand), j
        new = np.sum(e_new ** 2, -1)
        ok = np.isfinite(new) & np.all(np.isfinite(j_new), (1, 2)) & (new < chi)
        x = np.where(ok[:, None], cand, x)
        chi = np.where(ok, new, chi)
        e = np.where(ok[:, None], e_new, e)
        j = np.where(ok[:, None, None], j_new, j)
        aux = jax.tree.map(
            lambda n, o, ok=ok: np.where(ok.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
            aux_new, aux)
        lam = np.where(ok, lam * 0.3, lam * 10)
    return x, chi, lam, aux
