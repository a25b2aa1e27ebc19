"""The surrogate's predicted response to a block change (surrogate/response.py): no change equals
the fit's forward model, the slope equals central finite differences, a small factor's finite
change equals the linearised one, a knockout zeroes the block inside the window, and layers
before the window are untouched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrogate.fitting import FitConfig, FitParams
from surrogate.fitting.model import make_model, model_attention
from surrogate.response import block_response


@pytest.fixture(scope="module")
def fitted():
    config = FitConfig(sizes=(10, 10), k=4, horizon=2.0, dt=0.1, n_initial=2, realizations=2)
    model = make_model(jax.random.key(3), config.sizes, config, jnp.float64)
    params = FitParams(B=jnp.array([[1.5, 0.4], [0.8, 1.2]]), K=jnp.array([[1.0, 0.6], [0.5, 1.0]]),
                       omega_spread=jnp.asarray(0.4), gain=jnp.array([0.1, -0.2]),
                       anchor=jnp.asarray(1.0), times=jnp.linspace(0.5, 2.0, 4))
    return model, params


def test_slope_matches_finite_differences_and_small_factors(fitted):
    model, params = fitted
    r = block_response(model, params, 0, 1, factor=1.02, layers=(1, 2))
    # no change: the fit's forward model
    np.testing.assert_allclose(r.base, jax.jit(model_attention)(model, params), atol=1e-12)
    h = 1e-5   # central differences in log B_ab (finite changes of factors e^{+-h})
    up, down = (block_response(model, params, 0, 1, factor=float(np.exp(s)), layers=(1, 2))
                for s in (h, -h))
    np.testing.assert_allclose(r.slope, (up.finite - down.finite) / (2 * h), atol=1e-7)
    # layer 0 lies before the window: no response at all
    np.testing.assert_array_equal(r.finite[0], 0.0)
    np.testing.assert_array_equal(r.slope[0], 0.0)
    assert np.abs(r.slope[1, 0, 1]) > 1e-3
    # a 2 % change (log f = 0.0198): the linearised prediction is the finite one up to a
    # relative error of order log f
    np.testing.assert_allclose(r.linear, r.finite, atol=0.05 * np.abs(r.finite).max())
    np.testing.assert_allclose(r.dominance_linear, r.dominance_finite,
                               atol=0.05 * np.abs(r.dominance_finite).max())
    assert np.abs(r.linear - r.finite).max() > 0                # not the same computation


@pytest.mark.slow
def test_knockout_removes_the_block_in_the_window(fitted):
    model, params = fitted
    r = block_response(model, params, 0, 1, knockout=True, layers=(1, 2))
    changed = r.base + r.finite
    np.testing.assert_array_equal(r.finite[0], 0.0)           # layer 0 before the window
    assert np.all(changed[1:3, 0, 1] < 1e-12)                 # layers 1, 2 (grid points)
    assert np.all(np.abs(r.finite[3]) > 0)                    # after it: the phases remember
    np.testing.assert_allclose(changed.sum(-1), 1.0, atol=1e-9)
    assert np.all(np.isnan(r.linear))                          # no log f for a knockout


def test_bad_blocks_and_layers_are_refused(fitted):
    model, params = fitted
    with pytest.raises(ValueError, match="outside the fit's 2 modalities"):
        block_response(model, params, 0, 2, factor=2.0)
    with pytest.raises(ValueError, match="layers 2-5 outside the fit's 4 layers"):
        block_response(model, params, 0, 1, factor=2.0, layers=(2, 5))
