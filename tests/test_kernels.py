"""The fused Pallas kernel (surrogate.kernels, in the Pallas interpreter) against the fast path.

``pytest -m slow`` adds the paper's graph in float64 and the reduce-once reduction.

Tolerances: float64, the same RK4 scheme with sums in another order: 1e-12 after 40 steps
(measured 9e-16). float32 against the float32 fast path: 2e-5 in theta after 40 steps (measured
2e-7 here; 5e-7..1e-6 in sin(theta) after 200 steps on an H100, where exp is ex2.approx).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from surrogate.kernels import fused_simulate

F64, F32 = jnp.float64, jnp.float32
STEPS = 40


def drive(dtype):
    ts = jnp.linspace(0.0, 2.0, 201, dtype=dtype)
    return sg.make_drive(ts, jnp.stack([jnp.sin(1.3 * ts + i) for i in range(2)], -1))


def system(dtype, normalisation="softmax", sizes=(50, 50)):
    sur = sg.paper_preset(jax.random.key(0), sizes=sizes, k=4 if min(sizes) < 20 else 10,
                          cross_density=0.3 if min(sizes) < 20 else 0.1, dtype=dtype,
                          drive=drive(dtype), normalisation=normalisation)
    theta0 = sg.initial_phases(jax.random.key(1), sur.network.n, dtype)
    return sur, theta0


def betas(dtype, g=5):
    """(G, 2, 2) block matrices over a small (beta_self, beta_cross) set, B = K."""
    bs = jnp.asarray([0.8, 0.1, 1e-3, 1.0, 3.0][:g], dtype)
    bc = jnp.asarray([0.3, 0.9, 1e-2, 1.0, 0.5][:g], dtype)
    return jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, dtype))(bs, bc)


def fast_final(sur, theta0, Bs):
    def one(B, th):
        return sg.simulate(sg.replace(sur, B=B, K=B), th, dt=0.01, n_steps=STEPS,
                           save_every=STEPS).ys[-1]

    th = jnp.broadcast_to(theta0, (Bs.shape[0], sur.network.n))
    return jax.vmap(one)(Bs, th)


SMALL = (12, 7)  # N = 19: P = 16, R = 32 (padding exercised), Watts-Strogatz k = 4


@pytest.mark.parametrize("anchored", [False, True])
def test_matches_fold_float64(anchored):
    """Batched B = K, omega, gain, anchoring and theta0 (G = 5, not a multiple of the 2 points
    per program), final phases and streamed means of cos, sin against fold (the fast path's
    RK4); without anchoring fields (the first release's Params) and with them."""
    sur, theta0 = system(F64, sizes=SMALL)
    n, g = sur.network.n, 5
    Bs = betas(F64, g)
    omega = jax.vmap(lambda k: jax.random.normal(k, (n,), F64))(jax.random.split(
        jax.random.key(2), g))
    gain = jnp.linspace(0.5, 2.0, g, dtype=F64)[:, None] * jnp.ones((g, n), F64)
    th0 = theta0[None, :] + jnp.linspace(-1.0, 1.0, g, dtype=F64)[:, None]

    keys = jax.random.split(jax.random.key(3), 3)
    anchoring = dict(anchor=jnp.abs(jax.random.normal(keys[0], (g, n), F64)) + 1.0,
                     encoding_gain=jax.random.normal(keys[1], (g, n), F64),
                     encoding_offset=jax.random.uniform(keys[2], (g, n), F64, maxval=6.3))
    extra = anchoring if anchored else {}

    def one(B, om, gn, th, ex):
        s = dataclasses.replace(sur, params=sg.Params(omega=om, gain=gn, B=B, K=B, **ex))
        init = (jnp.zeros(n, F64), jnp.zeros(n, F64))
        sol = sg.fold(s, th, init, lambda acc, _, t: (acc[0] + jnp.cos(t), acc[1] + jnp.sin(t)),
                      dt=0.01, n_steps=STEPS, field="sparse")
        c, si = sol.acc
        return sol.y1, c / STEPS, si / STEPS

    ref = jax.vmap(one)(Bs, omega, gain, th0, extra)
    params = sg.Params(omega=omega, gain=gain, B=Bs, K=Bs, **extra)
    out = fused_simulate(sur, th0, params=params, dt=0.01, n_steps=STEPS, means=True,
                         points_per_program=2, interpret=True)
    for got, want in zip((out.y1, out.acc.cos, out.acc.sin), ref, strict=False):
        assert got.shape == (g, n) and got.dtype == F64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_paper_graph_float32():
    """The paper's graph (N = 100, D = 16 slots per column population) in float32, anchored."""
    sur, theta0 = system(F32)
    sur = sg.replace(sur, anchor=jnp.full((100,), 2.0, F32))
    Bs = betas(F32)
    out = fused_simulate(sur, theta0, params=sur.params.replace(B=Bs, K=Bs), dt=0.01,
                         n_steps=STEPS, interpret=True)
    assert out.y1.shape == (5, 100) and out.y1.dtype == F32
    np.testing.assert_allclose(out.y1, fast_final(sur, theta0, Bs), rtol=0, atol=2e-5)


@pytest.mark.slow
def test_paper_graph_float64():
    sur, theta0 = system(F64)
    Bs = betas(F64)
    out = fused_simulate(sur, theta0, params=sur.params.replace(B=Bs, K=Bs), dt=0.01,
                         n_steps=STEPS, interpret=True)
    np.testing.assert_allclose(out.y1, fast_final(sur, theta0, Bs), rtol=0, atol=1e-12)


@pytest.mark.parametrize("normalisation", ["mean", "none"])
def test_normalisations(normalisation):
    sur, theta0 = system(F64, normalisation, sizes=SMALL)
    Bs = betas(F64, 3)
    ref = fast_final(sur, theta0, Bs)
    out = fused_simulate(sur, theta0, params=sur.params.replace(B=Bs, K=Bs), dt=0.01,
                         n_steps=STEPS, interpret=True)
    np.testing.assert_allclose(out.y1, ref, rtol=0, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("normalisation", ["softmax", "mean"])
def test_lanes3d_reduce_once(normalisation):
    sur, theta0 = system(F64, normalisation, sizes=SMALL)
    Bs = betas(F64, 3)
    out = fused_simulate(sur, theta0, params=sur.params.replace(B=Bs, K=Bs), dt=0.01,
                         n_steps=STEPS, reduce_once=True, interpret=True)
    np.testing.assert_allclose(out.y1, fast_final(sur, theta0, Bs), rtol=0, atol=1e-12)


def test_bad_arguments():
    sur, theta0 = system(F64, sizes=SMALL)
    run = dict(dt=0.01, n_steps=5, interpret=True)
    with pytest.raises(ValueError, match="points_per_program"):
        fused_simulate(sur, theta0, points_per_program=3, **run)
    with pytest.raises(ValueError, match="rows_per_chunk"):
        fused_simulate(sur, theta0, rows_per_chunk=6, **run)
    with pytest.raises(ValueError, match="n_steps"):
        fused_simulate(sur, theta0, dt=0.01, n_steps=0, interpret=True)
    with pytest.raises(ValueError, match="batch size"):
        fused_simulate(sur, jnp.zeros((3, 19), F64),
                       params=sur.params.replace(B=betas(F64, 2), K=betas(F64, 2)), **run)
    with pytest.raises(ValueError, match="params.B"):
        fused_simulate(sur, theta0, params=sur.params.replace(B=jnp.zeros((2, 2, 2, 2))), **run)
    bad = dataclasses.replace(sur)
    object.__setattr__(bad, "normalisation", "l2")  # past Surrogate's own check
    with pytest.raises(ValueError, match="normalisation"):
        fused_simulate(bad, theta0, **run)
    with pytest.raises(ValueError, match="concrete graph"):
        jax.jit(lambda net: fused_simulate(dataclasses.replace(sur, network=net), theta0,
                                           **run).y1)(sur.network)
