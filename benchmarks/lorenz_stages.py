"""The stages of the Lorenz main job against their previous implementations, in one process.

    PYTHONPATH=. python benchmarks/lorenz_stages.py

The main job (``xmodal lorenz``, ``make demo``) writes its stage times to report.md; the stages
over 10 % of its run time are the selection of (h, s), the planes, the anchor scan and the
forecasting (docs/lorenz.md). The planes' dynamics and statistics are measured by
``benchmarks/lorenz_plane.py`` (lanes against the per-point paths). This script times, on the
main job's default data (3 replications, seed 0, h = 4, s = 0.5), what changed besides:

* planes: the second copy of the two-copy distance through the plane's own blocks (the
  program the plane already compiled) against its own fold of the washout (a second program,
  compiled once per run: ``before_copy``, the code as it was);
* selection, anchor scan: the full readout alone (what both use) against the readouts of all
  three coalitions (``evaluate_observer`` as it was called), on the selection's 36 lanes;
* baselines, forecasting: the ESN's 27 candidates advanced together (``esn_states_batch``, bit
  for bit reservoirpy's states: tests/test_lorenz_baselines.py) against a reservoirpy run per
  candidate (``esn_states`` in a loop, as ``_tune_esn`` ran them),
  on the observer series and on the forecasting series; then one reservoirpy run of the chosen
  ESN as before (``esn_forecast`` refitted it once more after the tuning's fit: dropped).

Wall and process CPU seconds (the load of a shared machine inflates wall time; CPU seconds
are the fairer measure), the ratio before / now, and the largest difference of the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--devices", type=int, default=2, help="CPU devices (XLA host platform)")
args = parser.parse_args()
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import surrogate as sg  # noqa: E402
from lorenz.baselines import (  # noqa: E402
    ESN_GRID,
    FORECAST_LAMBDAS,
    _fit,
    _tune_esn,
    esn_states,
    forecast_targets,
    make_esn,
)
from lorenz.data import Splits, attractor_points, lorenz_series  # noqa: E402
from lorenz.experiment import LorenzConfig, _model, _plane_params  # noqa: E402
from lorenz.lanes import _advance, _sharded, lane_statistics  # noqa: E402
from lorenz.observer import evaluate_observer, modality_features  # noqa: E402
from lorenz.readout import LAMBDAS, one_blas_thread  # noqa: E402

config = LorenzConfig()
splits = config.splits
series = [lorenz_series(splits, dt=config.dt, sample_every=config.sample_every, y0=y0)
          for y0 in attractor_points(config.replications)]
base, theta0, theta_b = _model(config, config.seed, 4.0, 0.5)
delta = series[0].delta
xy = jnp.stack([s.u[:, :2] for s in series])
z = np.stack([np.asarray(s.u[:, 2:3], np.float64) for s in series])
rows = []


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0, time.process_time() - c0


def row(stage, what, before, now, diff):
    (_, wb, cb), (_, wn, cn) = before, now
    rows.append((stage, what, wb, cb, wn, cn, diff))


# Planes: the second copy's phases at the first training sample.
g = config.grid
bs, bc = np.meshgrid(config.betas, config.betas, indexing="ij")
params = _plane_params(base, bs.ravel(), bc.ravel(), sg.Tied())
solver = sg.FixedStep(unroll=2)
lane_statistics(base, params, theta0, xy, z, splits, delta=delta, block=config.block)  # compiles
first, block, r, p, n = splits.washout, config.block, len(series), g * g, base.network.n
pp, tb0 = _sharded(params, jnp.broadcast_to(theta_b, (r, p, n)), p)
ts = delta * jnp.arange(splits.total, dtype=base.dtype)


@functools.partial(jax.jit, static_argnames=("n_steps",))
def before_copy(params, theta, n_steps: int):
    """The code before: the second copy's own fold of the washout (another program)."""
    def one(theta_r, xy_r):
        sur = base.replace(drive=sg.make_drive(ts, xy_r))
        return sg.fold_batch(sur, theta_r, (), lambda a, i, th: a, dt=delta, n_steps=n_steps,
                             params=params).y1
    return jax.vmap(one)(theta, xy)


def now_copy():
    """As lane_statistics runs it now: the plane's blocks (compiled), features at ``first``."""
    theta, k_first = tb0, (first - 1) // block
    for k in range(k_first + 1):
        theta, fb = _advance(base, pp, theta, ts, xy, jnp.int32(k), n_steps=block, delta=delta,
                             on_lanes=True, solver=solver)  # the arguments lane_statistics passes
    return fb[:, :, first - (k_first * block + 1)]


now = timed(now_copy)
before = timed(lambda: before_copy(pp, tb0, first))
f_now, th_before = np.asarray(now[0]), np.asarray(before[0])
gap = np.abs(np.arctan2(f_now[..., :n] * np.cos(th_before) - f_now[..., n:] * np.sin(th_before),
                        f_now[..., n:] * np.cos(th_before) + f_now[..., :n] * np.sin(th_before)))
row("planes", f"second copy of the two-copy distance ({r} x {p} lanes, compile included)",
    before, now, f"phases {gap.max():.1g} rad")

# Selection and anchor scan: the readouts of the 36 selection lanes x 3 replications.
unit_c = _model(config, config.seed, 1.0, 1.0)[0].params.encoding_gain
lo, hi = config.beta_min, config.beta_max
combos = [(h, s, b) for h in config.anchors for s in config.scales
          for b in [(lo, lo), (lo, hi), (hi, lo), (hi, hi)]]
sel = _plane_params(base, [c[2][0] for c in combos], [c[2][1] for c in combos], sg.Tied())
sel = sel.replace(anchor=jnp.asarray([[c[0]] * n for c in combos], base.dtype),
                  encoding_gain=jnp.stack([c[1] * unit_c for c in combos]))
stats = lane_statistics(base, sel, theta0, xy, z, splits, delta=delta, block=block).stats
groups = modality_features(base.network)
now = timed(lambda: evaluate_observer(stats, groups, ("xy",)))
before = timed(lambda: evaluate_observer(stats, groups))
d = np.abs(now[0].nmse[..., 0, :] / before[0].nmse[..., 0, :] - 1).max()
row("selection, anchor scan", f"readouts of {r} x {len(combos)} lanes (full only vs 3 "
    "coalitions)", before, now, f"NMSE {d:.1g} rel.")


# Baselines and forecasting: the ESN's tuning.
def before_tune(esn, u_in, zz, ids, lambdas):
    """The code before: a reservoirpy run and a fit per candidate."""
    best = None
    for values in itertools.product(*ESN_GRID.values()):
        cand = dataclasses.replace(esn, **{k: float(v) for k, v in zip(ESN_GRID, values,
                                                                          strict=True)})
        err = float(np.mean(_fit(esn_states(cand, u_in), zz, ids, lambdas).nmse[1]))
        if best is None or err < best[0]:
            best = (err, cand)
    return best[1]


esn = make_esn(jax.random.fold_in(jax.random.key(config.seed), 11), config.esn_size)
f_splits = Splits(config.washout * 2, config.train * 2, config.val * 2, config.forecast_test)
f_series = lorenz_series(f_splits, dt=config.dt, sample_every=config.forecast_sample_every,
                         y0=attractor_points(config.replications + 1)[-1])
u, du, f_ids = forecast_targets(f_series, f_splits)
tasks = {"baselines": (series[0].u[:, :2], z[0], splits.ids(), LAMBDAS),
         "forecasting": (u[:-1, :2], du, f_ids, FORECAST_LAMBDAS)}
with one_blas_thread():
    for stage, (u_in, zz, ids, lambdas) in tasks.items():
        u_in = np.asarray(u_in, np.float64)
        now = timed(lambda: _tune_esn(esn, u_in, zz, ids, ESN_GRID, lambdas))  # noqa: B023
        before = timed(lambda: before_tune(esn, u_in, zz, ids, lambdas))  # noqa: B023
        same = "same ESN chosen" if now[0] == before[0] else "ANOTHER ESN CHOSEN"
        row(stage, f"ESN tuning, 27 candidates x {u_in.shape[0]} samples", before, now, same)

print(f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
print("| stage | what | before wall s | before CPU s | now wall s | now CPU s | ratio (wall, "
      "CPU) | difference |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for stage, what, wb, cb, wn, cn, diff in rows:
    print(f"| {stage} | {what} | {wb:.2f} | {cb:.2f} | {wn:.2f} | {cn:.2f} | {wb / wn:.1f}x, "
          f"{cb / cn:.1f}x | {diff} |")
saved = sum(cb - cn for *_, cb, _, cn, _ in rows)
print(f"CPU seconds saved per main job: {saved:.1f} (the selection's and the anchor scan's "
      f"readouts counted once: the scan's 24 lanes are 2/3 of the selection's)")
