"""One exponential per undirected edge on the batched path (``surrogate.edge_pairs``): the same
numbers as one per neighbour slot, bit for bit; the per-slot path wherever that cannot hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg

STEPS = 100


def system(dtype, normalisation, sizes=(12, 16)):
    ts = jnp.linspace(0.0, 2.0, 201, dtype=dtype)
    drive = sg.make_drive(ts, jnp.stack([jnp.sin(1.3 * ts), jnp.cos(0.7 * ts)], -1))
    sur = sg.paper_preset(jax.random.key(0), sizes=sizes, k=4, cross_density=0.2, dtype=dtype,
                          drive=drive, normalisation=normalisation, anchor=2.0)
    return sur, sg.initial_phases(jax.random.key(1), sur.network.n, dtype)


def symmetric_params(sur, g=4):
    """Per-system symmetric B (beta_self, beta_cross from 1e-3 to 2) and K != B."""
    bs, bc = jnp.asarray([1e-3, 0.5, 2.0, 1.0]), jnp.asarray([0.3, 2.0, 1e-2, 1.0])
    B = jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, sur.dtype))(bs[:g], bc[:g])
    return sur.params.replace(B=B, K=0.5 * B[:, ::-1] + 0.2)


@pytest.mark.parametrize("dtype,normalisation", [
    (jnp.float32, "softmax"), pytest.param(jnp.float64, "mean", marks=pytest.mark.slow)])
def test_one_exp_per_edge_is_bit_identical(dtype, normalisation):
    sur, theta0 = system(dtype, normalisation)
    params = symmetric_params(sur)
    pairs = sg.edge_pairs(sur, params)
    assert pairs is not None
    edges = int(sur.network.neighbour_mask.sum()) // 2
    assert int(pairs.mask.sum()) == edges and pairs.mask.size < sur.network.neighbours.size
    run = jax.jit(lambda p, pr: sg.simulate_batch(sur, theta0, params=p, dt=0.01,
                                                  n_steps=STEPS, means=True, pairs=pr))
    per_edge, per_slot = run(params, pairs), run(params, None)
    for a, b in zip(jax.tree.leaves(per_edge), jax.tree.leaves(per_slot), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(per_edge.y1 - theta0[None]).max()) > 0.1  # it moved


def test_per_slot_where_one_exp_per_edge_would_differ():
    sur, _ = system(jnp.float32, "softmax")
    params = symmetric_params(sur)
    asym = params.replace(B=params.B.at[1, 0, 1].add(0.1))  # one system's B not symmetric
    assert sg.edge_pairs(sur, asym) is None
    # symmetric, but rows whose softmax shifts differ (max |B| of a row: 3 against 1)
    three = sg.paper_preset(jax.random.key(0), sizes=(10, 10, 10), k=4)
    B3 = jnp.asarray([[3.0, 0.5, 0.2], [0.5, 1.0, 0.1], [0.2, 0.1, 1.0]])
    assert sg.edge_pairs(three, three.params.replace(B=B3)) is None
    mean = sg.Surrogate(three.network, three.params.replace(B=B3), normalisation="mean")
    assert sg.edge_pairs(mean) is not None  # no shift under "mean"
    # a directed graph: edge 0 -> 1 without 1 -> 0
    adj = np.ones((4, 4)) - np.eye(4)
    adj[1, 0] = 0
    directed = sg.Surrogate(sg.from_adjacency(adj, (2, 2)), sg.Params(
        omega=jnp.zeros(4), gain=jnp.zeros(4), B=jnp.ones((2, 2)), K=jnp.ones((2, 2))))
    assert sg.edge_pairs(directed.replace(network=sg.from_adjacency(np.minimum(adj, adj.T),
                                                                     (2, 2)))) is not None
    assert sg.edge_pairs(directed) is None
    # traced parameters cannot be checked: None (the per-slot path) under jit
    assert jax.jit(lambda B: sg.edge_pairs(sur, params.replace(B=B)) is None and B)(params.B) \
        is not None
    with pytest.raises(ValueError, match="pairs must be"):
        sg.simulate_batch(sur, jnp.zeros(28), dt=0.01, n_steps=2, pairs="edges")
