"""Lyapunov spectra against published values (docs/lyapunov.md), invariants and exact cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lorenz.systems import HenonParams, LorenzParams, henon, lorenz63, rossler
from surrogate.lyapunov import (
    conditional_lyapunov_exponents,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    lyapunov_spectrum_map,
)
from surrogate.lyapunov_batch import lyapunov_spectrum_batch, lyapunov_spectrum_map_batch

LORENZ_REF = np.array([0.9056, 0.0, -14.5723])  # Sprott
LORENZ_TOL = np.array([0.01, 0.01, 0.05])
LORENZ_Y0 = jnp.array([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0], [10.0, 10.0, 10.0], [2.0, -3.0, 15.0]])


@pytest.fixture(scope="module")
def lorenz64():
    """Four initial conditions x 2500 time units (dt 0.01), vmapped and jitted, float64."""
    run = jax.jit(
        jax.vmap(
            lambda y0: lyapunov_spectrum(lorenz63, y0, dt=0.01, n_steps=250_000, transient=1000)
        )
    )
    return run(LORENZ_Y0)


def test_lorenz_spectrum_published(lorenz64):
    assert lorenz64.exponents.shape == (4, 3)
    assert lorenz64.exponents.dtype == jnp.float64
    mean = np.asarray(lorenz64.exponents.mean(0))
    np.testing.assert_array_less(np.abs(mean - LORENZ_REF), LORENZ_TOL)
    # every single trajectory is already close (finite-time spread of lambda_1 is ~0.004 here)
    assert np.all(np.abs(np.asarray(lorenz64.exponents) - LORENZ_REF) < 2 * LORENZ_TOL)


def test_lorenz_sum_rule(lorenz64):
    p = LorenzParams()
    trace = -(p.sigma + 1 + p.beta)  # constant divergence: the exponents sum to it exactly
    np.testing.assert_allclose(np.asarray(lorenz64.sum), trace, atol=1e-3)


def test_lorenz_kaplan_yorke(lorenz64):
    d_ky = jax.jit(jax.vmap(kaplan_yorke_dimension))(lorenz64.exponents)
    np.testing.assert_allclose(np.asarray(d_ky), 2.062, atol=0.01)
    assert float(kaplan_yorke_dimension(jnp.asarray(LORENZ_REF))) == pytest.approx(
        2 + 0.9056 / 14.5723, abs=1e-12
    )


def test_running_estimate_converges(lorenz64):
    times, running = lorenz64.times[0], lorenz64.running[0]
    assert times.shape == (100,) and running.shape == (100, 3)
    assert float(times[-1]) == pytest.approx(2500.0)
    np.testing.assert_allclose(running[-1], lorenz64.exponents[0], rtol=1e-12)
    assert bool(jnp.all(jnp.diff(times) > 0))
    # the estimate settles: late records are much closer to the final value than early ones
    err = np.abs(np.asarray(running[:, 0] - lorenz64.exponents[0, 0]))
    assert err[-10:].max() < 0.01


def test_henon_map_spectrum():
    res = lyapunov_spectrum_map(henon, jnp.array([0.1, 0.1]), n_steps=100_000, transient=100)
    np.testing.assert_allclose(np.asarray(res.exponents), [0.4192, -1.6232], atol=0.01)
    # |det Dg| = b at every point: the sum is ln b to rounding
    assert abs(float(res.sum) - math.log(HenonParams().b)) < 1e-6
    assert float(res.times[-1]) == 100_000


def test_rossler_largest():
    res = lyapunov_spectrum(rossler, jnp.array([1.0, 1.0, 0.0]), dt=0.01, n_steps=200_000,
                            transient=5000)
    assert abs(float(res.largest) - 0.0714) < 0.01
    assert abs(float(res.exponents[1])) < 0.01
    assert abs(float(res.exponents[2]) + 5.39) < 0.05


def _linear_system():
    """dy/dt = A y with A = P J P^-1, eigenvalues -0.1 +- 2i, -0.7, -1.5 (non-normal P)."""
    j = np.zeros((4, 4))
    j[:2, :2] = [[-0.1, 2.0], [-2.0, -0.1]]
    j[2, 2], j[3, 3] = -0.7, -1.5
    p = np.array([[1.0, 0.3, 0.0, 0.5], [0.0, 1.0, 0.4, 0.0], [0.2, 0.0, 1.0, 0.3],
                  [0.0, 0.5, 0.0, 1.0]])
    return jnp.asarray(p @ j @ np.linalg.inv(p)), np.array([-0.1, -0.1, -0.7, -1.5])


def _linear_field(t, y, a):
    return a @ y


def test_linear_system_exact_exponents():
    a, expected = _linear_system()
    field = _linear_field
    y0 = jnp.ones(4)
    res = lyapunov_spectrum(field, y0, a, dt=0.02, n_steps=100_000, transient=500, renorm_every=5)
    np.testing.assert_allclose(np.asarray(res.exponents), expected, atol=1e-3)
    first2 = lyapunov_spectrum(field, y0, a, dt=0.02, n_steps=100_000, transient=500, k=2,
                               renorm_every=5)
    assert first2.exponents.shape == (2,)
    np.testing.assert_allclose(np.asarray(first2.exponents), expected[:2], atol=1e-3)


def test_time_dependence_is_used():
    """dy/dt = (cos t - 1/2) y has exponent -1/2; a field evaluated at a frozen t would not."""
    def field(t, y, args):
        return (jnp.cos(t) - 0.5) * y

    res = lyapunov_spectrum(field, jnp.array([1.0]), dt=0.01, n_steps=20_000, t0=0.3)
    # exact over T = 200: -1/2 + (sin(t0 + T) - sin t0) / T
    exact = -0.5 + (math.sin(200.3) - math.sin(0.3)) / 200
    assert float(res.largest) == pytest.approx(exact, abs=1e-6)


def test_jit_vmap_over_parameters_matches_single_runs():
    rhos = jnp.array([28.0, 45.0])
    params = LorenzParams(sigma=jnp.full(2, 10.0), rho=rhos, beta=jnp.full(2, 8 / 3))
    def run(p):
        return lyapunov_spectrum(lorenz63, jnp.array([1.0, 1.0, 1.0]), p, dt=0.01, n_steps=300)

    batched = jax.jit(jax.vmap(run))(params)
    for i, rho in enumerate([28.0, 45.0]):
        single = run(LorenzParams(rho=rho))
        np.testing.assert_allclose(batched.exponents[i], single.exponents, rtol=1e-9, atol=1e-10)
    assert np.all(np.abs(batched.exponents[0] - batched.exponents[1]) > 1e-2)


def test_float32():
    run = jax.jit(lambda y0: lyapunov_spectrum(lorenz63, y0, dt=0.01, n_steps=100_000,
                                               transient=1000))
    res = run(jnp.array([1.0, 1.0, 1.0], jnp.float32))
    assert res.exponents.dtype == jnp.float32 and res.running.dtype == jnp.float32
    np.testing.assert_array_less(np.abs(np.asarray(res.exponents) - LORENZ_REF), 2 * LORENZ_TOL)
    assert abs(float(res.sum) + 13.6667) < 2e-3
    h = lyapunov_spectrum_map(henon, jnp.array([0.1, 0.1], jnp.float32), n_steps=20_000)
    assert h.exponents.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(h.exponents), [0.4192, -1.6232], atol=0.02)


def test_renorm_every_gives_same_spectrum():
    a, _expected = _linear_system()
    field = _linear_field
    kw = {"dt": 0.02, "n_steps": 20_000, "transient": 500}
    r1 = lyapunov_spectrum(field, jnp.ones(4), a, renorm_every=1, **kw)
    r10 = lyapunov_spectrum(field, jnp.ones(4), a, renorm_every=10, **kw)
    np.testing.assert_allclose(r1.exponents, r10.exponents, atol=1e-9)


def test_records_cover_uneven_division():
    res = lyapunov_spectrum_map(henon, jnp.array([0.1, 0.1]), n_steps=1003, n_records=10)
    assert res.times.shape == (10,) and float(res.times[-1]) == 1003
    np.testing.assert_allclose(res.running[-1], res.exponents, rtol=1e-12)


def test_kaplan_yorke_edge_cases():
    assert float(kaplan_yorke_dimension(jnp.array([-0.1, -1.0]))) == 0.0
    assert float(kaplan_yorke_dimension(jnp.array([0.5, 0.1]))) == 2.0
    assert float(kaplan_yorke_dimension(jnp.array([-2.0, 1.0]))) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="exponents"):
        kaplan_yorke_dimension(jnp.ones((2, 2)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 4}, "k must"),
        ({"k": 0}, "k must"),
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": 10, "renorm_every": 3}, "renorm_every"),
        ({"transient": -1}, "transient"),
        ({"dt": -0.01}, "dt must"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kw = {"dt": 0.01, "n_steps": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum(lorenz63, jnp.ones(3), **kw)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="y0 must have shape"):
        lyapunov_spectrum(lorenz63, jnp.ones((3, 1)), dt=0.01, n_steps=10)
    with pytest.raises(ValueError, match="same shape"):
        lyapunov_spectrum(lambda t, y, a: y[:2], jnp.ones(3), dt=0.01, n_steps=10)
    with pytest.raises(ValueError, match="same shape"):
        lyapunov_spectrum_map(lambda y, a: jnp.sum(y), jnp.ones(2), n_steps=10)


# ----------------------------------------------------------------------------------------------
# The surrogate


def _synchronizing_surrogate(dtype=jnp.float64):
    """12 oscillators in two modalities, identical (zero) frequencies, strong coupling K = 2."""
    import surrogate as sg

    sur = sg.paper_preset(jax.random.key(0), 0.5, 0.5, sizes=(6, 6), k=2, cross_density=0.3,
                          dtype=dtype)
    n = sur.network.n
    return sg.replace(sur, omega=jnp.zeros(n, dtype), K=jnp.full((2, 2), 2.0, dtype))


SYNC_RUN = {"dt": 0.05, "n_steps": 3000, "transient": 1000}


@pytest.fixture(scope="module")
def synchronized():
    import surrogate as sg

    sur = _synchronizing_surrogate()
    theta0 = 0.3 * jax.random.normal(jax.random.key(1), (sur.network.n,))
    return sur, theta0, lyapunov_spectrum(sg.vector_field, theta0, sur, **SYNC_RUN)


def test_synchronized_surrogate_one_zero_rest_negative(synchronized):
    import surrogate as sg

    sur, _, res = synchronized
    n = sur.network.n
    lam = np.asarray(res.exponents)
    assert lam.shape == (n,)
    assert abs(lam[0]) < 1e-6  # the global phase shift is neutral (exactly, up to rounding)
    assert lam[1] < -0.1 and np.all(lam[1:] < 0)
    # at a synchronized state the exponents are the (real) eigenvalues of the Jacobian
    jac = jax.jit(jax.jacfwd(lambda th: sg.vector_field(0.0, th, sur)))(jnp.zeros(n))
    eig = np.sort(np.linalg.eigvals(np.asarray(jac)).real)[::-1]
    np.testing.assert_allclose(lam, eig, atol=2e-3)


def test_conditional_exponents_modulo_phase_shift(synchronized):
    import surrogate as sg

    sur, theta0, full = synchronized
    cond = conditional_lyapunov_exponents(sur, theta0, k=1, **SYNC_RUN)
    # the neutral phase-shift direction is removed: what remains is the rest of the spectrum
    np.testing.assert_allclose(cond.exponents, full.exponents[1:2], atol=2e-3)
    assert cond.running.shape == (100, 1)

    # a different signal per modality: the driven surrogate still contracts transversally, and
    # the plain largest conditional exponent is the neutral 0
    ts = jnp.linspace(0.0, 300.0, 3001)
    drive = sg.make_drive(ts, jnp.stack([jnp.sin(ts), jnp.cos(0.7 * ts)], -1))
    driven = sur.replace(drive=drive)
    transverse = conditional_lyapunov_exponents(driven, theta0, k=1, **SYNC_RUN)
    plain = conditional_lyapunov_exponents(driven, theta0, k=2, modulo_phase_shift=False,
                                           **SYNC_RUN)
    assert float(transverse.largest) < -0.1
    assert abs(float(plain.largest)) < 1e-6
    np.testing.assert_allclose(plain.exponents[1], transverse.largest, atol=2e-3)
    with pytest.raises(ValueError, match="k must"):
        conditional_lyapunov_exponents(sur, theta0, k=sur.network.n, **SYNC_RUN)


@pytest.mark.slow
def test_lorenz_spectrum_long_run_tighter():
    """8 x 10^4 time units in all: lambda_1 to 0.003, lambda_3 to 0.01, D_KY to 0.001."""
    y0 = jnp.concatenate([LORENZ_Y0, LORENZ_Y0 + jnp.array([0.5, -0.5, 1.0])])
    run = jax.jit(jax.vmap(
        lambda y: lyapunov_spectrum(lorenz63, y, dt=0.01, n_steps=1_000_000, transient=1000)
    ))
    lam = np.asarray(run(y0).exponents).mean(0)
    assert np.all(np.abs(lam - LORENZ_REF) < [0.003, 0.002, 0.01]), lam
    assert abs(float(kaplan_yorke_dimension(jnp.asarray(lam))) - 2.062) < 0.001


# ----------------------------------------------------------------------------------------------
# The batch on lanes (surrogate.lyapunov_batch)


def test_batch_equals_vmapped_one_system_path():
    """Same algorithm, other layout: B = 5 on lane blocks of 2 (one padded) equals the vmapped
    one-system path to rounding over a horizon short enough for rounding not to grow."""
    y0s = jnp.concatenate([LORENZ_Y0, jnp.array([[0.5, -1.0, 30.0]])])
    kw = {"dt": 0.01, "n_steps": 800, "transient": 16, "renorm_every": 8, "n_records": 7}
    one = jax.vmap(lambda y: lyapunov_spectrum(lorenz63, y, **kw))(y0s)
    batch = lyapunov_spectrum_batch(lorenz63, y0s, lanes=2, **kw)
    assert batch.exponents.shape == (5, 3) and batch.running.shape == (5, 7, 3)
    assert batch.times.shape == (5, 7)
    np.testing.assert_allclose(batch.exponents, one.exponents, rtol=0, atol=1e-9)
    np.testing.assert_allclose(batch.running, one.running, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(batch.times, one.times)
    # the lanes are independent trajectories, in the order of y0s
    assert np.all(np.abs(np.diff(np.asarray(batch.exponents[:, 0]))) > 1e-4)


@pytest.fixture(scope="module")
def lorenz_batch32():
    """64 initial conditions x 500 time units, float32, QR every 8 steps."""
    y0s = jax.random.uniform(jax.random.key(3), (64, 3), jnp.float32, -10.0, 10.0) + jnp.array(
        [0.0, 0.0, 25.0], jnp.float32)[None, :]
    return lyapunov_spectrum_batch(lorenz63, y0s, dt=0.01, n_steps=50_000, transient=1000,
                                   renorm_every=8)


def test_batch_float32_published_spectrum_and_trace(lorenz_batch32):
    res = lorenz_batch32
    assert res.exponents.dtype == jnp.float32 and res.running.dtype == jnp.float32
    lam = np.asarray(res.exponents, np.float64)
    np.testing.assert_array_less(np.abs(lam.mean(0) - LORENZ_REF), LORENZ_TOL)
    # the sum of the exponents is the (constant) trace of the Jacobian, trajectory by trajectory
    p = LorenzParams()
    np.testing.assert_allclose(lam.sum(1), -(p.sigma + 1 + p.beta), atol=2e-3)


def test_batch_renorm_interval_does_not_change_spectrum(lorenz_batch32):
    a, expected = _linear_system()
    field = _linear_field
    y0s = jnp.stack([jnp.ones(4), jnp.arange(1.0, 5.0)])
    kw = {"dt": 0.02, "n_steps": 20_000, "transient": 480}
    r1 = lyapunov_spectrum_batch(field, y0s, a, renorm_every=1, **kw)
    r8 = lyapunov_spectrum_batch(field, y0s, a, renorm_every=8, **kw)
    np.testing.assert_allclose(r1.exponents, r8.exponents, atol=1e-9)
    np.testing.assert_allclose(r8.exponents, np.broadcast_to(expected, (2, 4)), atol=2e-3)
    # chaotic: every step against every 8th, batch means within the spread of lambda_1's mean
    y0s = jax.random.uniform(jax.random.key(3), (64, 3), jnp.float32, -10.0, 10.0) + jnp.array(
        [0.0, 0.0, 25.0], jnp.float32)[None, :]
    every = lyapunov_spectrum_batch(lorenz63, y0s, dt=0.01, n_steps=50_000, transient=1000)
    diff = np.asarray(every.exponents.mean(0) - lorenz_batch32.exponents.mean(0))
    assert np.all(np.abs(diff) < [0.005, 0.005, 0.01]), diff


def test_batch_henon_map():
    y0s = 0.1 * jax.random.normal(jax.random.key(1), (8, 2))
    res = lyapunov_spectrum_map_batch(henon, y0s, n_steps=20_000, transient=100)
    assert res.exponents.shape == (8, 2)
    np.testing.assert_allclose(np.asarray(res.exponents.mean(0)), [0.4192, -1.6232], atol=0.01)
    # |det Dg| = b at every point: every sum is ln b to rounding
    np.testing.assert_allclose(res.sum, math.log(HenonParams().b), atol=1e-9)
    one = lyapunov_spectrum_map(henon, y0s[3], n_steps=20_000, transient=100)
    np.testing.assert_allclose(res.exponents[3], one.exponents, atol=1e-12)


def test_batch_bad_arguments_raise():
    with pytest.raises(ValueError, match="y0s must have shape"):
        lyapunov_spectrum_batch(lorenz63, jnp.ones(3), dt=0.01, n_steps=10)
    with pytest.raises(ValueError, match="lanes must"):
        lyapunov_spectrum_batch(lorenz63, jnp.ones((2, 3)), dt=0.01, n_steps=10, lanes=0)
    with pytest.raises(ValueError, match="renorm_every"):
        lyapunov_spectrum_batch(lorenz63, jnp.ones((2, 3)), dt=0.01, n_steps=10, renorm_every=3)
    with pytest.raises(ValueError, match="same shape"):
        lyapunov_spectrum_map_batch(lambda y, a: jnp.sum(y), jnp.ones((2, 2)), n_steps=10)
