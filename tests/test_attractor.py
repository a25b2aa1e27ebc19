"""Attractor analysis: correlation dimension, recurrence quantification, phase clusters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from lorenz.systems import henon, iterate_map, lorenz63, rk4_trajectory
from surrogate.attractor import (
    correlation_dimension,
    correlation_sum,
    cross_population_locking,
    locking_clusters,
    locking_matrix,
    phase_clusters,
    recurrence_matrix,
    recurrence_quantification,
    synchrony,
)

# ----------------------------------------------------------------------------------------------
# Correlation dimension


def test_correlation_sum_matches_brute_force():
    x = np.asarray(jax.random.normal(jax.random.key(0), (301, 3)))
    radii = np.array([0.2, 0.5, 1.0, 2.0, 4.0])
    theiler = 3
    i, j = np.triu_indices(len(x), theiler + 1)
    d = np.linalg.norm(x[i] - x[j], axis=-1)
    expected = np.array([(d < r).sum() for r in radii])
    c, counts = correlation_sum(x, radii, theiler=theiler, block=64)  # 301: ragged last block
    np.testing.assert_array_equal(np.asarray(counts), expected)
    np.testing.assert_allclose(np.asarray(c), expected / len(d), rtol=1e-12)
    c0, _ = correlation_sum(x, radii)  # theiler 0: all distinct pairs
    np.testing.assert_allclose(np.asarray(c0), [(pdist(x) < r).mean() for r in radii], rtol=1e-12)


def test_correlation_dimension_lorenz():
    """Grassberger-Procaccia 1983: D2 = 2.05 +- 0.01 (here within 0.1 from 5000 points)."""
    ys = rk4_trajectory(lorenz63, jnp.array([1.0, 1.0, 1.0]), dt=0.01, n_steps=50_000,
                        transient=2000, save_every=10).ys
    res = jax.jit(lambda y: correlation_dimension(y, theiler=10))(ys)
    assert abs(float(res.dimension) - 2.05) < 0.1
    lo, hi = (float(v) for v in res.scaling_range)
    assert hi / lo > 5  # the automatic scaling region spans most of a decade at least
    assert float(res.spread) <= 0.05
    a, b = (int(v) for v in res.region)
    assert float(res.radii[a]) == lo and float(res.radii[b]) == hi
    assert int(res.pair_counts[a]) >= 500  # the region avoids the sparse small-r end
    assert float(res.correlation_sum[-1]) == pytest.approx(1.0, abs=1e-3)


def test_correlation_dimension_known_sets():
    key1, key2 = jax.random.split(jax.random.key(3))
    angle = jax.random.uniform(key1, (2000,), maxval=2 * jnp.pi)
    circle = jnp.stack([jnp.cos(angle), jnp.sin(angle), jnp.zeros_like(angle)], -1)
    assert abs(float(correlation_dimension(circle).dimension) - 1.0) < 0.05
    square = jax.random.uniform(key2, (3000, 2))
    assert abs(float(correlation_dimension(square).dimension) - 2.0) < 0.1
    # Henon attractor: D2 = 1.21 (Grassberger-Procaccia 1983)
    orbit = iterate_map(henon, jnp.array([0.1, 0.1]), n_steps=4000, transient=100)
    assert abs(float(correlation_dimension(orbit).dimension) - 1.21) < 0.05


def test_correlation_dimension_float32_and_errors():
    x = jax.random.uniform(jax.random.key(1), (1500, 2), dtype=jnp.float32)
    res = correlation_dimension(x)
    assert res.dimension.dtype == jnp.float32 and res.correlation_sum.dtype == jnp.float32
    assert abs(float(res.dimension) - 2.0) < 0.15
    with pytest.raises(ValueError, match="points"):
        correlation_dimension(jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="theiler"):
        correlation_sum(x[:10], jnp.array([0.1]), theiler=9)
    with pytest.raises(ValueError, match="radii"):
        correlation_dimension(x, jnp.array([0.1, 0.2]))


# ----------------------------------------------------------------------------------------------
# Recurrence quantification


def _runs(v):
    """Lengths of the runs of True in a 1-D bool array."""
    out, n = [], 0
    for b in list(v) + [False]:
        if b:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def _brute_force_rqa(r, l_min, v_min):
    t = r.shape[0]
    diag = sum(x for k in range(-t + 1, t) for x in _runs(np.diagonal(r, k)) if x >= l_min)
    vert = sum(x for j in range(t) for x in _runs(r[:, j]) if x >= v_min)
    return diag / r.sum(), vert / r.sum()


@pytest.mark.parametrize("theiler, l_min, v_min", [(0, 2, 2), (2, 3, 2), (0, 4, 3)])
def test_rqa_matches_brute_force(theiler, l_min, v_min):
    t = np.arange(220)
    key = jax.random.key(4)
    x = np.sin(0.3 * t) + 0.3 * np.asarray(jax.random.normal(key, (220,)))
    x[100:130] = 0.5  # a laminar stretch: vertical lines
    res = recurrence_quantification(x, 0.25, l_min=l_min, v_min=v_min, theiler=theiler)
    r = np.asarray(recurrence_matrix(x, 0.25, theiler=theiler))
    d = np.abs(x[:, None] - x[None, :])
    far = np.abs(t[:, None] - t[None, :]) > theiler
    np.testing.assert_array_equal(r, (d < 0.25) & far)
    det, lam = _brute_force_rqa(r, l_min, v_min)
    assert float(res.determinism) == pytest.approx(det, rel=1e-12)
    assert float(res.laminarity) == pytest.approx(lam, rel=1e-12)
    assert float(res.recurrence_rate) == pytest.approx(r.sum() / far.sum(), rel=1e-12)
    assert 0 < lam < 1 and 0 < det < 1


def test_rqa_periodic_vs_noise():
    t = jnp.arange(1000) * 0.05
    circle = jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
    periodic = recurrence_quantification(circle, 0.1, theiler=5)
    assert float(periodic.determinism) > 0.99
    noise = jax.random.normal(jax.random.key(5), (1000, 2))
    random = recurrence_quantification(noise, 0.3, theiler=5)
    # i.i.d. points: a recurrence continues along a diagonal only by chance (~ RR)
    assert float(random.determinism) < 0.2
    assert float(periodic.determinism) > 5 * float(random.determinism)
    with pytest.raises(ValueError, match="threshold"):
        recurrence_quantification(noise, -1.0)
    with pytest.raises(ValueError, match="l_min"):
        recurrence_quantification(noise, 0.3, l_min=0)


# ----------------------------------------------------------------------------------------------
# Phase clusters and locking


def _network(sizes):
    import surrogate as sg

    return sg.paper_preset(jax.random.key(0), sizes=sizes, k=2).network


def test_phase_clusters_known_groups():
    net = _network((6, 6))
    jitter = 0.01 * jax.random.normal(jax.random.key(6), (12,))
    # population 0: clusters at 0 (across the 0/2pi cut) and 2; population 1: at 2 and 4
    centres = jnp.array([0.0, 0, 0, 2, 2, 2, 2, 2, 4, 4, 4, 4])
    theta = centres + jitter + 2 * jnp.pi * jnp.array([0, 1, -1, 0, 0, 0, 3, 0, 0, 0, 0, 0])
    res = jax.jit(lambda th: phase_clusters(th, net))(theta)
    assert int(res.n_clusters) == 3
    np.testing.assert_array_equal(res.labels, [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(res.sizes[:4], [3, 5, 4, 0])
    np.testing.assert_array_equal(res.per_population, [2, 2])
    assert int(res.n_shared) == 1  # the cluster at phase 2 holds oscillators of both
    one = phase_clusters(jnp.full(5, 1.3))
    assert int(one.n_clusters) == 1 and one.per_population.shape == (1,)
    spread = phase_clusters(jnp.linspace(0, 2 * jnp.pi, 100, endpoint=False), tol=0.1)
    assert int(spread.n_clusters) == 1  # gaps 0.063 < tol all round the circle
    with pytest.raises(ValueError, match="oscillators"):
        phase_clusters(jnp.zeros(5), net)


def test_locking_clusters_and_cross_population_locking():
    net = _network((4, 4))
    t = jnp.linspace(0, 50, 2001)[:, None]
    # oscillators 0-4 rotate at frequency 1 with fixed offsets; 5-7 at frequency 1.7
    omega = jnp.array([1.0, 1, 1, 1, 1, 1.7, 1.7, 1.7])
    offset = jnp.array([0.0, 0.5, 1.0, 2.0, 0.1, 0.0, 0.3, 0.2])
    thetas = omega[None, :] * t + offset[None, :]
    plv = locking_matrix(thetas)
    np.testing.assert_allclose(np.diag(plv), 1.0, rtol=1e-12)
    assert float(plv[0, 3]) == pytest.approx(1.0) and float(plv[0, 7]) < 0.1
    res = locking_clusters(thetas, net)
    np.testing.assert_array_equal(res.labels, [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(res.per_population, [1, 2])
    # snapshot clusters split the locked group by phase offset instead
    assert int(phase_clusters(thetas[-1], net, tol=0.3).n_clusters) > 2
    locked = cross_population_locking(thetas[:, :6].at[:, 4:].set(thetas[:, :2]), None)
    assert locked.shape == (1, 1) and float(locked[0, 0]) == pytest.approx(1.0)
    cross = cross_population_locking(thetas, net)  # Y's mean field turns at frequency 1.7
    assert float(cross[0, 1]) < 0.5 and float(cross[1, 0]) == pytest.approx(float(cross[0, 1]))
    same = cross_population_locking(jnp.concatenate([thetas[:, :4], thetas[:, :4] + 1.0], 1),
                                    net)
    np.testing.assert_allclose(same, 1.0, rtol=1e-9)


def test_synchrony_of_a_strongly_coupled_surrogate():
    import surrogate as sg

    sur = sg.paper_preset(jax.random.key(0), 0.5, 0.5, sizes=(8, 8), k=4, cross_density=0.3,
                          dtype=jnp.float64)
    n = sur.network.n
    sur = sg.replace(sur, omega=jnp.zeros(n), K=jnp.full((2, 2), 2.0))
    theta0 = 0.5 * jax.random.normal(jax.random.key(1), (n,))
    traj = sg.simulate(sur, theta0, dt=0.05, n_steps=800, save_every=8)
    rep = synchrony(traj.ys[50:], sur)
    np.testing.assert_allclose(rep.order_final, 1.0, atol=1e-6)
    assert int(rep.clusters.n_clusters) == 1 and int(rep.clusters.n_shared) == 1
    np.testing.assert_allclose(rep.locking, 1.0, atol=1e-6)
    # weak coupling, spread frequencies: no global cluster
    loose = sg.replace(sur, omega=jax.random.normal(jax.random.key(2), (n,)),
                       K=jnp.full((2, 2), 0.01))
    traj = sg.simulate(loose, theta0, dt=0.05, n_steps=800, save_every=8)
    rep = synchrony(traj.ys[50:], loose)
    assert int(rep.clusters.n_clusters) > 2 and float(rep.order.max()) < 0.8


@pytest.mark.slow
def test_correlation_dimension_lorenz_20000_points():
    ys = rk4_trajectory(lorenz63, jnp.array([1.0, 1.0, 1.0]), dt=0.01, n_steps=200_000,
                        transient=2000, save_every=10).ys
    res = correlation_dimension(ys, theiler=10, n_radii=50)
    assert abs(float(res.dimension) - 2.05) < 0.05
