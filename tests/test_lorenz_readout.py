"""Ridge readout from streamed statistics, Shapley values, data splits, VPT, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from lorenz.baselines import make_esn, observer_baselines
from lorenz.data import Splits, lorenz_series
from lorenz.forecast import valid_prediction_time
from lorenz.observer import features, modality_masks, observer_statistics, surrogate_features
from lorenz.readout import fit_ridge, normal_equations, predict, shapley2

F64 = jnp.float64
SPLITS = Splits(washout=200, train=1000, val=250, test=500)


def test_fit_ridge_is_float64_and_batches_over_leading_axes():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 300, 4)).astype(np.float32)
    z = rng.normal(size=(2, 300, 1))
    ids = np.repeat([0, 1, 2], [200, 50, 50])
    one = [fit_ridge(normal_equations(f[k], z[k], ids)) for k in range(2)]
    stats = [normal_equations(f[k], z[k], ids) for k in range(2)]
    both = fit_ridge(jax.tree.map(lambda *x: np.stack(x), *stats))
    assert both.w.dtype == np.float64 and both.nmse.shape == (2, 3, 1)
    for k in range(2):
        np.testing.assert_allclose(both.nmse[k], one[k].nmse, rtol=1e-12)
        assert both.lam[k, 0] == one[k].lam[0]


def test_readout_recovers_a_known_linear_map():
    key = jax.random.key(0)
    f = jax.random.normal(key, (600, 7), F64)
    w = jax.random.normal(jax.random.key(1), (7, 2), F64)
    b = jnp.asarray([0.3, -1.2], F64)
    z = f @ w + b[None, :]
    ids = jnp.repeat(jnp.asarray([-1, 0, 1, 2]), jnp.asarray([50, 350, 100, 100]))
    fit = fit_ridge(normal_equations(f, z, ids), lambdas=(1e-12, 1e-6, 1e-2))
    np.testing.assert_allclose(fit.w, w, atol=1e-8)
    np.testing.assert_allclose(fit.b, b, atol=1e-8)
    assert float(fit.nmse.max()) < 1e-14
    np.testing.assert_allclose(predict(fit, f), z, atol=1e-8)


def test_nmse_from_statistics_equals_direct_computation_and_lambda_is_chosen_on_validation():
    rng = np.random.default_rng(0)
    f = jnp.asarray(rng.normal(size=(800, 5)))
    z = jnp.asarray(np.sin(np.asarray(f) @ rng.normal(size=(5, 1)))
                    + 0.3 * rng.normal(size=(800, 1)))
    ids = jnp.repeat(jnp.asarray([0, 1, 2]), jnp.asarray([500, 150, 150]))
    stats = normal_equations(f, z, ids)
    lams = (1e-6, 1e-2, 1.0, 100.0)
    fit = fit_ridge(stats, lambdas=lams)
    zh = np.asarray(predict(fit, f))
    for split in range(3):
        sel = np.asarray(ids) == split
        direct = np.mean((zh[sel] - np.asarray(z)[sel]) ** 2) / np.var(np.asarray(z)[sel])
        assert float(fit.nmse[split, 0]) == pytest.approx(direct, rel=1e-10)
    val = [float(fit_ridge(stats, lambdas=(lam,)).nmse[1, 0]) for lam in lams]
    assert float(fit.lam[0]) == lams[int(np.argmin(val))]


def test_feature_subset_equals_fitting_on_the_subset():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(400, 6))
    z = rng.normal(size=(400, 1)) + f[:, :1] * 2
    ids = np.repeat([0, 1, 2], [250, 75, 75])
    idx = np.array([0, 2, 3])
    masked = fit_ridge(normal_equations(f, z, ids), idx)
    sub = fit_ridge(normal_equations(f[:, idx], z, ids))
    np.testing.assert_allclose(masked.w[idx], sub.w, atol=1e-10)
    assert np.all(masked.w[[1, 4, 5]] == 0)
    np.testing.assert_allclose(masked.nmse, sub.nmse, rtol=1e-8)


def test_shapley2_efficiency_and_formula():
    phi = shapley2(-0.7, -0.4, -0.1, -1.0)
    assert phi[0] == pytest.approx(0.5 * ((-0.7 + 1.0) + (-0.1 + 0.4)))
    assert phi.sum() == pytest.approx(-0.1 + 1.0)


def test_ridge_edge_is_flagged():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(300, 3))
    z = f @ np.ones((3, 1))  # noiseless: the smallest lam wins
    fit = fit_ridge(normal_equations(f, z, np.repeat([0, 1, 2], 100)), lambdas=(1e-8, 1e-4, 1))
    assert fit.lam[0] == 1e-8 and bool(fit.edge[0])


def test_lorenz_series_is_standardised_on_train():
    series = lorenz_series(SPLITS, sample_every=2, dtype=F64)
    train = np.asarray(series.u[SPLITS.slices()["train"]])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-10)
    assert series.u.shape == (SPLITS.total, 3) and series.delta == pytest.approx(0.02)
    raw = np.asarray(series.raw)
    assert raw[:, 2].min() > 0 and 20 < raw[:, 2].mean() < 27  # z lives above 0, mean ~ 23.5


def test_streamed_statistics_equal_stored_features():
    series = lorenz_series(SPLITS, sample_every=2, dtype=F64)
    sur = sg.paper_preset(jax.random.key(0), 0.5, 0.2, dtype=F64)
    theta0 = sg.initial_phases(jax.random.key(1), 100, F64)
    stats = observer_statistics(sur, theta0, series, SPLITS, block=64)  # pads past the end
    f = surrogate_features(sur, theta0, series)
    ref = normal_equations(f, series.u[:, 2:3], SPLITS.ids())
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-8)
    assert np.asarray(stats.n).tolist() == [1000, 250, 500]
    masks = modality_masks(sur.network)
    assert masks.shape == (2, 200) and (masks.sum(0) == 1).all()


def test_baselines_on_the_observer_task():
    """Documented range (measured, float64, seed-independent by symmetry): ridge on [x, y] has
    test NMSE 0.999-1.003 on three series; NG-RC 2.7e-3, ESN 6.3e-4 on this one."""
    series = lorenz_series(SPLITS, sample_every=2, dtype=F64)
    fits = observer_baselines(make_esn(jax.random.key(0), 100), series, SPLITS)
    assert 0.97 < float(fits["raw"].nmse[2, 0]) < 1.05
    assert float(fits["ngrc"].nmse[2, 0]) < 0.02
    assert float(fits["esn"].nmse[2, 0]) < 0.05


def test_feature_builders():
    assert features(jnp.zeros(3)).tolist() == [0, 0, 0, 1, 1, 1]


def test_valid_prediction_time():
    u = jnp.ones((100, 3))
    err = jnp.zeros((100, 3)).at[40:, 0].set(1.0)  # normalised error 1/sqrt(3) > 0.4 from 40 on
    vpt = float(valid_prediction_time(u, u + err, delta=0.1))
    assert vpt == pytest.approx(40 * 0.1 * 0.9056)
    assert float(valid_prediction_time(u, u, delta=0.1)) == pytest.approx(100 * 0.1 * 0.9056)


def test_bad_splits():
    with pytest.raises(ValueError, match="Splits.train"):
        Splits(train=1)
    with pytest.raises(ValueError, match="samples, splits need"):
        series = lorenz_series(SPLITS, dtype=F64)
        observer_statistics(sg.paper_preset(jax.random.key(0), dtype=F64), jnp.zeros(100), series,
                            Splits(washout=10, train=10, val=10, test=10))
