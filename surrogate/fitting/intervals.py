"""Parameter intervals that reflect realization noise: profile-likelihood intervals under the
covariance of the attention across realizations.

The data of a fit are one draw of attention (one network for a bundle the surrogate wrote, one
model run for a real bundle); the fitted model is the mean over R realizations. The free shares
(the first M - 1 entries of every weighted row; the last is 1 minus their sum) vary across
realizations in a few directions only: at 50 + 50 oscillators and 8 layers, 9 of 16 carry
variance above 1e-4 of the largest, since a realization's offset persists across layers. The
deviance is the Gaussian likelihood of the residual's projection on those principal directions
(``noise_basis``, taken once from ``held_out`` realizations at the fit, from keys the fit never
saw, and fixed: D is then the likelihood of one statistic of the data at every theta). At
theta the same held-out keys give the covariance S(theta) of one draw's projection, scaled by
1 + 1/R for the Monte Carlo error of the R-realization mean. With r(theta) the projected data
minus the model,

    D(theta) = r^T Sigma(theta)^-1 r + log det Sigma(theta),      Sigma = (1 + 1/R) S(theta),

is -2 log of the Gaussian likelihood (up to a constant), with the noise of theta itself (the
realization noise grows with the couplings, by 3x in sd from couplings 1 to 20 at 50 + 50
oscillators, so a covariance fixed at the fit would hold a strongly coupled truth to the noise
of a weakly coupled fit; and without the log det, Pearson's r^T Sigma^-1 r alone, a point with
more noise would pass for a good fit). Over all d free shares, a covariance estimate must
invent the variance of the directions the realizations do not move (a shrinkage estimate did),
and its log det then rewarded low-noise points without a matching Pearson term: the study's
truths (1, 1) and (0.5, 0.5) fell outside their 90 % regions. The held-out keys are the same at
every theta, so differences of D are smooth.

The interval of a coupling theta_j (an entry of log B or log K: the parameters of interest)
is the set of values whose profile min_{theta_-j} D (every other coordinate re-optimised: the
nuisance parameters spread, gains, anchor and time logits profiled out) rises above min D by at
most q: chi2_k(level) for simultaneous intervals (the default: the projection of the joint
region of all k couplings, every coupling inside at once with probability >= level),
chi2_1(level) for marginal ones. Each profile is traced outward from the minimum at the offsets
``OFFSETS`` (within the box ``POSITIVE_BOX``), the other coordinates re-optimised by a few
Levenberg-Marquardt steps warm-started from the previous offset (with the covariance of that
offset, then scored with its own); the crossing of q gets one more point, and the bound is
interpolated in sqrt(D - min D) (linear for a quadratic profile). A profile that stays below q
up to the box (a direction flat toward 0) gives the box's bound: every bound is finite. The 2 k
half-lines run side by side. The nuisance parameters get linearised intervals: +- sqrt(q) times
their sd under the same noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy.stats import chi2

from surrogate.fitting.levenberg import levenberg_marquardt
from surrogate.fitting.model import FitParams, RawParams

__all__ = ["Intervals", "Profiles", "Score", "Whitening", "constrained_table", "deviance_of",
           "noise_basis", "noise_fisher", "profile_likelihood", "threshold", "whitening"]


#: Offsets (raw units) at which a profile is evaluated, outward from the minimum: doubling from
#: 1/4 to the far side of the box (a log coupling spans 13.8); the crossing is then refined.
OFFSETS = 2.0 ** np.arange(-2, 5)


@dataclasses.dataclass(frozen=True, eq=False)
class Intervals:
    """Profile-likelihood intervals: ``low``/``high`` {B, K, omega_spread, gain, anchor: array}
    at ``level`` (``simultaneous``: all coordinates at once); ``profiled`` the names of the
    profiled raw coordinates; ``threshold`` the deviance increase q; ``profiles`` the traced
    profiles (in the order of ``profiled``);
    ``draws`` held-out realizations behind the noise covariance, ``basis`` (d, k) the noise's
    principal directions the deviance is computed on; ``noise_sd`` (L, M, M)
    realization sd of the attention at the fit; ``fisher_sd`` (P,) linearised sd of the raw
    coordinates under the same noise."""

    low: dict
    high: dict
    level: float
    simultaneous: bool
    threshold: float
    profiled: tuple[str, ...]
    profiles: Profiles
    draws: int
    basis: np.ndarray
    noise_sd: np.ndarray
    fisher_sd: np.ndarray

    def to_json(self) -> dict:
        return {name: {"low": np.asarray(self.low[name]).tolist(),
                       "high": np.asarray(self.high[name]).tolist(), "level": self.level}
                for name in self.low}


@dataclasses.dataclass(frozen=True, eq=False)
class Whitening:
    """The free shares of the weighted rows and their whitening: ``keep`` (L, M, M) bool the
    entries in the residual vector (d of them), ``basis`` (d, k) the noise's principal
    directions the residual is projected on (None: all d entries), ``inv_chol`` (k, k) with
    D = |inv_chol basis^T r|^2, ``sd`` (L, M, M) the per-entry realization sd of one draw."""

    keep: np.ndarray
    inv_chol: np.ndarray
    sd: np.ndarray
    basis: np.ndarray | None = None

    @property
    def logdet(self) -> np.ndarray:
        """log det Sigma (per lane; ``inv_chol`` is the inverse of its Cholesky factor)."""
        return -2 * np.log(np.abs(np.diagonal(self.inv_chol, axis1=-2, axis2=-1))).sum(-1)

    def residuals(self, data: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Whitened residuals (..., k) of predictions (..., L, M, M)."""
        r = (data - pred)[..., self.keep]
        if self.basis is not None:
            r = r @ self.basis
        return np.einsum("...ij,...j->...i", self.inv_chol, r)

    def jacobian(self, jac: np.ndarray) -> np.ndarray:
        """Whitened Jacobian (..., k, P) of the residuals from the prediction's
        (..., L, M, M, P)."""
        j = jac[..., self.keep, :]
        if self.basis is not None:
            j = np.einsum("jk,...jp->...kp", self.basis, j)
        return -np.einsum("...ij,...jp->...ip", self.inv_chol, j)

    def lanes(self, run: np.ndarray) -> Whitening:
        """The whitening of the lanes ``run`` (when ``inv_chol`` has a lane axis)."""
        if self.inv_chol.ndim == 2:
            return self
        return dataclasses.replace(self, inv_chol=self.inv_chol[run], sd=self.sd[run])


#: A principal direction of the realization noise enters the deviance when its variance is at
#: least this fraction of the largest (the rest is rounding and Monte Carlo dust).
RANK_FLOOR = 1e-4


def _kept(draws: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The free-share mask (L, M, M) and the draws' free shares (D, d)."""
    m = draws.shape[-1]
    keep = np.broadcast_to(np.asarray(weight)[..., None] > 0, draws.shape[1:]).copy()
    keep[..., m - 1] = False
    return keep, draws[:, keep]


def noise_basis(draws: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The principal directions (d, k) of the free shares' covariance across the realizations
    ``draws`` (D, L, M, M): those with variance >= ``RANK_FLOOR`` x the largest, at most D // 3
    of them (so that their covariance is estimated well from D draws)."""
    x = _kept(np.asarray(draws, np.float64), weight)[1]
    evals, evecs = np.linalg.eigh(np.cov(x.T, ddof=1).reshape(x.shape[1], x.shape[1]))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    k = int(np.sum(evals >= RANK_FLOOR * max(evals[0], 1e-300)))
    return evecs[:, :max(1, min(k, x.shape[0] // 3))]


def whitening(draws: np.ndarray, weight: np.ndarray, realizations: int,
              basis: np.ndarray) -> Whitening:
    """The whitening of the residuals from ``draws`` ([n,] D, L, M, M), the attention of D
    held-out realizations (at n parameter points), for rows of ``weight`` (L, M) > 0, projected
    on ``basis`` (d, k) (``noise_basis``), for a model averaging ``realizations`` R draws:
    Sigma = (1 + 1/R) S, S the sample covariance of the projected draws, its inverse scaled by
    (D - k - 2) / (D - 1) (Hartlap et al. 2007: unbiased, so that r^T Sigma^-1 r is about
    chi2_k at the truth)."""
    draws = np.asarray(draws, np.float64)
    if draws.ndim == 5:
        each = [whitening(d, weight, realizations, basis) for d in draws]
        return Whitening(keep=each[0].keep, inv_chol=np.stack([w.inv_chol for w in each]),
                         sd=np.stack([w.sd for w in each]), basis=basis)
    keep, x = _kept(draws, weight)
    n, k = x.shape[0], basis.shape[1]
    if n < k + 3:
        raise ValueError(f"{n} held-out realizations cannot whiten {k} noise directions "
                         f"(need at least {k + 3})")
    cov = np.cov((x @ basis).T, ddof=1).reshape(k, k) * (1 + 1 / realizations)
    floor = 1e-12 * max(float(np.trace(cov)) / k, 1e-300)
    chol = np.linalg.cholesky(cov + floor * np.eye(k))
    inv_chol = np.linalg.inv(chol) * np.sqrt((n - k - 2) / (n - 1))
    return Whitening(keep=keep, inv_chol=inv_chol, sd=draws.std(0, ddof=1), basis=basis)


def noise_fisher(jac_w: np.ndarray, flat: float = 1e-10, weight: float = 1e-3) -> np.ndarray:
    """Linearised standard deviations (P,) of the raw coordinates from the whitened Jacobian
    (d, P) (D = |e|^2 = -2 log L, so the Fisher information is J^T J): the diagonal of its
    pseudo-inverse over the directions of information above ``flat`` x the largest; a
    coordinate with squared weight above ``weight`` on the flat directions (a coupling parked at
    the box floor, where the attention no longer depends on it) gets an infinite sd."""
    info = jac_w.T @ jac_w
    evals, evecs = np.linalg.eigh(0.5 * (info + info.T))
    top = max(float(evals.max()), 1e-300)
    ok = evals > flat * top
    w2 = evecs ** 2
    var = (w2[:, ok] / evals[ok]).sum(1)
    return np.where(w2[:, ~ok].sum(1) > weight, np.inf, np.sqrt(var))


@dataclasses.dataclass(frozen=True, eq=False)
class Profiles:
    """Traced profiles: ``center`` (P_all,) the deviance minimiser in the flat raw coordinates,
    ``minimum`` its deviance; per profiled coordinate ``coords`` (C,) (flat index) and side
    (0: down, 1: up), ``offsets`` (C, 2, K) the raw offsets reached in increasing order (NaN,
    last, where not evaluated), ``deviance`` (C, 2, K) the profile there and ``points``
    (C, 2, K, C) the profiled coordinates of the point that gave it. ``misfit`` r^T Sigma^-1 r
    at the center and ``dof`` its degrees of freedom (noise directions minus trained
    coordinates): about chi2_dof where the model class holds the data."""

    center: np.ndarray
    minimum: float
    coords: np.ndarray
    offsets: np.ndarray
    deviance: np.ndarray
    points: np.ndarray
    misfit: float = np.nan
    dof: int = 0

    @property
    def misfit_p(self) -> float:
        """P(chi2_dof >= misfit): small where the model cannot fit the data (the intervals
        then do not mean what they say)."""
        return float(chi2.sf(self.misfit, self.dof)) if self.dof > 0 else np.nan

    def bounds(self, threshold: float, low: np.ndarray, high: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) raw bounds (C,) where the profile rises by ``threshold``; a side that
        never rises so far runs to ``low``/``high`` (C,), the box. Every traced point whose
        deviance is within ``threshold`` of the minimum lies in the region, so the bounds are
        widened to hold its coordinates (the projection of the region holds them: a profile
        that missed a basin another profile found)."""
        out = []
        root = np.sqrt(threshold)
        for side, edge in ((0, low), (1, high)):
            b = edge.astype(np.float64).copy()
            for c in range(len(self.coords)):
                off = np.concatenate([[0.0], self.offsets[c, side]])
                rise = np.concatenate([[0.0], self.deviance[c, side] - self.minimum])
                ok = np.isfinite(off)
                off, rise = off[ok], rise[ok]
                over = np.flatnonzero(~(rise <= threshold))  # NaN deviance counts as over
                if over.size == 0:
                    continue
                k = over[0]
                r0 = np.sqrt(max(rise[k - 1], 0.0))
                r1 = np.sqrt(rise[k]) if np.isfinite(rise[k]) else np.inf
                frac = 0.0 if not np.isfinite(r1) else (root - r0) / max(r1 - r0, 1e-300)
                step = off[k - 1] + frac * (off[k] - off[k - 1])
                b[c] = self.center[self.coords[c]] + (step if side else -step)
            out.append(b)
        inside = self.deviance - self.minimum <= threshold                  # (C, 2, K)
        found = self.points[inside]                                           # (n, C)
        if found.size:
            out = [np.minimum(out[0], found.min(0)), np.maximum(out[1], found.max(0))]
        return out[0], out[1]


Linearize = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Predict = Callable[[np.ndarray], np.ndarray]
Score = Callable[[np.ndarray], tuple[np.ndarray, Whitening]]


def _lm(lin: Linearize, x: np.ndarray, free: np.ndarray, lo: np.ndarray, hi: np.ndarray,
        data: np.ndarray, white: Whitening, steps: int, lam: np.ndarray,
        predict: Predict | None = None):
    """Levenberg-Marquardt on the deviance of every lane of ``x`` (n, T) over the coordinates
    ``free`` (n, T) bool, the whitening held fixed; with ``predict`` the chord method (the
    Jacobian of the start). Returns (x, deviance (n,), lam)."""
    def residuals(x):
        pred, jac = lin(x)
        return white.residuals(data, pred), white.jacobian(jac), ()

    def values(x):
        return white.residuals(data, predict(x)), ()

    x, dev, lam, _ = levenberg_marquardt(residuals, x, lo, hi, steps, free, lam,
                                         None if predict is None else values)
    return x, dev, lam


def deviance_of(pred: np.ndarray, data: np.ndarray, white: Whitening) -> np.ndarray:
    """-2 log of the Gaussian likelihood (up to a constant): r^T Sigma^-1 r + log det Sigma."""
    d = np.sum(white.residuals(data, pred) ** 2, -1) + white.logdet
    return np.where(np.isfinite(d), d, np.nan)


def _pad(lanes: np.ndarray) -> np.ndarray:
    """``lanes`` padded to a power of two with copies of its first: a few compiled lane
    counts."""
    return np.concatenate([lanes, np.full((1 << (lanes.size - 1).bit_length()) - lanes.size,
                                          lanes[0])])


def profile_likelihood(lin: Linearize, score: Score, x0: np.ndarray, trained: np.ndarray,
                       profiled: np.ndarray, lo: np.ndarray, hi: np.ndarray, data: np.ndarray,
                       threshold: float, center_steps: int = 5, steps: int = 2,
                       restart: np.ndarray | None = None,
                       progress: Callable[[str], None] | None = None,
                       predict: Predict | None = None) -> Profiles:
    """Trace the deviance profiles of the coordinates ``profiled`` (flat indices into the raw
    vector x0 (P_all,)), the other ``trained`` coordinates (indices) re-optimised. ``lin(x)``
    maps raw vectors (n, P_all) to the prediction (n, L, M, M) and its Jacobian
    (n, L, M, M, T) with respect to x[:, trained]; ``score(x)`` gives the prediction and the
    whitening of the realization noise at each of them (lane axis first), so that the deviance
    r^T Sigma(theta)^-1 r + log det Sigma(theta) is the Gaussian likelihood with the noise of
    theta itself; ``lo``/``hi``
    (T,) the box of the trained coordinates.

    Each profile point takes ``steps`` Levenberg-Marquardt steps with the whitening of the
    point before it, then is scored with its own; given ``predict(x)`` (the prediction
    (n, L, M, M) alone), these steps are chord steps (one Jacobian per point). Each half-line
    stops once its profile exceeds the minimum by ``threshold`` or reaches the box. A point
    that would end a half-line is first re-optimised from ``restart`` (P_all,) as well (its
    profiled coordinate set; ``steps`` steps, then 2 x ``steps`` chord steps), and the lower
    deviance kept: warm starts cannot leave a coordinate parked at the box floor, where the
    attention no longer depends on it and its gradient is 0 (the profile then jumps above q
    while a valley below q lies elsewhere). Last, every half-line that crossed gets one more
    point between its last point inside and the first outside, where the sqrt(rise)
    interpolation puts the crossing (warm-started from the point inside).
    ``progress(message)`` is called after the minimum and each round of points."""
    trained = np.asarray(trained)
    pos = {int(t): i for i, t in enumerate(trained)}
    say = progress or (lambda _: None)

    def full(x):  # raw vectors (n, P_all) from the trained coordinates (n, T)
        out = np.broadcast_to(x0, (x.shape[0], x0.size)).copy()
        out[:, trained] = x
        return out

    def lin_t(x):
        return lin(full(x))

    chord = None if predict is None else (lambda x: predict(full(x)))

    # the minimum: Levenberg-Marquardt with the noise of the fit, then with that of the result
    xc = x0[trained][None]
    for _ in range(2):
        white = score(full(xc))[1]
        xc, _, _ = _lm(lin_t, xc, np.ones((1, trained.size), bool), lo, hi, data, white,
                       center_steps, np.full(1, 1e-2))
    pred, white_c = score(full(xc))
    dmin = float(deviance_of(pred, data, white_c)[0])
    res_c = white_c.residuals(data, pred)
    misfit, dof = float(np.sum(res_c ** 2)), res_c.shape[-1] - trained.size
    xc = xc[0]
    c = len(profiled)
    n = 2 * c
    say(f"profile: minimum deviance {dmin:.4g}; tracing {n} half-lines to a rise of "
        f"{threshold:.3g}")
    lanes = np.array([pos[int(p)] for p in profiled for _ in (0, 1)])
    signs = np.tile([-1.0, 1.0], c)
    free = np.ones((n, trained.size), bool)
    free[np.arange(n), lanes] = False
    edge = np.where(signs < 0, lo[lanes], hi[lanes])
    x = np.tile(xc, (n, 1))
    white = dataclasses.replace(white_c, inv_chol=np.repeat(white_c.inv_chol, n, 0),
                                sd=np.repeat(white_c.sd, n, 0))
    k_all = OFFSETS.size + 1  # the traced offsets and the refinement point
    offsets = np.full((n, k_all), np.nan)
    deviance = np.full((n, k_all), np.nan)
    cols = np.array([pos[int(p)] for p in profiled])  # the profiled coordinates among trained
    points = np.full((n, k_all, c), np.nan)
    active = np.ones(n, bool)
    lam = np.full(n, 1e-2)
    rows = np.arange(n)
    inside = x.copy(), np.zeros(n), np.zeros(n), white.inv_chol.copy()  # x, offset, rise, whitening
    crossed = np.full(n, -1)  # the column where each half-line crossed
    for k, off in enumerate(OFFSETS):
        if not active.any():
            break
        target = np.clip(xc[lanes] + signs * off, lo[lanes], hi[lanes])
        x[rows, lanes] = np.where(active, target, x[rows, lanes])
        run = np.flatnonzero(active)
        pad = _pad(run)
        xr, _, lam_r = _lm(lin_t, x[pad], free[pad], lo, hi, data, white.lanes(pad), steps,
                           lam[pad], chord)
        pred, own = score(full(xr))
        m = run.size
        x[run], lam[run] = xr[:m], lam_r[:m]
        white.inv_chol[run], white.sd[run] = own.inv_chol[:m], own.sd[:m]
        offsets[run, k] = np.abs(target[run] - xc[lanes[run]])
        deviance[run, k] = deviance_of(pred[:m], data, own.lanes(np.arange(m)))
        over = np.flatnonzero(active & ~(deviance[:, k] - dmin <= threshold))
        if restart is not None and over.size:
            # two starts per point: the fit's, and the fit's with every profiled coordinate at
            # the point's value (a basin where the couplings move together)
            starts = np.concatenate([over, over])
            pad = _pad(starts)
            xs = np.tile(np.asarray(restart, np.float64)[trained], (pad.size, 1))
            xs[np.arange(pad.size), lanes[pad]] = target[pad]
            uniform = np.arange(over.size, starts.size)
            xs[np.ix_(uniform, np.unique(lanes))] = target[over][:, None]
            xs, _, lam_s = _lm(lin_t, xs, free[pad], lo, hi, data, white.lanes(pad), steps,
                               np.full(pad.size, 1e-2))
            xs, _, _ = _lm(lin_t, xs, free[pad], lo, hi, data, white.lanes(pad), 2 * steps,
                           lam_s, chord)
            pred, alt = score(full(xs))
            m = starts.size
            d_alt = deviance_of(pred[:m], data, alt.lanes(np.arange(m)))
            d_alt = np.where(np.isfinite(d_alt), d_alt, np.inf)
            pick = np.where(d_alt[:over.size] <= d_alt[over.size:], 0, over.size)
            pick += np.arange(over.size)
            d_best = d_alt[pick]
            better = np.flatnonzero(d_best < np.where(np.isfinite(deviance[over, k]),
                                                      deviance[over, k], np.inf))
            if better.size:
                rows_b, src = over[better], pick[better]
                x[rows_b], deviance[rows_b, k] = xs[src], d_best[better]
                white.inv_chol[rows_b], white.sd[rows_b] = alt.inv_chol[src], alt.sd[src]
        points[run, k] = x[run][:, cols]
        rise = deviance[:, k] - dmin
        below = active & (rise <= threshold)
        inside[0][below], inside[1][below] = x[below], offsets[below, k]
        inside[2][below], inside[3][below] = rise[below], white.inv_chol[below]
        crossed[active & ~below] = k
        active &= below & (target != edge)
        say(f"profile: offset {off:g} of {OFFSETS[-1]:g}: {int(active.sum())} of {n} "
            f"half-lines still inside")
    # one more point per crossing, where sqrt(rise) interpolation between the last point inside
    # and the first outside puts it, warm-started from the point inside
    ref = np.flatnonzero(crossed >= 0)
    if ref.size:
        out_off, out_rise = offsets[ref, crossed[ref]], deviance[ref, crossed[ref]] - dmin
        r0 = np.sqrt(np.maximum(inside[2][ref], 0.0))
        frac = np.where(np.isfinite(out_rise),
                        (np.sqrt(threshold) - r0)
                        / np.maximum(np.sqrt(np.abs(out_rise)) - r0, 1e-300), 0.5)
        step = inside[1][ref] + np.clip(frac, 0.05, 0.95) * (out_off - inside[1][ref])
        pad = _pad(ref)
        target = xc[lanes[pad]] + signs[pad] * np.concatenate(
            [step, np.full(pad.size - ref.size, step[0])])
        xs = inside[0][pad].copy()
        xs[np.arange(pad.size), lanes[pad]] = target
        white_in = dataclasses.replace(white, inv_chol=inside[3]).lanes(pad)
        xs, _, _ = _lm(lin_t, xs, free[pad], lo, hi, data, white_in, steps + 1,
                       np.full(pad.size, 1e-2), chord)
        pred, own = score(full(xs))
        offsets[ref, -1] = step
        points[ref, -1] = xs[:ref.size][:, cols]
        deviance[ref, -1] = deviance_of(pred[:ref.size], data, own.lanes(np.arange(ref.size)))
        say(f"profile: refined {ref.size} crossings")
    # each half-line's points in the order of their offsets (the points not evaluated last)
    order = np.argsort(np.where(np.isfinite(offsets), offsets, np.inf), axis=1, kind="stable")
    offsets = np.take_along_axis(offsets, order, 1)
    deviance = np.take_along_axis(deviance, order, 1)
    points = np.take_along_axis(points, order[..., None], 1)
    center = x0.astype(np.float64).copy()
    center[trained] = xc
    # a profile point below the minimum found: the minimum is at most that
    found = np.nanmin(np.concatenate([[dmin], deviance.ravel()]))
    return Profiles(center=center, minimum=float(found), coords=np.asarray(profiled),
                    offsets=offsets.reshape(c, 2, -1), deviance=deviance.reshape(c, 2, -1),
                    points=points.reshape(c, 2, -1, c), misfit=misfit,
                    dof=dof)


def threshold(level: float, simultaneous: bool, dof: int) -> float:
    """The deviance increase q of a ``level`` interval: chi2_1 quantile, or chi2_dof for
    simultaneous intervals."""
    return float(chi2.ppf(level, dof if simultaneous else 1))


def constrained_table(lo_raw: RawParams, hi_raw: RawParams, params: FitParams, tied: bool
                      ) -> tuple[dict, dict]:
    """(low, high) {B, K, omega_spread, gain, anchor: arrays} from raw bounds: exp of the logs,
    gains as they are; zero width for the anchor of the unanchored model, K = B's when
    ``tied``."""
    low, high = {}, {}
    for name, field in (("B", "log_B"), ("K", "log_K"), ("omega_spread", "log_spread"),
                        ("anchor", "log_anchor"), ("gain", "gain")):
        lo = np.asarray(getattr(lo_raw, field), np.float64)
        hi = np.asarray(getattr(hi_raw, field), np.float64)
        if field.startswith("log_"):
            lo, hi = np.exp(lo), np.exp(hi)
        if name == "anchor" and float(np.asarray(params.anchor)) == 0:
            lo, hi = np.zeros_like(lo), np.zeros_like(hi)
        low[name], high[name] = lo, hi
    if tied:
        low["K"], high["K"] = low["B"], high["B"]
    return low, high
