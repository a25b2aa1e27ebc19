"""The coupling readings: K of Tied, Fixed and Free, and their place in the preset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from surrogate.coupling import Free

B = jnp.asarray([[0.5, 2.0], [3.0, 0.25]])


def test_readings_give_their_strengths():
    np.testing.assert_array_equal(sg.Tied().strengths(B), B)
    np.testing.assert_array_equal(sg.Fixed(0.3).strengths(B), jnp.full((2, 2), 0.3))
    np.testing.assert_array_equal(sg.Fixed(0.3, 0.1).strengths(B), [[0.3, 0.1], [0.1, 0.3]])
    np.testing.assert_array_equal(Free().strengths(B, 2 * B), 2 * B)
    with pytest.raises(ValueError, match="K of its own"):
        Free().strengths(B)


def test_preset_reads_its_coupling():
    key = jax.random.key(0)
    tied = sg.paper_preset(key, 0.4, 1.5, sizes=(6, 6), k=2)
    fixed = sg.paper_preset(key, 0.4, 1.5, sizes=(6, 6), k=2, coupling=sg.Fixed(0.2, 0.05))
    np.testing.assert_array_equal(tied.params.K, tied.params.B)
    np.testing.assert_allclose(fixed.params.K, [[0.2, 0.05], [0.05, 0.2]])
    np.testing.assert_array_equal(fixed.params.B, tied.params.B)
    with pytest.raises(ValueError, match="coupling must be"):
        sg.paper_preset(key, sizes=(6, 6), k=2, coupling="tied")
    with pytest.raises(ValueError, match="kappa_self"):
        sg.Fixed("0.3")


def test_readings_are_static_in_the_cache_key():
    traces = []

    @jax.jit
    def strengths(coupling, b):
        traces.append(coupling)
        return coupling.strengths(b)

    for c in (sg.Fixed(0.3), sg.Fixed(0.3), sg.Fixed(0.4), sg.Tied(), sg.Tied()):
        strengths(c, B)
    assert traces == [sg.Fixed(0.3), sg.Fixed(0.4), sg.Tied()]  # one trace per distinct reading
    assert jax.tree_util.tree_leaves(sg.Fixed(0.3)) == []
