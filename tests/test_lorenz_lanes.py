"""The batched observer (lorenz.lanes) against the per-point path, and its two-copy distance."""

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg
from lorenz.data import Splits, lorenz_series
from lorenz.lanes import lane_statistics, wrapped_distance
from lorenz.observer import evaluate_observer, modality_features


def test_wrapped_distance_is_the_largest_phase_gap_mod_2pi():
    a = np.array([0.1, 1.0, -3.0])
    b = a + np.array([2 * np.pi + 0.2, -0.05, 4 * np.pi])
    d = wrapped_distance(np.sin(a), np.cos(a), np.sin(b), np.cos(b))
    assert abs(d - 0.2) < 1e-12


def test_lanes_equal_the_per_point_path_and_copies_converge():
    splits = Splits(washout=200, train=500, val=50, test=50)
    series = [lorenz_series(splits, sample_every=4, y0=y0)
              for y0 in ((1.0, 1.0, 1.0), (-3.0, 2.0, 20.0))]
    base = sg.paper_preset(jax.random.key(0), gain=0.0, anchor=4.0, encoding_scale=0.5)
    Bs = jax.vmap(lambda s, c: sg.block_matrix(s, c, 2, jnp.float32))(
        jnp.asarray([1e-4, 1.0]), jnp.asarray([1e-2, 0.3]))
    params = base.params.replace(B=Bs, K=Bs)
    theta0 = sg.initial_phases(jax.random.key(1), 100)
    xy = jnp.stack([s.u[:, :2] for s in series])
    z = np.stack([np.asarray(s.u[:, 2:3], np.float64) for s in series])
    out = [lane_statistics(base, params, theta0, xy, z, splits, delta=series[0].delta, block=25,
                           theta_b=theta0 + 2.0 * lanes, on_lanes=lanes, pairs=lanes)
           for lanes in (True, False)]
    for a, b in zip(jax.tree.leaves(out[0].stats), jax.tree.leaves(out[1].stats), strict=False):
        np.testing.assert_array_equal(a, b)  # bit-identical dynamics, the same host sums
    device = lane_statistics(base, params, theta0, xy, z, splits, delta=series[0].delta,
                             block=25, gram_on="device")  # float64 sums on the device
    for a, b in zip(jax.tree.leaves(out[0].stats), jax.tree.leaves(device.stats), strict=False):
        assert b.dtype == np.float64
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-9)  # another summation order
    np.testing.assert_array_equal(evaluate_observer(device.stats, modality_features(
        base.network)).lam, evaluate_observer(out[0].stats, modality_features(base.network)).lam)
    assert out[0].stats.G.shape == (2, 2, 3, 200, 200)
    np.testing.assert_array_equal(out[0].stats.n[0, 0], [500, 50, 50])
    res = evaluate_observer(out[0].stats, modality_features(base.network))
    assert res.nmse.shape == (2, 2, 3, 3) and np.all(res.test[..., 0] < 0.1)
    full = evaluate_observer(out[0].stats, modality_features(base.network), ("xy",))
    assert full.nmse.shape == (2, 2, 1, 3)  # the full readout alone (selection, anchor scan)
    np.testing.assert_array_equal(full.nmse[..., 0, :], res.nmse[..., 0, :])
    # anchored at h = 4 with s = 0.5 the copies forget their start within 8 time units (the
    # main job: at most 1.8e-6 rad after 10; after 2 they are still 0.2-1.9 apart)
    assert out[0].distance.shape == (2, 2) and np.all(out[0].distance < 1e-3)
    # a second copy from the same start runs through the same blocks: exactly the first
    np.testing.assert_array_equal(out[1].distance, 0.0)
