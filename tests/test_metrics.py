"""Metrics: order parameters, attention shares and the dominance index, with their gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg

F64 = jnp.float64


@pytest.fixture(scope="module")
def system():
    sur = sg.paper_preset(jax.random.key(0), beta_self=0.6, beta_cross=0.2, dtype=F64)
    theta = sg.initial_phases(jax.random.key(1), sur.network.n, F64)
    return sur, theta


def test_order_parameter_limits(system):
    sur, theta = system
    sync = jnp.full((100,), 1.234, F64)
    np.testing.assert_allclose(sg.order_parameter(sync, sur), [1.0, 1.0], atol=1e-14)
    splay = jnp.concatenate([jnp.linspace(0, 2 * jnp.pi, 50, endpoint=False)] * 2)
    np.testing.assert_allclose(sg.order_parameter(splay, sur), [0.0, 0.0], atol=1e-14)
    half = jnp.concatenate([sync[:50], splay[50:]])
    np.testing.assert_allclose(sg.order_parameter(half, sur), [1.0, 0.0], atol=1e-14)
    assert float(sg.metrics.kuramoto_order(half)) == pytest.approx(0.5, abs=1e-14)


def test_attention_rows_and_shares(system):
    sur, theta = system
    alpha = np.asarray(sg.attention_weights(theta, sur))
    a = np.asarray(sur.network.adjacency)
    np.testing.assert_allclose(alpha.sum(1), 1.0, atol=1e-14)  # softmax rows sum to 1
    assert np.all(alpha[a == 0] == 0) and np.all(alpha[a == 1] > 0)
    # Direct check of one row against the definition.
    i, B = 7, np.asarray(sur.params.B)
    pop = np.asarray(sur.network.population)
    e = a[i] * np.exp(B[pop[i], pop] * np.cos(np.asarray(theta) - float(theta[i])))
    np.testing.assert_allclose(alpha[i], e / e.sum(), rtol=1e-13)
    share = np.asarray(sg.cross_modal_share(theta, sur))
    np.testing.assert_allclose(share, (alpha * (pop[None, :] != pop[:, None])).sum(1), atol=1e-14)
    p = np.asarray(sg.modality_attention(theta, sur))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-14)
    np.testing.assert_allclose(p[0, 1], share[:50].mean(), atol=1e-14)
    np.testing.assert_allclose(sg.metrics.modality_cross_share(theta, sur), [p[0, 1], p[1, 0]],
                               atol=1e-14)
    assert float(sg.dominance(theta, sur)) == pytest.approx(np.log(p[1, 0] / p[0, 1]), rel=1e-12)
    assert float(sg.dominance(theta, sur, 1, 0)) == pytest.approx(-float(sg.dominance(theta, sur)))
    with pytest.raises(ValueError, match="must differ"):
        sg.metrics.dominance_index(p, 0, 0)


@pytest.mark.parametrize("norm", ["mean", "none"])
def test_shares_are_row_normalised_for_every_mode(system, norm):
    sur, theta = system
    sur = sg.Surrogate(sur.network, sur.params, normalisation=norm)
    np.testing.assert_allclose(sg.modality_attention(theta, sur).sum(1), 1.0, atol=1e-14)


def _loss(sur, theta0, path):
    """Dominance of modality 0 over 1 from the time-averaged modality attention matrix."""
    traj = sg.simulate(sur, theta0, dt=0.02, n_steps=150, save_every=10,
                       solver=sg.RK4() if path == "diffrax" else sg.FixedStep())
    p = jax.vmap(sg.modality_attention, (0, None))(traj.ys[1:], sur).mean(0)
    return sg.metrics.dominance_index(p, 0, 1)


@pytest.mark.parametrize("path", ["fast", "diffrax"])
def test_dominance_gradient_matches_finite_differences(system, path):
    sur, theta0 = system
    # An asymmetric point, so that the dominance and its gradient are not trivially zero.
    B0 = jnp.asarray([[0.9, 0.3], [0.5, 0.6]], F64)
    K0 = jnp.asarray([[0.8, 0.2], [0.6, 0.7]], F64)
    sur = sg.replace(sur, B=B0, K=K0)
    f = jax.jit(lambda B, K: _loss(sg.replace(sur, B=B, K=K), theta0, path))
    gB, gK = jax.grad(f, argnums=(0, 1))(B0, K0)
    assert abs(float(f(B0, K0))) > 1e-3
    h = 1e-5
    for grad, which in ((gB, 0), (gK, 1)):
        for idx in np.ndindex(2, 2):
            e = jnp.zeros((2, 2), F64).at[idx].set(h)
            args_p = (B0 + e, K0) if which == 0 else (B0, K0 + e)
            args_m = (B0 - e, K0) if which == 0 else (B0, K0 - e)
            fd = (f(*args_p) - f(*args_m)) / (2 * h)
            assert float(grad[idx]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9), (which, idx)


def test_paths_give_the_same_gradient(system):
    sur, theta0 = system
    g = [jax.grad(lambda B, path=path: _loss(sg.replace(sur, B=B, K=B), theta0, path))(
         sur.params.B) for path in ("fast", "diffrax")]
    np.testing.assert_allclose(g[0], g[1], rtol=1e-9, atol=1e-12)
