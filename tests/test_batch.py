"""simulate_batch (points on the minor axis, plain XLA) against the vmapped fast path, and the
sweep engine with batched=True against the vmapped engine.

Tolerances: float64, the same arithmetic in another layout: 1e-12 after 200 steps (measured 0.0
on CPU). float32: 1e-5 in theta (measured 0.0 on CPU; another backend may fuse differently).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from surrogate.model import NORMALISATIONS

F64, F32 = jnp.float64, jnp.float32
STEPS = 200


def system(dtype, normalisation):
    ts = jnp.linspace(0.0, 3.0, 301, dtype=dtype)
    drive = sg.make_drive(ts, jnp.stack([jnp.sin(1.3 * ts), jnp.cos(0.7 * ts)], -1))
    sur = sg.paper_preset(jax.random.key(0), sizes=(20, 30), dtype=dtype, drive=drive,
                          normalisation=normalisation)
    return sur, sg.initial_phases(jax.random.key(1), sur.network.n, dtype)


def batch_params(sur, g=5):
    """Per-system omega, gain, B and K != B (G = g)."""
    dtype, n = sur.dtype, sur.network.n
    rng = np.random.default_rng(0)
    B = jnp.asarray(rng.uniform(1e-3, 1.5, (g, 2, 2)), dtype)
    return sg.Params(omega=jnp.asarray(rng.normal(size=(g, n)), dtype),
                     gain=jnp.asarray(rng.uniform(0.5, 2, (g, n)), dtype),
                     B=B, K=0.7 * B[:, ::-1] + 0.1)


def vmapped(sur, theta0, params):
    """Final phases and means of cos, sin by fold, one system at a time under vmap."""
    n = sur.network.n

    def one(p, th):
        init = (jnp.zeros(n, sur.dtype), jnp.zeros(n, sur.dtype))
        sol = sg.fold(dataclasses.replace(sur, params=p), th, init,
                      lambda acc, _, t: (acc[0] + jnp.cos(t), acc[1] + jnp.sin(t)),
                      dt=0.01, n_steps=STEPS, field="sparse")
        c, s = sol.acc
        return sol.y1, c / STEPS, s / STEPS

    return jax.vmap(one)(params, theta0)


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (F32, 1e-5)])
@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_batch_equals_vmapped_fold(dtype, tol, normalisation):
    sur, theta0 = system(dtype, normalisation)
    params = batch_params(sur)
    th0 = theta0[None, :] + jnp.linspace(-1, 1, 5, dtype=dtype)[:, None]
    out = sg.simulate_batch(sur, th0, params=params, dt=0.01, n_steps=STEPS, means=True)
    ref = vmapped(sur, th0, params)
    assert out.y1.shape == out.acc.cos.shape == (5, sur.network.n)
    assert out.y1.dtype == dtype
    for got, want in zip((out.y1, out.acc.cos, out.acc.sin), ref, strict=False):
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    assert float(jnp.abs(out.y1 - th0).max()) > 0.1  # it moved


def test_shared_leaves_broadcast_and_default_params():
    """Unbatched leaves are shared by every system; no params means sur.params (G = 1)."""
    sur, theta0 = system(F64, "softmax")
    params = batch_params(sur, g=3)
    shared = params.replace(omega=sur.params.omega, gain=sur.params.gain)
    out = sg.simulate_batch(sur, theta0, params=shared, dt=0.01, n_steps=50)
    full = sg.simulate_batch(sur, jnp.broadcast_to(theta0, (3, sur.network.n)), dt=0.01,
                             n_steps=50, params=shared.replace(
                                 omega=jnp.broadcast_to(sur.params.omega, (3, sur.network.n)),
                                 gain=jnp.broadcast_to(sur.params.gain, (3, sur.network.n))))
    # One ulp at most: the Butcher weights' products round, so a fused multiply-add that the
    # compiler picks for one layout and not the other can move the last bit.
    np.testing.assert_array_max_ulp(out.y1, full.y1, maxulp=1)
    one = sg.simulate_batch(sur, theta0, dt=0.01, n_steps=50)
    assert one.acc is None and one.ts is None and one.ys is None
    ref = sg.simulate(sur, theta0, dt=0.01, n_steps=50, save_every=50, field="sparse").ys[-1]
    np.testing.assert_allclose(one.y1[0], ref, rtol=0, atol=1e-12)


def test_bad_batches_are_rejected():
    sur, theta0 = system(F64, "softmax")
    params = batch_params(sur, g=3)
    with pytest.raises(ValueError, match=r"disagree on the batch size: \[3, 4\]"):
        sg.simulate_batch(sur, jnp.zeros((4, sur.network.n)), params=params, dt=0.01,
                          n_steps=5)
    with pytest.raises(ValueError, match=r"params.B must have shape \(2, 2\)"):
        sg.simulate_batch(sur, theta0, params=params.replace(B=jnp.zeros((3, 3, 3))),
                          dt=0.01, n_steps=5)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sg.simulate_batch(sur, theta0, dt=0.01, n_steps=0)


def test_batched_sweep_equals_vmapped_sweep():
    """sweep(batched=True) calls fn on whole chunks (padded, sharded) and keeps point order."""
    sur, theta0 = system(F64, "softmax")
    pts = sg.grid(beta_self=np.geomspace(1e-3, 1, 4), beta_cross=np.geomspace(1e-3, 1, 3))

    def one(p):
        B = sg.block_matrix(p["beta_self"], p["beta_cross"], 2, F64)
        return sg.simulate(sg.replace(sur, B=B, K=B), theta0, dt=0.01, n_steps=60,
                           save_every=60, field="sparse").ys[-1]

    def chunk(p):
        B = jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, F64))(p["beta_self"],
                                                                  p["beta_cross"])
        return sg.simulate_batch(sur, theta0, params=sur.params.replace(B=B, K=B), dt=0.01,
                                 n_steps=60).y1

    want = sg.sweep(one, pts, chunk_size=5, progress=False)
    got = sg.sweep(chunk, pts, chunk_size=5, progress=False, batched=True)
    assert got.shape == (12, sur.network.n)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.ptp(got[:, 0]) > 1e-3  # the points differ


def test_fold_batch_equals_vmapped_fold():
    """Per-system statistics of the (G, N) states (order parameter, every 7th step) agree with
    fold under vmap; the states reach update as (G, N)."""
    sur, theta0 = system(F64, "softmax")
    params = batch_params(sur, g=4)
    th0 = theta0[None, :] + jnp.linspace(-1, 1, 4, dtype=F64)[:, None]

    def stat(p, th):
        return sg.order_parameter(th, dataclasses.replace(sur, params=p))

    def update_batch(acc, i, theta):
        assert theta.shape == (4, sur.network.n)
        return jnp.where(i % 7 == 0, acc + jax.vmap(stat)(params, theta), acc)

    sol = sg.fold_batch(sur, th0, jnp.zeros((4, 2), F64), update_batch, dt=0.01,
                        n_steps=STEPS, t0=0.5, params=params)

    def one(p, th):
        return sg.fold(dataclasses.replace(sur, params=p), th, jnp.zeros(2, F64),
                       lambda a, i, t: jnp.where(i % 7 == 0, a + stat(p, t), a), dt=0.01,
                       n_steps=STEPS, t0=0.5, field="sparse")

    ref = jax.vmap(one)(params, th0)
    np.testing.assert_allclose(sol.y1, ref.y1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sol.acc, ref.acc, rtol=0, atol=1e-12)
    acc = sol.acc
    assert float(acc.min()) > 0
    assert float(jnp.abs(acc - acc[0][None, :]).max()) > 1e-3  # the systems differ


@pytest.mark.parametrize("anchored", [True, False])
def test_lanes_driven_by_several_drives_equal_one_run_per_drive(anchored):
    """``inputs`` (n_steps, 4, M, R): P points x R drives on one set of lanes (system g driven
    by drive g mod R) give each drive's own run exactly; shared encodings are computed per
    drive. A shape that does not divide the systems is refused."""
    _, theta0 = system(F64, "softmax")
    sur = sg.paper_preset(jax.random.key(0), sizes=(20, 30), dtype=F64, anchor=4.0)
    params = batch_params(sur, g=3)  # per-system omega, gain, B, K; no anchoring
    if anchored:  # shared anchoring: psi computed once per drive
        params = params.replace(anchor=sur.params.anchor, encoding_gain=sur.params.encoding_gain,
                                encoding_offset=sur.params.encoding_offset)
    else:  # every per-oscillator term shared: (N, 1, R) broadcast to the lanes
        params = params.replace(omega=sur.params.omega, gain=sur.params.gain)
    ts = jnp.linspace(0.0, 3.0, 301, dtype=F64)
    drives = [jnp.stack([jnp.sin(w * ts), jnp.cos(0.7 * w * ts)], -1) for w in (1.3, 2.1)]
    runs = []
    for values in drives:
        s = sur.replace(drive=sg.make_drive(ts, values))
        runs.append(sg.fold_batch(s, theta0, (), lambda a, i, t: a, dt=0.01, n_steps=STEPS,
                                  params=params).y1)
    u = jnp.stack([sg.rk4.stage_drive(sur.replace(drive=sg.make_drive(ts, v)).drive_at, 0.0,
                                      jnp.asarray(0.01, F64), STEPS, F64) for v in drives], -1)
    lanes = params.replace(**{name: jnp.repeat(getattr(params, name), 2, axis=0) for name in (
        "B", "K", "omega", "gain") if getattr(params, name).ndim > (1, 2)[name in "BK"]})
    both = sg.fold_batch(sur, theta0, (), lambda a, i, t: a, dt=0.01, n_steps=STEPS,
                         params=lanes, inputs=u).y1
    np.testing.assert_array_equal(both[0::2], runs[0])
    np.testing.assert_array_equal(both[1::2], runs[1])
    assert float(jnp.abs(runs[0] - runs[1]).max()) > 1e-3  # the drives matter
    with pytest.raises(ValueError, match="inputs must have shape"):
        sg.fold_batch(sur, theta0, (), lambda a, i, t: a, dt=0.01, n_steps=STEPS,
                      params=params, inputs=jnp.zeros((STEPS, 4, 2, 2), F64))
