"""Profile-likelihood intervals (surrogate.fitting.intervals) on models with known answers: a
linear Gaussian model, where the profile interval is exact (x_hat_j +- sqrt(q [(A^T A)^-1]_jj))
and covers the truth in 90 % of data draws, and a direction that is flat toward the box."""

import numpy as np
import pytest

from surrogate.fitting import intervals as iv

L, M = 8, 2


def linear_model(a):
    """lin(x): the prediction (n, L, M, M) whose free shares (column 0 of every row) are A x,
    and its Jacobian (n, L, M, M, P)."""
    d = L * M

    def lin(x):
        n = x.shape[0]
        free = x @ a.T                                          # (n, d)
        pred = np.zeros((n, L, M, M))
        pred[..., 0] = free.reshape(n, L, M)
        pred[..., 1] = 1 - pred[..., 0]
        jac = np.zeros((n, L, M, M, a.shape[1]))
        jac[..., 0, :] = np.broadcast_to(a.reshape(L, M, -1), (n, L, M, a.shape[1]))
        jac[..., 1, :] = -jac[..., 0, :]
        return pred, jac

    assert a.shape[0] == d
    return lin


def fixed_noise(lin, sd):
    """score(x): the prediction and a whitening with noise sd ``sd`` on every free share, at
    every point."""
    keep = np.zeros((L, M, M), bool)
    keep[..., 0] = True

    def score(x):
        n = x.shape[0]
        inv_chol = np.repeat(np.eye(L * M)[None] / sd, n, 0)
        return lin(x)[0], iv.Whitening(keep=keep, inv_chol=inv_chol, sd=np.full((n, L, M, M), sd))
    return score


def test_linear_gaussian_profile_is_exact_and_covers_at_its_level():
    """A linear model with Gaussian noise: the profile interval is the exact one, marginal
    intervals cover one coordinate and simultaneous ones (chi2_3) all three in 90 % of 200
    data draws (binomial sd 4.2), as does the likelihood-ratio test of the truth (its joint
    region); the misfit r^T Sigma^-1 r is chi2_(d - 3) (its p-value below 0.1 in 10 % of draws)
    and flags data the model cannot follow; a coordinate without effect gets the whole box."""
    rng = np.random.default_rng(0)
    p, sd = 3, 0.02
    a = rng.normal(0, 1, (L * M, p)) / 4
    lin = linear_model(a)
    score = fixed_noise(lin, sd)
    lo, hi = np.full(p, -30.0), np.full(p, 30.0)
    q1, q3 = iv.threshold(0.9, False, p), iv.threshold(0.9, True, p)
    assert q1 == pytest.approx(2.7055, abs=1e-4) and q3 == pytest.approx(6.2514, abs=1e-4)
    truth = np.array([0.3, -0.2, 0.1])
    cov = np.linalg.inv(a.T @ a / sd ** 2)
    marginal = joint = region = misfit = 0
    n = 200
    for i in range(n):
        data, _ = lin(truth[None])
        data[0, ..., 0] += rng.normal(0, sd, (L, M))
        prof = iv.profile_likelihood(lin, score, np.zeros(p), np.arange(p), np.arange(p), lo,
                                     hi, data[0], q3, center_steps=5, steps=2)
        # the likelihood-ratio test of the truth (as surrogate.fitting.deviance computes it)
        pred, white = score(truth[None])
        region += iv.deviance_of(pred, data[0], white)[0] - prof.minimum <= q3
        assert prof.dof == L * M - p
        misfit += prof.misfit_p < 0.1
        low1, high1 = prof.bounds(q1, lo, hi)
        low3, high3 = prof.bounds(q3, lo, hi)
        if i < 3:  # the exact intervals of the linear model
            for q, low, high in ((q1, low1, high1), (q3, low3, high3)):
                half = np.sqrt(q * np.diag(cov))
                np.testing.assert_allclose(low, prof.center - half, atol=3e-3 * half.max())
                np.testing.assert_allclose(high, prof.center + half, atol=3e-3 * half.max())
        marginal += low1[0] <= truth[0] <= high1[0]
        joint += np.all((low3 <= truth) & (truth <= high3))
    for count in (marginal, joint, region, n - misfit):
        assert abs(count - 0.9 * n) <= 3 * np.sqrt(n * 0.09)
    # a planted misfit: data off the model's range by 8 sd in one direction it cannot follow
    off = np.linalg.svd(a, full_matrices=True)[0][:, -1].reshape(L, M)
    data, _ = lin(truth[None])
    data[0, ..., 0] += 8 * sd * off + rng.normal(0, sd, (L, M))
    prof = iv.profile_likelihood(lin, score, np.zeros(p), np.arange(p), np.arange(p), lo, hi,
                                 data[0], q3, center_steps=5, steps=2)
    assert prof.misfit > 30 and prof.misfit_p < 1e-3
    # the third coordinate without effect: its interval is the box, the others are unchanged
    a0 = a.copy()
    a0[:, 2] = 0
    lin0 = linear_model(a0)
    data, _ = lin0(truth[None])
    prof = iv.profile_likelihood(lin0, fixed_noise(lin0, sd), np.zeros(p), np.arange(p),
                                 np.arange(p), lo, hi, data[0], q1, center_steps=5, steps=2)
    low, high = prof.bounds(q1, lo, hi)
    assert low[2] == lo[2] and high[2] == hi[2]
    assert np.all(np.abs(low[:2] - truth[:2]) < 1)


def test_nuisance_coordinate_is_profiled_out():
    """Profiling two of three coordinates, the third re-optimised at every point (by chord
    steps): the bounds are the exact ones of the linear model (the marginal covariance,
    q = chi2_2), and the profile records the two coordinates only."""
    rng = np.random.default_rng(2)
    p, sd = 3, 0.02
    a = rng.normal(0, 1, (L * M, p)) / 4
    a[:, 2] += a[:, 0]  # the nuisance correlated with the first coordinate
    lin = linear_model(a)
    data, _ = lin(np.array([[0.3, -0.2, 0.1]]))
    data[0, ..., 0] += rng.normal(0, sd, (L, M))
    lo, hi = np.full(p, -30.0), np.full(p, 30.0)
    q2 = iv.threshold(0.9, True, 2)
    prof = iv.profile_likelihood(lin, fixed_noise(lin, sd), np.zeros(p), np.arange(p),
                                 np.arange(2), lo, hi, data[0], q2, center_steps=5, steps=2,
                                 predict=lambda x: lin(x)[0])  # chord steps
    assert prof.deviance.shape[:2] == (2, 2)
    low, high = prof.bounds(q2, lo[:2], hi[:2])
    half = np.sqrt(q2 * np.diag(np.linalg.inv(a.T @ a / sd ** 2))[:2])
    np.testing.assert_allclose(low, prof.center[:2] - half, atol=3e-3 * half.max())
    np.testing.assert_allclose(high, prof.center[:2] + half, atol=3e-3 * half.max())


def test_low_rank_noise_whitened_on_its_principal_directions_is_calibrated():
    """Realization noise in 3 of 16 directions (its scale growing with theta, the rest 1e-7
    jitter), as the attention's is: the noise basis has rank 3, the Pearson term at the truth
    averages k = 3 over 200 data draws (Hartlap-corrected inverse), and the likelihood-ratio
    test of the truth on a grid of theta rejects it in 10 % of draws at level 0.9 (binomial
    sd 2.1 %). A covariance over all 16 entries must invent the variance of the 13 directions
    the noise does not move; its log det then does not match the data."""
    rng = np.random.default_rng(5)
    d = L * M
    factor = rng.normal(0, 1, (d, 3)) * [1.0, 0.3, 0.1]
    shift = rng.normal(0, 1, d) * 0.01
    z_held, jitter = rng.normal(0, 1, (64, 3)), rng.normal(0, 1, (64, d))
    weight = np.ones((L, M))

    def shares(v):  # free shares (..., d) -> rows (..., L, M, M)
        out = np.empty(v.shape[:-1] + (L, M, M))
        out[..., 0] = v.reshape(v.shape[:-1] + (L, M))
        out[..., 1] = 1 - out[..., 0]
        return out

    def draws(t):  # 64 held-out realizations at theta = t: noise sd 0.01 e^t
        return shares(0.3 + t * shift + 0.01 * np.exp(t) * z_held @ factor.T + 1e-7 * jitter)

    grid = np.linspace(-1.5, 1.5, 301)
    basis = iv.noise_basis(draws(0.0), weight)
    assert basis.shape == (d, 3)
    whites = [iv.whitening(draws(t), weight, 10**9, basis) for t in grid]
    preds = shares(0.3 + grid[:, None] * shift)
    q, truth = iv.threshold(0.9, False, 1), int(np.argmin(np.abs(grid)))
    rejected, pearson, n = 0, [], 200
    for _ in range(n):
        data = shares(0.3 + 0.01 * factor @ rng.normal(0, 1, 3) + 1e-7 * rng.normal(0, 1, d))
        dev = np.array([iv.deviance_of(p[None], data, w)[0] for p, w in zip(preds, whites,
                                                                             strict=True)])
        rejected += dev[truth] - dev.min() > q
        pearson.append(np.sum(whites[truth].residuals(data, preds[truth]) ** 2))
    assert abs(np.mean(pearson) - 3) < 0.6
    assert abs(rejected - 0.1 * n) <= 3 * np.sqrt(n * 0.09)
    with pytest.raises(ValueError, match="held-out realizations"):
        iv.whitening(draws(0.0)[:5], weight, 4, basis)


def test_noise_fisher_separates_flat_coordinates():
    """The linearised sd is the inverse Fisher information's diagonal where the information
    is full; a coordinate without effect gets an infinite sd, and the others keep theirs
    (not infected by the round-off weight of the flat direction)."""
    rng = np.random.default_rng(3)
    jac = rng.normal(0, 1, (40, 3))
    np.testing.assert_allclose(iv.noise_fisher(jac), np.sqrt(np.diag(np.linalg.inv(jac.T @ jac))),
                               rtol=1e-10)
    flat = np.concatenate([jac[:, :2], np.zeros((40, 1))], 1)
    sd = iv.noise_fisher(flat)
    assert np.isinf(sd[2])
    np.testing.assert_allclose(sd[:2], np.sqrt(np.diag(np.linalg.inv(jac[:, :2].T @ jac[:, :2]))),
                               rtol=1e-8)


def test_bounds_hold_every_point_found_inside_the_region():
    """A profile that missed a basin: coordinate 0's upper half-line crosses q at offset 1,
    but a point of coordinate 1's profile lies inside the region with coordinate 0 at 3; the
    projection of the region holds it, so the upper bound of coordinate 0 is 3."""
    nan = np.nan
    offsets = np.array([[[1.0, 2.0], [1.0, 2.0]], [[1.0, 2.0], [1.0, 2.0]]])
    deviance = np.array([[[9.0, nan], [9.0, nan]], [[9.0, nan], [1.0, 9.0]]])
    points = np.zeros((2, 2, 2, 2))
    points[0, 0, :, 0], points[0, 1, :, 0] = -1.0, 1.0      # coordinate 0's own half-lines
    points[1, 0, :, 1], points[1, 1, :, 1] = -1.0, [1.0, 2.0]
    points[1, 1, 0, 0] = 3.0                                   # inside, coordinate 0 at 3
    prof = iv.Profiles(center=np.zeros(2), minimum=0.0, coords=np.arange(2), offsets=offsets,
                       deviance=deviance, points=points)
    box = np.full(2, -30.0), np.full(2, 30.0)
    low, high = prof.bounds(4.0, *box)
    # interpolated in sqrt(rise): from 0 at offset 0 to 3 at offset 1, 2 is crossed at 2/3
    np.testing.assert_allclose(low, [-2 / 3, -2 / 3])
    np.testing.assert_allclose(high, [3.0, 1.0 + 1 / 2])


def test_a_point_with_more_noise_does_not_pass_for_a_good_fit():
    """Noise that grows with the coordinate: far from the truth the prediction misses the data
    by a small fraction of its own sd, so r^T Sigma^-1 r alone (Pearson's) would accept every
    point, but the log det of the covariance puts them outside the region: the interval stays
    near the truth."""
    p, sd0 = 1, 0.01
    lin = linear_model(np.full((L * M, p), 0.05))
    keep = np.zeros((L, M, M), bool)
    keep[..., 0] = True

    def score(x):
        n, sd = x.shape[0], sd0 * (1 + 40 * np.abs(x[:, 0]))
        inv_chol = np.eye(L * M)[None] / sd[:, None, None]
        return lin(x)[0], iv.Whitening(keep=keep, inv_chol=inv_chol,
                                       sd=np.broadcast_to(sd[:, None, None, None], (n, L, M, M)))

    data = lin(np.zeros((1, p)))[0][0]
    q = iv.threshold(0.9, False, 1)
    pred, white = score(np.array([[4.0]]))
    assert float(np.sum(white.residuals(data, pred) ** 2)) < q   # Pearson's accepts it
    pred0, white0 = score(np.zeros((1, p)))
    rise = iv.deviance_of(pred, data, white) - iv.deviance_of(pred0, data, white0)
    assert float(rise[0]) > 10 * q                                   # the likelihood does not
    lo, hi = np.full(p, -30.0), np.full(p, 30.0)
    prof = iv.profile_likelihood(lin, score, np.zeros(p), np.arange(p), np.arange(p), lo, hi,
                                 data, q, center_steps=5, steps=2)
    low, high = prof.bounds(q, lo, hi)
    assert -0.1 < low[0] < 0 < high[0] < 0.1
