"""The two integration paths and the three evaluations compute the same dynamics."""


import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from surrogate.model import NORMALISATIONS, rhs

F64 = jnp.float64


@pytest.fixture(scope="module")
def system():
    sur = sg.paper_preset(jax.random.key(0), beta_self=0.8, beta_cross=0.3, dtype=F64)
    theta0 = sg.initial_phases(jax.random.key(1), sur.network.n, F64)
    return sur, theta0


def lorenz_like_drive(m=2, dtype=F64):
    ts = jnp.linspace(0.0, 10.0, 1001, dtype=dtype)
    return sg.make_drive(ts, jnp.stack([jnp.sin(1.3 * ts + i) for i in range(m)], -1))


@pytest.mark.parametrize("sparse", [sg.Sparse(), sg.Sparse(unroll_slots=False),
                                    sg.Sparse(slot_loop_max=0)],
                         ids=["slot loop", "rolled slot loop", "gather and reduce"])
@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_evaluations_agree(system, normalisation, sparse):
    """Dense and every sparse form (the slot loop, unrolled or rolled, and gather-then-reduce)."""
    sur, theta = system
    sur = sg.Surrogate(sur.network, sur.params, normalisation=normalisation)
    u = jnp.asarray([0.3, -0.7], F64)
    ref = rhs(theta, u, sur, sg.Reference())
    for field in (sg.Dense(), sparse):
        np.testing.assert_allclose(rhs(theta, u, sur, field), ref, rtol=0, atol=1e-13)
    f32 = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == F64 else x, sur)
    for field in (sg.Dense(), sparse):
        got = rhs(theta.astype(jnp.float32), u.astype(jnp.float32), f32, field)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


def test_fast_and_diffrax_paths_agree_float64(system):
    sur, theta0 = system
    sur = sg.Surrogate(sur.network, sur.params, drive=lorenz_like_drive())
    run = dict(dt=0.01, n_steps=400, save_every=20)
    ref = sg.simulate(sur, theta0, solver=sg.RK4(), field="reference", **run)
    assert ref.ys.shape == (21, 100)
    np.testing.assert_allclose(ref.ts, 0.2 * np.arange(21), atol=1e-12)
    for kind in ("dense", "sparse", "reference"):
        fast = sg.simulate(sur, theta0, field=kind, **run)
        np.testing.assert_allclose(fast.ts, ref.ts, atol=1e-12)
        np.testing.assert_allclose(fast.ys, ref.ys, rtol=0, atol=1e-11)
    # An adaptive solver at tight tolerance agrees to RK4's truncation error (measured 3.6e-7; the
    # kinks of the piecewise-linear drive keep it above the smooth-case dt^4 ~ 1e-8).
    adaptive = sg.simulate(
        sur, theta0, solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10), **run,
    )
    np.testing.assert_allclose(adaptive.ys, ref.ys, rtol=0, atol=1e-6)


def test_fast_and_diffrax_paths_agree_float32(system):
    sur, theta0 = system
    f32 = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == F64 else x, sur)
    run = dict(dt=0.01, n_steps=200, save_every=50)
    ref = sg.simulate(sur, theta0, solver=sg.RK4(), **run)  # float64
    for solver in (sg.FixedStep(), sg.RK4()):
        got = sg.simulate(f32, theta0.astype(jnp.float32), solver=solver, **run)
        assert got.ys.dtype == jnp.float32
        np.testing.assert_allclose(got.ys, ref.ys, rtol=0, atol=5e-5)


def test_rk4_convergence_order(system):
    # Undriven: a piecewise-linear drive has kinks at its samples, which lowers any method's order.
    sur, theta0 = system
    ref = sg.simulate(sur, theta0, dt=0.0025, n_steps=800, save_every=800).ys[-1]
    errs = []
    for dt, n in ((0.08, 25), (0.04, 50), (0.02, 100)):
        errs.append(float(jnp.max(jnp.abs(sg.simulate(sur, theta0, dt=dt, n_steps=n,
                                                       save_every=n).ys[-1] - ref))))
    orders = np.log2(np.asarray(errs[:-1]) / np.asarray(errs[1:]))
    assert np.all((orders > 3.6) & (orders < 4.4)), (errs, orders)


def test_rk4_step_is_the_formula():
    """rk4.step is y + dt/6 (k1 + 2 k2 + 2 k3 + k4), bit for bit (op by op, float32, stages
    unrolled); the stage loop differs from it by float rounding only."""
    from surrogate import rk4

    rng = np.random.default_rng(2)
    y = rng.normal(size=64).astype(np.float32)
    xs = rng.normal(size=(4, 64)).astype(np.float32)
    dt = np.float32(0.03)

    def f(y_, x):
        return np.sin(3 * y_) * x - np.float32(0.5) * y_

    k1 = f(y, xs[0])
    k2 = f(y + dt * np.float32(0.5) * k1, xs[1])
    k3 = f(y + dt * np.float32(0.5) * k2, xs[2])
    k4 = f(y + dt * k3, xs[3])
    want = y + dt / np.float32(6) * (k1 + 2 * k2 + 2 * k3 + k4)
    jf = lambda y_, x: jnp.sin(3 * y_) * x - 0.5 * y_  # noqa: E731
    args = (jf, jnp.asarray(y), jnp.asarray(xs), jnp.asarray(dt))
    np.testing.assert_array_equal(np.asarray(rk4.step(*args, stage_loop=False)), want)
    np.testing.assert_array_max_ulp(np.asarray(rk4.step(*args, stage_loop=True)), want, maxulp=4)


def test_beta_zero_is_classic_kuramoto():
    """B = 0: alpha_ij = a_ij / deg_i, i.e. Kuramoto with coupling K / deg_i on the graph."""
    net = sg.build_network(jax.random.key(5), (20, 20), k=4, p=0.2, cross_density=0.15)
    rng = np.random.default_rng(0)
    omega, theta0 = rng.normal(size=40), rng.uniform(0, 2 * np.pi, 40)
    K = np.array([[1.5, 0.4], [0.7, 2.0]])
    a = np.asarray(net.adjacency, float)
    pop = np.asarray(net.population)
    deg = a.sum(1)

    def kuramoto(theta, z):  # classic form, written independently of the package
        d = np.sin(theta[None, :] - theta[:, None])
        return omega + (K[pop][:, pop] * a * d).sum(1) / z

    def numpy_rk4(z, dt=0.01, n=300):
        th = theta0.copy()
        for _ in range(n):
            k1 = kuramoto(th, z)
            k2 = kuramoto(th + dt / 2 * k1, z)
            k3 = kuramoto(th + dt / 2 * k2, z)
            k4 = kuramoto(th + dt * k3, z)
            th = th + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return th

    params = sg.Params(omega=jnp.asarray(omega), gain=jnp.zeros(40), B=jnp.zeros((2, 2)),
                       K=jnp.asarray(K))
    for norm, z in (("softmax", deg), ("mean", deg), ("none", np.ones(40))):
        sur = sg.Surrogate(net, params, normalisation=norm)
        for kind in ("dense", "sparse"):
            got = sg.simulate(sur, jnp.asarray(theta0), dt=0.01, n_steps=300, save_every=300,
                              field=kind).ys[-1]
            np.testing.assert_allclose(got, numpy_rk4(z), rtol=0, atol=1e-11)


def test_global_phase_shift_invariance(system):
    sur, theta0 = system
    sur = sg.Surrogate(sur.network, sur.params, drive=lorenz_like_drive())
    run = dict(dt=0.01, n_steps=300, save_every=300)
    base = sg.simulate(sur, theta0, **run).ys
    for shift in (0.7, -2.0, 2 * np.pi):
        shifted = sg.simulate(sur, theta0 + shift, **run).ys
        np.testing.assert_allclose(shifted - shift, base, rtol=0, atol=1e-11)


def test_jit_and_vmap_over_parameters(system):
    sur, theta0 = system
    betas = jnp.linspace(0.1, 1.0, 4, dtype=F64)

    def final(b):
        B = sg.block_matrix(b, 0.5 * b, 2, F64)
        return sg.simulate(sg.replace(sur, B=B, K=B), theta0, dt=0.01, n_steps=100,
                           save_every=100).ys[-1]

    batched = jax.jit(jax.vmap(final))(betas)
    assert batched.shape == (4, 100)
    for i, b in enumerate(betas):
        np.testing.assert_allclose(batched[i], final(b), rtol=0, atol=1e-12)


def test_bad_arguments(system):
    sur, theta0 = system
    with pytest.raises(ValueError, match="multiple of save_every"):
        sg.simulate(sur, theta0, dt=0.01, n_steps=10, save_every=3)
    with pytest.raises(ValueError, match="n_steps"):
        sg.simulate(sur, theta0, dt=0.01, n_steps=0)
    with pytest.raises(ValueError, match="dt must be positive"):
        sg.simulate(sur, theta0, dt=-0.1, n_steps=10)
    with pytest.raises(ValueError, match=r"theta0 must have shape \(100,\)"):
        sg.simulate(sur, theta0[:10], dt=0.01, n_steps=10)
    with pytest.raises(ValueError, match="solver must be"):
        sg.simulate(sur, theta0, dt=0.01, n_steps=10, solver="euler")
    with pytest.raises(ValueError, match="field must be"):
        sg.simulate(sur, theta0, dt=0.01, n_steps=10, field="blocked")
    with pytest.raises(ValueError, match="need a diffrax solver"):
        sg.simulate(sur, theta0, dt=0.01, n_steps=10, saveat=diffrax.SaveAt(t1=True))
    with pytest.raises(ValueError, match="FixedStep.unroll"):
        sg.FixedStep(unroll=0)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        sg.Surrogate(sur.network, sur.params, normalisation="l2")
    with pytest.raises(ValueError, match=r"params.B must have shape \(2, 2\)"):
        sg.replace(sur, B=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="drive samples"):
        sg.make_drive(jnp.arange(5.0), jnp.zeros((4, 2)))


def test_fold_streams_the_same_states_as_simulate(system):
    sur, theta0 = system
    sur = sg.Surrogate(sur.network, sur.params, drive=lorenz_like_drive())
    traj = sg.simulate(sur, theta0, dt=0.01, n_steps=120, save_every=1)

    def update(acc, n, theta):  # sum of sin(theta) over steps 41..120, and a step counter
        keep = (n > 40).astype(theta.dtype)
        return acc[0] + keep * jnp.sin(theta), acc[1] + keep

    sol = sg.fold(sur, theta0, (jnp.zeros(100, F64), 0.0), update, dt=0.01, n_steps=120)
    total, count = sol.acc
    assert sol.ts is None and sol.ys is None
    np.testing.assert_allclose(sol.y1, traj.ys[-1], rtol=0, atol=1e-13)
    np.testing.assert_array_equal(traj.y1, traj.ys[-1])
    assert float(count) == 80
    np.testing.assert_allclose(total, jnp.sin(traj.ys[41:]).sum(0), rtol=0, atol=1e-11)
