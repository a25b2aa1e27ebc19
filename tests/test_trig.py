"""surrogate.trig.sincos against float64 sin and cos: values, gradients, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrogate.trig import sincos


@pytest.mark.parametrize("limit", [1.0, 10.0, 500.0, 1e5])
def test_sincos_float32_within_2e7_of_float64(limit):
    """Absolute error at most 2e-7 up to |x| = 1e5 rad (XLA's float32 sin: ~3e-8), every
    quadrant and sign, the multiples of pi/2 included."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(-limit, limit, 200_000), np.arange(-64, 65) * np.pi / 2,
              np.arange(-64, 65) * np.pi / 4].astype(np.float32)
    x = x[np.abs(x) <= limit]
    s, c = sincos(jnp.asarray(x))
    assert s.dtype == c.dtype == jnp.float32
    x64 = x.astype(np.float64)
    assert np.abs(np.asarray(s, np.float64) - np.sin(x64)).max() < 2e-7
    assert np.abs(np.asarray(c, np.float64) - np.cos(x64)).max() < 2e-7


def test_sincos_gradient_is_cos_and_minus_sin():
    """Within 5e-7 (the derivative polynomials are of one degree less)."""
    x = jnp.linspace(-20.0, 20.0, 1001, dtype=jnp.float32)
    ds = jax.vmap(jax.grad(lambda t: sincos(t)[0]))(x)
    dc = jax.vmap(jax.grad(lambda t: sincos(t)[1]))(x)
    x64 = np.asarray(x, np.float64)
    assert np.abs(np.asarray(ds) - np.cos(x64)).max() < 5e-7
    assert np.abs(np.asarray(dc) + np.sin(x64)).max() < 5e-7


def test_sincos_float64_is_jnp_sin_cos():
    x = jnp.linspace(-30.0, 30.0, 101, dtype=jnp.float64)  # x64: tests/conftest.py
    s, c = sincos(x)
    assert s.dtype == jnp.float64
    np.testing.assert_array_equal(s, jnp.sin(x))
    np.testing.assert_array_equal(c, jnp.cos(x))
