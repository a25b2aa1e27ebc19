"""What the data pin down: the Fisher (Gauss-Newton) spectrum of the loss at the best fit and the
spread of the parameters over the restarts that converged.

Eigen-directions of the curvature with eigenvalue below ``sloppy_ratio`` times the largest are
"not pinned down by the data"; a parameter whose squared weight in that sloppy subspace exceeds
0.45 is listed as unidentified. See docs/fit.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from surrogate.fitting.model import FitParams, RawParams

__all__ = ["Curvature", "curvature", "parameter_names", "restart_spread"]

#: Labels of the raw coordinates in the reports (log B -> "B", ...).
_LABELS = {"log_B": "B", "log_K": "K", "log_spread": "omega_spread", "gain": "gain",
           "log_anchor": "anchor", "time_logits": "time"}


def parameter_names(raw: RawParams) -> tuple[str, ...]:
    """Names of the entries of ``raw`` in ``ravel_pytree`` order: ``B[0,1]``, ``gain[1]``, ..."""
    names = []
    for field in ("log_B", "log_K", "log_spread", "gain", "log_anchor", "time_logits"):
        arr = np.asarray(getattr(raw, field))
        for idx in np.ndindex(arr.shape):
            names.append(_LABELS[field] + (f"[{','.join(map(str, idx))}]" if idx else ""))
    return tuple(names)


@dataclasses.dataclass(frozen=True, eq=False)
class Curvature:
    """The Gauss-Newton Hessian of the loss in the trained raw coordinates ``names``:
    ``eigvals`` ascending, ``eigvecs`` columns; ``unidentified`` parameter names mostly inside
    the sloppy subspace; ``sloppy_directions`` readable sloppy eigenvectors."""

    eigvals: np.ndarray
    eigvecs: np.ndarray
    unidentified: tuple[str, ...]
    sloppy_directions: tuple[str, ...]


def curvature(jac: np.ndarray, names: tuple[str, ...], divergence: str,
              sloppy_ratio: float) -> Curvature:
    """Curvature analysis from the Jacobian (residuals, P) of the whitened residuals (for the KL
    divergence J^T J is the Fisher information of the row distributions; for "mse" the Hessian is
    2 J^T J)."""
    jac = np.asarray(jac, np.float64)  # J^T J overflows float32 for steep directions
    if not np.all(np.isfinite(jac)):
        raise ValueError("fit failed: the Jacobian at the best fit is not finite (the model "
                         "diverges there); try smaller initial couplings or a shorter horizon")
    hess = jac.T @ jac * (2.0 if divergence == "mse" else 1.0)
    hess = 0.5 * (hess + hess.T)
    evals, evecs = np.linalg.eigh(hess)
    top = max(float(np.abs(evals).max()), 1e-300)
    sloppy = np.flatnonzero(evals < sloppy_ratio * top)
    weight = (evecs[:, sloppy] ** 2).sum(1) if sloppy.size else np.zeros(len(names))
    unidentified = tuple(n for n, w in zip(names, weight, strict=False) if w > 0.45)
    directions = []
    for k in sloppy:
        v = evecs[:, k]
        parts = [f"{v[i]:+.2f} {'log ' if names[i][0] in 'BKoa' else ''}{names[i]}"
                 for i in np.argsort(-np.abs(v)) if abs(v[i]) >= 0.2]
        directions.append(f"eigenvalue {evals[k]:.2e} ({evals[k] / top:.1e} of max): "
                          + " ".join(parts))
    return Curvature(eigvals=evals, eigvecs=evecs, unidentified=unidentified,
                     sloppy_directions=tuple(directions))


def restart_spread(restart_params: FitParams, restart_loss: np.ndarray,
                   converged_within: float) -> tuple[np.ndarray, dict]:
    """``(converged (R,) bool, {name: std over the converged restarts})`` for B, K,
    omega_spread and gain; a restart has converged when its loss is at most 1.5 x the best +
    ``converged_within``. With one converged restart the spread is NaN (unknown)."""
    restart_loss = np.asarray(restart_loss)
    best = float(np.nanmin(np.where(np.isfinite(restart_loss), restart_loss, np.inf)))
    converged = np.isfinite(restart_loss) & (restart_loss <= 1.5 * best + converged_within)
    spread = {}
    for field in ("B", "K", "omega_spread", "gain", "anchor"):
        arr = np.asarray(getattr(restart_params, field))[converged]
        std = arr.std(0) if arr.shape[0] > 1 else np.full(arr.shape[1:], np.nan)
        spread[field] = np.asarray(std).tolist()
    return converged, spread
