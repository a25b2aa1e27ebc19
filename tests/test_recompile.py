"""Recompile guards on the hot entry points: new parameter values of the same shapes reuse the
compiled program (a trace counter), and a strategy object's static fields are part of the key."""

import collections
import logging

import jax
import jax.numpy as jnp
import numpy as np

import surrogate as sg


def counting(fn):
    """``fn`` with ``traces``: how often JAX traced it (the Python body runs once per trace)."""

    def wrapped(*args, **kwargs):
        wrapped.traces += 1
        return fn(*args, **kwargs)

    wrapped.traces = 0
    return wrapped


def _system(beta, seed=0):
    sur = sg.paper_preset(jax.random.key(seed), beta, 0.5 * beta, sizes=(12, 12), k=4,
                          anchor=2.0, dtype=jnp.float32)
    return sur, sg.initial_phases(jax.random.key(1), sur.network.n, jnp.float32)


def test_simulate_traces_once_per_structure():
    run = counting(lambda sur, th, solver: sg.simulate(sur, th, dt=0.01, n_steps=20,
                                                       field=sg.Sparse(), solver=solver).y1)
    f = jax.jit(run, static_argnums=2)
    a, b = _system(0.3), _system(1.7)
    ya = f(*a, sg.FixedStep())
    yb = f(*b, sg.FixedStep())  # new values, same shapes and strategies: no new trace
    assert run.traces == 1
    assert not np.allclose(ya, yb)
    f(*a, sg.FixedStep(stage_loop=False))  # a static field changed: a new program
    assert run.traces == 2


def test_simulate_batch_traces_once_per_structure():
    run = counting(lambda sur, th, B: sg.simulate_batch(
        sur, th, dt=0.01, n_steps=10, params=sur.params.replace(B=B, K=B)).y1)
    f = jax.jit(run)
    sur, theta0 = _system(0.5)
    for scale in (0.1, 1.0, 3.0):
        B = scale * jnp.ones((4, 2, 2), jnp.float32)
        f(sur, theta0, B)
    assert run.traces == 1


def test_sweep_chunk_function_traced_a_bounded_number_of_times(tmp_path):
    """However many chunks, the sweep traces its function for one point and once for the chunk
    layout (docstring of ``surrogate.sweep``), and never per chunk."""
    sur, theta0 = _system(0.5)

    def metric(point):
        B = sg.block_matrix(point["beta_self"], point["beta_cross"], 2, jnp.float32)
        theta = sg.simulate(sg.replace(sur, B=B, K=B), theta0, dt=0.01, n_steps=10,
                            save_every=10).y1
        return {"r": jnp.abs(jnp.mean(jnp.exp(1j * theta)))}

    fn = counting(metric)
    points = sg.grid(beta_self=np.linspace(0.1, 1.0, 6), beta_cross=np.linspace(0.1, 1.0, 2))
    out = sg.sweep(fn, points, chunk_size=2, store=tmp_path / "store", progress=False)
    assert np.asarray(out["r"]).shape == (12,)
    assert fn.traces <= 2, fn.traces  # 6 chunks


class _Compiles(logging.Handler):
    """The programs JAX compiles while installed (``jax.log_compiles``)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split(" with ")[0][len("Compiling "):])


def test_a_second_fit_of_the_same_shapes_compiles_nothing():
    """The fit's step, polish and attention programs are compiled once per configuration, key
    (the realizations' graphs) and target shape: refitting another target of the same shape
    reuses every one of them, eager operations included."""
    from surrogate import fitting as sf

    config = sf.FitConfig(sizes=(6, 6), k=2, horizon=1.0, dt=0.1, n_initial=1, realizations=2,
                          restarts=2, steps=4, patience=10, polish_steps=2, held_out=0)
    rng = np.random.default_rng(0)

    def target():
        mass = rng.dirichlet(np.ones(2), size=(4, 2))  # (L, M, M) rows summing to 1
        return sf.make_target(mass)

    sf.fit(target(), jax.random.key(0), config)
    handler, logger = _Compiles(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            result = sf.fit(target(), jax.random.key(0), config)
    finally:
        logger.removeHandler(handler)
    assert np.all(np.isfinite(np.asarray(result.params.B)))
    assert handler.names == [], collections.Counter(handler.names)
