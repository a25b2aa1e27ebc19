"""The semantic network: Watts-Strogatz statistics, cross links, determinism, validation."""

import jax
import numpy as np
import pytest

import surrogate as sg
from surrogate.network import watts_strogatz


def clustering(a: np.ndarray) -> float:
    """Mean local clustering coefficient of an undirected 0/1 graph."""
    a = a.astype(float)
    deg = a.sum(1)
    triangles = ((a @ a) * a).sum(1) / 2
    pairs = deg * (deg - 1) / 2
    return float(np.mean(np.where(pairs > 0, triangles / np.where(pairs > 0, pairs, 1), 0)))


def test_ring_lattice_is_exact():
    n, k = 40, 6
    a = watts_strogatz(jax.random.key(0), n, k, 0.0)
    assert (a == a.T).all() and not a.diagonal().any()
    assert (a.sum(1) == k).all()
    for j in range(1, k // 2 + 1):
        assert a[np.arange(n), (np.arange(n) + j) % n].all()
    # Clustering of the ring lattice: 3 (k - 2) / (4 (k - 1)).
    assert clustering(a) == pytest.approx(3 * (k - 2) / (4 * (k - 1)), abs=1e-12)


def test_rewiring_statistics():
    n, k, p = 2000, 10, 0.05
    a = watts_strogatz(jax.random.key(1), n, k, p)
    assert (a == a.T).all() and not a.diagonal().any()
    assert a.sum() // 2 == n * k // 2  # rewiring keeps the edge count
    assert a.sum(1).mean() == pytest.approx(k)
    idx = np.arange(n)
    ring_kept = sum(a[idx, (idx + j) % n].sum() for j in range(1, k // 2 + 1))
    rewired = 1 - ring_kept / (n * k / 2)
    # Binomial(n k / 2, p): standard deviation 0.0014 here; a rewired edge can land back on a
    # ring position only with probability ~ k / n.
    assert rewired == pytest.approx(p, abs=0.006)
    # Barrat-Weigt: C(p) ~ C(0) (1 - p)^3.
    c0 = 3 * (k - 2) / (4 * (k - 1))
    assert clustering(a) == pytest.approx(c0 * (1 - p) ** 3, rel=0.03)


def test_build_network_paper_layout():
    net = sg.build_network(jax.random.key(2), (50, 50), k=10, p=0.01, cross_density=0.1)
    a = np.asarray(net.adjacency)
    assert net.n == 100 and net.n_populations == 2 and net.sizes == (50, 50)
    assert (a == a.T).all() and not a.diagonal().any()
    assert (a[:50, :50].sum(1) == 10).mean() > 0.8  # p = 0.01 leaves most degrees at k
    assert a[:50, :50].sum() == a[50:, 50:].sum() == 50 * 10
    cross = a[:50, 50:].mean()
    assert 0.07 < cross < 0.13  # Binomial(2500, 0.1): sd 0.006
    assert net.density == pytest.approx(a.sum() / (100 * 99))
    assert np.asarray(net.population).tolist() == [0] * 50 + [1] * 50
    # Gathered neighbour lists hold exactly the adjacency rows.
    nbr, mask = np.asarray(net.neighbours), np.asarray(net.neighbour_mask)
    assert nbr.shape == (100, a.sum(1).max())
    for i in range(100):
        assert sorted(nbr[i][mask[i]]) == np.flatnonzero(a[i]).tolist()


def test_three_modalities_and_determinism():
    key = jax.random.key(3)
    n1 = sg.build_network(key, (20, 30, 10), k=4, p=0.1, cross_density=0.2)
    n2 = sg.build_network(key, (20, 30, 10), k=4, p=0.1, cross_density=0.2)
    n3 = sg.build_network(jax.random.key(4), (20, 30, 10), k=4, p=0.1, cross_density=0.2)
    assert (np.asarray(n1.adjacency) == np.asarray(n2.adjacency)).all()
    assert (np.asarray(n1.adjacency) != np.asarray(n3.adjacency)).any()
    assert np.bincount(np.asarray(n1.population)).tolist() == [20, 30, 10]
    # Raw uint32 keys give the same graph as the typed key with the same bits.
    raw = jax.random.key_data(key)
    assert (np.asarray(sg.build_network(raw, (20, 30, 10), 4, 0.1, 0.2).adjacency)
            == np.asarray(n1.adjacency)).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=3), "k must be a non-negative even integer"),
        (dict(k=50), "k must be smaller than n"),
        (dict(p=1.5), "rewiring probability p"),
        (dict(p=-0.1), "rewiring probability p"),
        (dict(cross_density=2.0), "cross_density"),
        (dict(sizes=(1, 50)), "n must be an integer >= 2"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = dict(sizes=(50, 50), k=10, p=0.01, cross_density=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        sg.build_network(jax.random.key(0), **args)


def test_from_adjacency_validates():
    with pytest.raises(ValueError, match="shape"):
        sg.from_adjacency(np.zeros((3, 3)), (2, 2))
    with pytest.raises(ValueError, match="self-loops"):
        sg.from_adjacency(np.eye(4), (2, 2))
    with pytest.raises(ValueError, match="0 or 1"):
        sg.from_adjacency(np.full((4, 4), 0.5) * (1 - np.eye(4)), (2, 2))
