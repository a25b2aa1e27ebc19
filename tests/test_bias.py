"""Bias metrics: gradients of dominance, cross-modal share and the observer's Shapley difference
against central finite differences (float64); simplex projection; the balancing search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from lorenz.bias import fixed_ridge_nmse, shapley_difference
from lorenz.data import Splits, lorenz_series
from surrogate.bias import (
    Couplings,
    Window,
    balance_couplings,
    couplings_of,
    cross_share_metric,
    dominance_metric,
    project_simplex,
    sensitivity,
    sensitivity_table,
)

F64 = jnp.float64
WINDOW = Window(dt=0.05, n_steps=40, n_burn=20)


@pytest.fixture(scope="module")
def system():
    ts = jnp.linspace(0.0, 3.0, 61, dtype=F64)
    drive = sg.make_drive(ts, jnp.stack([jnp.sin(1.7 * ts), jnp.cos(0.9 * ts)], -1))
    sur = sg.paper_preset(jax.random.key(0), 0.8, 0.3, sizes=(8, 8), k=4, cross_density=0.3,
                          drive=drive, dtype=F64)
    theta0 = sg.initial_phases(jax.random.key(1), sur.network.n, F64)
    c = Couplings(B=jnp.asarray([[0.9, 0.4], [0.2, 0.7]], F64),
                  K=jnp.asarray([[0.8, 0.5], [0.3, 1.1]], F64),
                  gain=jnp.asarray([0.6, 1.3], F64))
    return sur, theta0, c


def central_differences(f, c: Couplings, h=1e-6):
    flat = np.concatenate([np.ravel(c.B), np.ravel(c.K), np.ravel(c.gain)])
    m = c.gain.shape[0]

    def unflat(x):
        x = jnp.asarray(x, F64)
        return Couplings(B=x[: m * m].reshape(m, m), K=x[m * m: 2 * m * m].reshape(m, m),
                         gain=x[2 * m * m:])

    cols = []
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = h
        cols.append((np.asarray(f(unflat(flat + e))) - np.asarray(f(unflat(flat - e)))) / (2 * h))
    return np.stack(cols, -1)


def test_metric_gradients_match_central_differences(system):
    """The sensitivity table (forward mode) of dominance and cross-modal share against central
    differences; reverse mode agrees."""
    sur, theta0, c = system
    metrics = {"D_01": lambda cc: dominance_metric(cc, sur, theta0, WINDOW),
               "cross": lambda cc: cross_share_metric(cc, sur, theta0, WINDOW)}
    names, rows, values = sensitivity_table(metrics, c)
    assert list(rows) == ["D_01", "cross[0]", "cross[1]"]
    assert names[:2] == ("B[0,0]", "B[0,1]") and names[-1] == "gain[1]" and len(names) == 10
    fd = {"D_01": central_differences(jax.jit(metrics["D_01"]), c)}
    fd["cross[0]"], fd["cross[1]"] = central_differences(jax.jit(metrics["cross"]), c)
    for key, row in rows.items():
        assert np.abs(row).max() > 1e-3 and np.all(np.isfinite(row)), key
        np.testing.assert_allclose(row, fd[key], rtol=1e-6, atol=1e-8, err_msg=key)
    grad = jax.jit(jax.grad(metrics["D_01"]))(c)
    np.testing.assert_allclose(np.concatenate([np.ravel(grad.B), np.ravel(grad.K),
                                               np.ravel(grad.gain)]), rows["D_01"], rtol=1e-9,
                               atol=1e-12)
    assert abs(values["D_01"] - float(np.log(1))) > 1e-3  # an asymmetric system: D != 0


def test_shapley_difference_gradient_matches_central_differences():
    splits = Splits(washout=20, train=120, val=20, test=60)
    series = lorenz_series(splits, sample_every=2, dtype=F64)
    sur = sg.paper_preset(jax.random.key(3), 0.5, 0.2, sizes=(6, 6), k=4, cross_density=0.3,
                          dtype=F64)
    theta0 = sg.initial_phases(jax.random.key(4), sur.network.n, F64)
    c = couplings_of(sur).replace(K=jnp.asarray([[0.6, 0.3], [0.1, 0.4]], F64),
                                  gain=jnp.asarray([1.0, 0.8], F64))
    metric = jax.jit(lambda cc: shapley_difference(cc, sur, theta0, series, splits, lam=1e-3,
                                                   block=20))
    value = float(metric(c))
    assert np.isfinite(value) and value != 0
    jac = np.asarray(jax.jit(lambda cc: sensitivity(metric, cc))(c))
    fd = central_differences(metric, c, h=1e-5)
    assert np.abs(jac).max() > 1e-3
    # Finite differences of a ridge NMSE carry the roundoff of the normal equations: the
    # tolerance is relative to the largest derivative (measured error 3e-7 of it).
    np.testing.assert_allclose(jac, fd, rtol=0, atol=3e-6 * np.abs(jac).max())


def test_fixed_ridge_matches_closed_form():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 6))
    z = f[:, :1] * 2 - f[:, 3:4] + 0.1 * rng.normal(size=(300, 1))
    split = np.repeat([0, 1, 2], [200, 50, 50])
    from lorenz.readout import normal_equations

    stats = normal_equations(jnp.asarray(f), jnp.asarray(z), jnp.asarray(split))
    idx = np.array([0, 3, 4])
    tr = f[:200][:, idx]
    mu, zbar = tr.mean(0), z[:200].mean()
    C = (tr - mu).T @ (tr - mu)
    lam = 1e-2
    w = np.linalg.solve(C + lam * np.trace(C) / 3 * np.eye(3), (tr - mu).T @ (z[:200, 0] - zbar))
    pred = (f[250:][:, idx] - mu) @ w + zbar
    ref = np.mean((pred - z[250:, 0]) ** 2) / np.var(z[250:, 0])
    np.testing.assert_allclose(fixed_ridge_nmse(stats, idx, lam), ref, rtol=1e-10)


def test_project_simplex():
    x = jnp.asarray([[0.9, -0.3], [2.0, 0.1]], F64)
    y = project_simplex(x, 2.0, floor=0.01)
    assert abs(float(y.sum()) - 2.0) < 1e-12 and float(y.min()) >= 0.01 - 1e-15
    # the projection is the closest such point: brute force over random points of the face
    z = 0.01 + (2.0 - 4 * 0.01) * np.random.default_rng(0).dirichlet(np.ones(4), 20000)
    d_best = np.linalg.norm(np.asarray(x).ravel() - z, axis=1).min()
    assert float(jnp.linalg.norm(x - y)) <= d_best + 1e-12
    # by hand: x - floor has support {0.89, 1.99} on the simplex of sum 1.96, tau = 0.46
    np.testing.assert_allclose(y, [[0.44, 0.01], [1.54, 0.01]], atol=1e-14)
    np.testing.assert_allclose(project_simplex(y, 2.0, 0.01), y, atol=1e-14)  # idempotent
    assert project_simplex(x.astype(jnp.float32), 2.0, 0.01).dtype == jnp.float32
    z = project_simplex(jnp.asarray([0.5, 0.5, 1.0], F64), 2.0)
    np.testing.assert_allclose(z, [0.5, 0.5, 1.0], atol=1e-14)  # already on the simplex


def test_balance_couplings_reduces_dominance_at_fixed_totals(system):
    sur, theta0, c = system
    metric = lambda cc: dominance_metric(cc, sur, theta0, WINDOW)  # noqa: E731
    path = balance_couplings(metric, c, fields=("B", "K"), steps=25, learning_rate=0.05)
    d = np.asarray(path.value)
    assert d.shape == (26,) and abs(d[-1]) < 0.2 * abs(d[0])
    np.testing.assert_allclose(np.asarray(path.couplings.B).sum((1, 2)), float(c.B.sum()),
                               atol=1e-12)
    np.testing.assert_allclose(np.asarray(path.couplings.K).sum((1, 2)), float(c.K.sum()),
                               atol=1e-12)
    np.testing.assert_allclose(path.couplings.gain, np.broadcast_to(c.gain, (26, 2)))


def test_window_checks():
    with pytest.raises(ValueError, match="n_burn"):
        Window(n_steps=10, n_burn=10)
    with pytest.raises(ValueError, match="fields"):
        balance_couplings(lambda c: c.B.sum(), Couplings(jnp.ones((2, 2)), jnp.ones((2, 2)),
                                                         jnp.ones(2)), fields=("omega",))
