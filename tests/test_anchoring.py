"""Input anchoring h sin(c u + b - theta): analytic limits, every path, gradients, h = 0.

Tolerances: float64 paths of one RK4 scheme agree to 1e-10 (measured ~1e-14); analytic limits
to the RK4 truncation error at dt = 0.01 (~1e-9); finite differences (central, step 1e-5) to 1e-6
relative.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from surrogate.model import rhs

F64 = jnp.float64


def single(h, omega, c=0.7, b=0.3, u=1.2):
    """One uncoupled oscillator, constant input u: psi = c u + b (no additive drive)."""
    net = sg.from_adjacency(np.zeros((1, 1), bool), (1,))
    params = sg.Params(omega=jnp.full(1, omega, F64), gain=jnp.zeros(1, F64),
                       B=jnp.zeros((1, 1), F64), K=jnp.zeros((1, 1), F64),
                       anchor=jnp.full(1, h, F64), encoding_gain=jnp.full(1, c, F64),
                       encoding_offset=jnp.full(1, b, F64))
    drive = sg.make_drive(jnp.asarray([0.0, 100.0], F64), jnp.full((2, 1), u, F64))
    return sg.Surrogate(network=net, params=params, drive=drive), c * u + b


@pytest.mark.parametrize("h, omega", [(2.0, 0.5), (1.0, -0.6), (4.0, 3.0)])
def test_single_oscillator_locks_and_relaxes_at_the_adler_rate(h, omega):
    """d theta/dt = omega + h sin(psi - theta) = 0 at theta* = psi + arcsin(omega / h), stable
    with linearisation -h cos(theta* - psi) = -sqrt(h^2 - omega^2)."""
    sur, psi = single(h, omega)
    locked = psi + np.arcsin(omega / h)
    traj = sg.simulate(sur, jnp.asarray([locked + 0.5], F64), dt=0.01, n_steps=3000,
                       save_every=10)
    err = np.asarray(traj.ys[:, 0]) - locked
    assert abs(err[-1]) < 1e-9
    # linear relaxation: err(t) ~ err(t0) exp(-rate t) once small
    rate = np.sqrt(h * h - omega * omega)
    ts = np.asarray(traj.ts)
    window = (np.abs(err) < 1e-3) & (np.abs(err) > 1e-8)
    slope = np.polyfit(ts[window], np.log(np.abs(err[window])), 1)[0]
    np.testing.assert_allclose(-slope, rate, rtol=1e-3)


def test_conditional_exponent_of_an_uncoupled_network_is_the_slowest_relaxation():
    h = 3.0
    sur = sg.paper_preset(jax.random.key(0), sizes=(6, 6), k=2, cross_density=0.0,
                          anchor=h, dtype=F64, coupling=sg.Fixed(0.0))
    sur = sur.replace(drive=sg.make_drive(jnp.asarray([0.0, 100.0], F64),
                                          jnp.full((2, 2), 0.4, F64)))
    omega = np.asarray(sur.params.omega) + 0.4 * np.asarray(sur.params.gain)  # with g u
    assert np.all(np.abs(omega) < h)
    theta0 = sg.initial_phases(jax.random.key(1), 12, F64)
    res = sg.conditional_lyapunov_exponents(sur, theta0, dt=0.01, n_steps=4000,
                                            transient=3000, k=2)
    rates = np.sort(np.sqrt(h * h - omega ** 2))
    np.testing.assert_allclose(float(res.largest), -rates[0], rtol=1e-4)
    assert float(res.exponents[1]) < float(res.largest)


def anchored_system(dtype=F64, sizes=(12, 9), anchor=2.0):
    ts = jnp.linspace(0.0, 2.0, 201, dtype=dtype)
    drive = sg.make_drive(ts, jnp.stack([jnp.sin(1.3 * ts), jnp.cos(0.7 * ts)], -1))
    sur = sg.paper_preset(jax.random.key(3), 0.7, 0.2, sizes=sizes, k=4, cross_density=0.3,
                          anchor=anchor, drive=drive, dtype=dtype)
    key = jax.random.key(4)
    sur = sg.replace(sur, anchor=anchor + jax.random.uniform(key, (sur.network.n,), dtype))
    return sur, sg.initial_phases(jax.random.key(5), sur.network.n, dtype)


def test_every_path_agrees_with_anchoring_float64():
    sur, theta0 = anchored_system()
    run = dict(dt=0.01, n_steps=100, save_every=100)
    ref = sg.simulate(sur, theta0, solver=sg.RK4(), field="reference", **run)
    want = np.asarray(ref.ys[-1])
    for kind in ("reference", "dense", "sparse"):
        got = sg.simulate(sur, theta0, field=kind, **run).ys[-1]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=kind)
    batch = sg.simulate_batch(sur, theta0, dt=0.01, n_steps=100).y1[0]
    np.testing.assert_allclose(batch, want, rtol=0, atol=1e-10)
    # the vector field itself: the literal formula against the identity-based forms
    u = sur.drive_at(0.3)
    for kind in ("dense", "sparse"):
        np.testing.assert_allclose(rhs(theta0, u, sur, kind), rhs(theta0, u, sur),
                                   rtol=0, atol=1e-13)


def test_paths_agree_with_anchoring_float32():
    sur, theta0 = anchored_system(jnp.float32)
    run = dict(dt=0.01, n_steps=100, save_every=100)
    want = np.asarray(sg.simulate(sur, theta0, field="reference", **run).ys[-1], np.float64)
    for kind in ("dense", "sparse"):
        got = sg.simulate(sur, theta0, field=kind, **run).ys[-1]
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5, err_msg=kind)
    batch = sg.simulate_batch(sur, theta0, dt=0.01, n_steps=100).y1[0]
    np.testing.assert_allclose(batch, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("path, name", [
    ("fast", "anchor"), ("diffrax", "encoding_gain"),
    # the other two pairings under -m slow (about 23 s): each path and each parameter is
    # checked by default
    pytest.param("diffrax", "anchor", marks=pytest.mark.slow),
    pytest.param("fast", "encoding_gain", marks=pytest.mark.slow)])
def test_metric_gradient_in_anchor_and_encoding_gain_matches_finite_differences(path, name):
    sur, theta0 = anchored_system()
    opts = dict(solver=sg.RK4()) if path == "diffrax" else dict(field="sparse")

    def metric(scale):
        x = getattr(sur.params, name) * scale
        traj = sg.simulate(sg.replace(sur, **{name: x}), theta0, dt=0.01, n_steps=60,
                           **opts)
        att = jax.vmap(sg.modality_attention, (0, None))(traj.ys, sur).mean(0)
        return sg.metrics.dominance_index(att) + jnp.mean(jnp.sin(traj.ys[-1]))

    grad = jax.grad(metric)(1.0)
    eps = 1e-5
    fd = (metric(1.0 + eps) - metric(1.0 - eps)) / (2 * eps)
    assert abs(float(fd)) > 1e-4  # the metric does depend on the parameter
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_zero_anchor_is_the_first_release_model_bit_for_bit():
    sur, theta0 = anchored_system(jnp.float32)
    zero = sg.replace(sur, anchor=jnp.zeros_like(sur.params.anchor))
    none = dataclasses.replace(sur, params=sg.Params(omega=sur.params.omega,
                                                     gain=sur.params.gain, B=sur.params.B,
                                                     K=sur.params.K))
    for kind in ("reference", "dense", "sparse"):
        a = sg.simulate(zero, theta0, dt=0.01, n_steps=200, field=kind).ys
        b = sg.simulate(none, theta0, dt=0.01, n_steps=200, field=kind).ys
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sg.simulate_batch(zero, theta0, dt=0.01, n_steps=200).y1,
                                  sg.simulate_batch(none, theta0, dt=0.01, n_steps=200).y1)


def test_two_copies_under_one_lorenz_drive_converge_at_the_default_anchor():
    """Measured (float32, seed 0): the copies agree to < 1e-6 from t ~ 96 of the 105 time
    units on, not right after the 10-unit washout: oscillators whose encoding c_i u(t) moves
    faster than h slip against their input and forget slowly (docs/lorenz.md)."""
    from lorenz.data import lorenz_series
    from lorenz.experiment import LorenzConfig, point_surrogate
    from lorenz.observer import driven

    config = LorenzConfig()
    splits = config.splits
    series = lorenz_series(splits, dt=config.dt, sample_every=config.sample_every)
    k_model, k_theta, _ = jax.random.split(jax.random.key(0), 3)
    base = sg.paper_preset(k_model, anchor=4.0, gain=config.gain)
    sur = driven(point_surrogate(base, config.beta_min, config.beta_min), series)
    a = sg.initial_phases(k_theta, 100)
    b = sg.initial_phases(jax.random.key(2), 100)
    echo = sg.echo_distance(sur, a, b, dt=series.delta, n_steps=splits.total - 1)
    d = np.asarray(echo.distance)
    assert d[0] > 0.5
    assert np.all(d[-50:] < 1e-6)  # the last 2 time units
    assert d[splits.washout:].max() < d[0]
    # without anchoring the copies never forget their start (a phase shift is a symmetry)
    free = sg.echo_distance(sg.replace(sur, anchor=jnp.zeros(100, jnp.float32)), a, b,
                            dt=series.delta, n_steps=splits.total - 1)
    assert float(free.distance[-1]) > 0.1


def test_anchoring_fields_go_together():
    sur, _ = anchored_system()
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(sur, params=sur.params.replace(encoding_gain=None))
    with pytest.raises(ValueError, match="params.anchor must have shape"):
        sg.replace(sur, anchor=jnp.ones(3))
