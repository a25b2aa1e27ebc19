"""The Lorenz observer plane: the batched engine (points on lanes) against the per-point path.

    PYTHONPATH=. python benchmarks/lorenz_plane.py              # the default plane, 2 devices
    PYTHONPATH=. python benchmarks/lorenz_plane.py --grid 2 --train 250 --val 125 --test 125

One process, one problem: the main job's default plane (tied reading, g x g points of
(beta_self, beta_cross), h = 4, s = 0.5, the default series: washout 250, train 2000,
validation 250, test 250 samples of 0.04) for R replications, through

* lanes: ``lorenz.lanes.lane_statistics`` as the main job runs it (``surrogate.fold_batch``:
  the points times the replications on the minor axis, sharded over the CPU devices; on CPU one
  exponential per undirected edge, ``surrogate.edge_pairs``; features by block; float64 Gram
  products on the host);
* lanes, one exp per slot: the same with ``pairs=False`` (the exponentials per neighbour slot);
* per-point: the same blocks and host statistics, the dynamics by ``surrogate.fold`` vmapped
  over the points (bit-identical on CPU: the reference of the equality check);
* before (``--before``): the code as issue 24 found it, ``lorenz.observer.observer_statistics``
  (``surrogate.fold`` per point, statistics in JAX by one-hot split masks) vmapped over the
  points in one jit, the points sharded over the devices as the sweep engine ran them
  (statistics in JAX float64: x64 is enabled for it, last).

Each variant runs once untimed, then ``--repeat`` times timed (wall and process CPU time; the
medians are reported); the first run minus the median is reported as compile time. Then: the
NMSE (every coalition and split), both Shapley values and the chosen ridge of lanes (both) and
per-point at every point (equal to 1e-6 relative), the lanes statistics again under the x64 flag
(the same numbers), a flop estimate per point-step and the fraction of a float32 matrix
product's rate timed in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--grid", type=int, default=8)
parser.add_argument("--replications", type=int, default=1)
parser.add_argument("--washout", type=int, default=250)
parser.add_argument("--train", type=int, default=2000)
parser.add_argument("--val", type=int, default=250)
parser.add_argument("--test", type=int, default=250)
parser.add_argument("--block", type=int, default=125)
parser.add_argument("--devices", type=int, default=2, help="CPU devices (XLA host platform)")
parser.add_argument("--before", action="store_true", help="also time the code before")
parser.add_argument("--repeat", type=int, default=3, help="timed runs per path (the median "
                    "is reported)")
parser.add_argument("--unrolled-stages", action="store_true",
                    help="FixedStep(stage_loop=False): the four RK4 stages unrolled")
parser.add_argument("--gram-on", choices=("host", "device"), default=None,
                    help="where the lanes sum their Gram products (default: the host on CPU, "
                    "the device elsewhere)")
parser.add_argument("--unroll", type=int, default=2, help="FixedStep(unroll=...): steps per "
                    "scan iteration")
args = parser.parse_args()
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import surrogate as sg  # noqa: E402
from lorenz.data import Splits, attractor_points, lorenz_series  # noqa: E402
from lorenz.lanes import lane_statistics  # noqa: E402
from lorenz.observer import evaluate_observer, modality_features, observer_statistics  # noqa

splits = Splits(args.washout, args.train, args.val, args.test)
series = [lorenz_series(splits, sample_every=4, y0=y0)
          for y0 in attractor_points(args.replications)]
base = sg.paper_preset(jax.random.key(0), sizes=(50, 50), gain=0.0, anchor=4.0,
                       encoding_scale=0.5)
theta0 = sg.initial_phases(jax.random.key(1), base.network.n)
betas = np.logspace(-4, 0, args.grid)
bs, bc = np.meshgrid(betas, betas, indexing="ij")
Bs = jax.vmap(lambda a, b: sg.block_matrix(a, b, 2, jnp.float32))(
    jnp.asarray(bs.ravel(), jnp.float32), jnp.asarray(bc.ravel(), jnp.float32))
params = base.params.replace(B=Bs, K=Bs)
xy = jnp.stack([s.u[:, :2] for s in series])
z = np.stack([np.asarray(s.u[:, 2:3], np.float64) for s in series])
groups = modality_features(base.network)
P, R, T = args.grid ** 2, args.replications, splits.total
point_steps = P * R * (T - 1)


def timed(fn):
    """(result, compile s, wall s, cpu s): medians of ``--repeat`` runs after a first one."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    return out, max(first - wall, 0.0), wall, cpu


solver = sg.FixedStep(stage_loop=not args.unrolled_stages, unroll=args.unroll)


host = {}


def lanes(on_lanes=True, pairs=None, name="lanes"):
    ls = lane_statistics(base, params, theta0, xy, z, splits, delta=series[0].delta,
                         block=args.block, on_lanes=on_lanes, solver=solver, pairs=pairs,
                         gram_on=args.gram_on)
    host[name] = ls.host_seconds
    return ls.stats


rows = {}
results = {}
for name, fn in (("lanes", lanes),
                 ("lanes, one exp per slot", lambda: lanes(pairs=False, name="lanes, one exp "
                                                           "per slot")),
                 ("per-point", lambda: lanes(False, name="per-point"))):
    stats, comp, wall, cpu = timed(fn)
    results[name] = evaluate_observer(stats, groups)
    rows[name] = (comp, wall, cpu)

if args.before:
    jax.config.update("jax_enable_x64", True)
    x64_lanes = evaluate_observer(lanes(), groups)

    def one(B, s):
        return observer_statistics(sg.replace(base, B=B, K=B), theta0, s, splits,
                                   block=args.block)

    # As the sweep engine ran it then: the points vmapped in one jit, sharded over the devices.
    per_series = [jax.jit(jax.vmap(lambda B, s=s: one(B, s))) for s in series]
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("points",))
    Bs_sharded = jax.device_put(Bs, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("points")))

    def before():
        return [fn(Bs_sharded) for fn in per_series]

    out, comp, wall, cpu = timed(before)
    rows["before"] = (comp, wall, cpu)
    stats = jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]), *out)
    results["before"] = evaluate_observer(stats, groups)

# A float32 matrix product of comparable work, in the same process: the machine's rate.
a = jnp.ones((1024, 1024), jnp.float32)
mm = jax.jit(lambda x: x @ x)
jax.block_until_ready(mm(a))
t0 = time.perf_counter()
for _ in range(10):
    jax.block_until_ready(mm(a))
matmul_rate = 10 * 2 * 1024 ** 3 / (time.perf_counter() - t0)

# Flops per point-step: RK4, 4 stages; per stage and oscillator D neighbour slots of ~10 float
# operations and one exp (counted as 1) plus ~20 for the input and anchoring terms (2 sin/cos);
# the features (2N sin/cos) and the float64 Gram product 2 (2N + 2)^2 per sample.
n, d = base.network.n, base.network.neighbours.shape[1]
flops = 4 * n * (11 * d + 20) + 2 * n + 2 * (2 * n + 2) ** 2

print(f"plane: {P} points x {R} replication(s) x {T - 1} steps = {point_steps} point-steps; "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s); {solver}")
print("| path | compile s | wall s | CPU s | of which host statistics | point-steps/s | "
      "per CPU s | ratio to per-point (wall, CPU) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
ref, ref_cpu = rows["per-point"][1], rows["per-point"][2]
for name, (comp, wall, cpu) in rows.items():
    hs = f"{host[name]:.2f}" if name in host else "-"
    print(f"| {name} | {comp:.1f} | {wall:.2f} | {cpu:.2f} | {hs} | {point_steps / wall:,.0f} | "
          f"{point_steps / cpu:,.0f} | {ref / wall:.2f}x, {ref_cpu / cpu:.2f}x |")
if "before" in rows:
    for name in ("lanes", "lanes, one exp per slot", "per-point"):
        print(f"{name} / before (the issue's baseline): "
              f"{rows['before'][1] / rows[name][1]:.2f}x wall, "
              f"{rows['before'][2] / rows[name][2]:.2f}x CPU")

a_, b_ = results["lanes"], results["per-point"]


def rel(x, y):
    return float(np.max(np.abs(np.asarray(x) / np.asarray(y) - 1)))


checks = {}
for name in ("lanes", "lanes, one exp per slot"):
    a_ = results[name]
    check = {"nmse": rel(a_.nmse, b_.nmse), "phi (log)": rel(a_.phi("log"), b_.phi("log")),
             "phi (neg)": rel(a_.phi("neg"), b_.phi("neg")), "ridge": rel(a_.lam, b_.lam)}
    print(f"{name} vs per-point, largest relative difference: "
          + ", ".join(f"{k} {v:.2g}" for k, v in check.items()))
    checks.update({f"{name}: {k}": v for k, v in check.items()})
a_ = results["lanes"]
if args.before:
    print(f"lanes under the x64 flag vs without: nmse {rel(x64_lanes.nmse, a_.nmse):.2g}, "
          f"ridge {rel(x64_lanes.lam, a_.lam):.2g}")
    b0 = results["before"]
    t_rel = np.abs(a_.test[..., 0] / b0.test[..., 0] - 1)
    print(f"lanes vs before (dynamics differ in float32 rounding; the readouts at small ridge "
          f"amplify it): nmse (every coalition and split) {rel(a_.nmse, b0.nmse):.2g}; test NMSE "
          f"of the full readout: median {np.median(t_rel):.2g}, largest {t_rel.max():.2g}; "
          f"chosen ridge equal at {np.mean(a_.lam == b0.lam):.0%} of points x coalitions")
rate = flops * point_steps / rows["lanes"][1]
print(f"flops per point-step ~{flops:,} (N = {n}, D = {d} slots); lanes {rate / 1e9:.2f} GFLOP/s "
      f"= {rate / matmul_rate:.1%} of a 1024^2 float32 matmul's {matmul_rate / 1e9:.1f} GFLOP/s")
ok = max(checks.values()) <= 1e-6
print("equality to 1e-6 relative:", "yes" if ok else "NO")
sys.exit(0 if ok else 1)
