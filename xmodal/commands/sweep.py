"""``xmodal sweep``: the surrogate's metrics over a grid of coupling parameters, from a spec file.

A spec (JSON or TOML) names the grid axes and, optionally, the model and the run::

    [axes]     # any of beta_self, beta_cross, kappa_self, kappa_cross, gain, omega_spread,
               # anchor
    beta_self  = { log = [1e-4, 1.0, 16] }      # start, stop, count (log-spaced, start > 0)
    beta_cross = { linear = [0.0, 1.0, 5] }     # or { values = [0.1, 0.5, 1.0] }

    [model]                              # the paper preset; K = B unless
    sizes = [50, 50]                     # kappa_self / kappa_cross are set here or swept
    beta_self = 0.1                      # values of parameters that are not swept
    beta_cross = 0.1
    k = 10
    p = 0.01
    cross_density = 0.1
    omega_spread = 1.0
    gain = 1.0
    anchor = 0.0                         # anchoring strength h (0, not swept: no term)
    encoding_scale = 1.5708              # encoding gains c_i ~ N(0, scale^2), pi / 2
    normalisation = "softmax"

    [run]
    dt = 0.01
    steps = 5000          # measured steps, after `transient` steps that are discarded
    transient = 1000
    sample_every = 10     # metrics are averaged over states sampled every n measured steps
    field = "auto"        # vector-field evaluation of the fast path
    float64 = false
    seed = 0              # graph, natural frequencies and initial phases (shared by all points)
    drive = "none"        # or "lorenz": x(t) drives modality 0, y(t) modality 1 (standardised)
    metrics = ["order_parameter", "modality_attention", "lyapunov"]   # default: first two
    chunk_size = 256      # optional: points per chunk (checkpoint granularity)

Metrics, per point, over the ``steps`` measured steps (states sampled every ``sample_every``):
``order_parameter`` gives ``order_parameter`` (mean Kuramoto R per modality) and
``order_parameter_final``; ``modality_attention`` gives the mean modality attention matrix P,
``cross_share`` (row sums of P off the diagonal) and ``dominance`` (D_01 = log P10 / P01);
``lyapunov`` the largest conditional Lyapunov exponent (Benettin on the reference vector field,
renormalised every ``lyapunov_renorm_every`` steps; costly: it differentiates the dense field),
transverse to the common phase shift unless the model is anchored.

Writes ``--out DIR``: ``sweep.npz`` (axes and metrics in grid layout, axis order as in the spec),
``sweep.json`` (spec, shapes, summary, versions) and ``chunks/`` (the resumable store); see
docs/sweep.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

from xmodal.arguments import add_out, add_quiet, nonnegative_int, positive_int
from xmodal.report import (
    atomic_write_json,
    atomic_write_npz,
    check_coordinator,
    check_memory,
    check_out_file,
    check_steps,
    prepare_out,
    remove_store,
    store_lock,
    versions,
    warn_non_finite_arrays,
)

HELP = "metrics of the surrogate over a parameter grid (resumable); write sweep.npz/json"
DESCRIPTION = (
    "Sweep the surrogate over a grid of coupling parameters given in a JSON or TOML spec file: per"
    " point, time-averaged order parameters, modality attention, cross-modal share, dominance and "
    "optionally the largest conditional Lyapunov exponent. Sharded over all devices; finished "
    "chunks are kept in OUT/chunks so that --resume continues a killed sweep.")
PARSER = {"epilog": __doc__.split("\n\n", 1)[1],
          "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=Path, help="spec file, .json or .toml")
    add_out(p, force="write into a non-empty --out (discarding the sweep stored there)")
    p.add_argument("--resume", action="store_true", help="continue the sweep stored in --out")
    add_quiet(p, "no progress on stderr")
    m = p.add_argument_group(
        "multi-host", "Run the same command on every host (one process each): the grid is "
        "sharded over the devices of all hosts; process 0 reads and writes --out. Any of these "
        "flags starts jax.distributed; those left out are detected from the cluster (SLURM, "
        "Open MPI, ...).")
    m.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    m.add_argument("--num-processes", type=positive_int, metavar="N", help="number of processes")
    m.add_argument("--process-id", type=nonnegative_int, metavar="I", help="this process, 0 .. N-1")
    m.add_argument("--distributed", action="store_true",
                   help="start jax.distributed with every setting detected from the cluster")
    m.add_argument("--start-timeout", type=positive_int, default=120, metavar="S",
                   help="seconds to wait for all processes to join (default 120)")


def _start_processes(coordinator, num_processes, process_id, timeout: int) -> None:
    import jax

    if process_id is not None and num_processes is not None and process_id >= num_processes:
        raise ValueError(f"--process-id must be in 0 .. --num-processes - 1, got {process_id}")
    # jax.distributed aborts the process (a C++ check failure, no Python exception) when the
    # coordinator cannot be reached or the port is taken: check both first, with a deadline.
    check_coordinator(coordinator, process_id=process_id, wait_s=timeout)
    try:  # sg.sweeping.init_multihost, with the timeout of the start
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout)
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"cannot start the multi-host run ({err}); give --coordinator HOST:PORT, "
            f"--num-processes and --process-id, or run under a cluster manager that JAX "
            f"detects (SLURM, Open MPI, ...)") from None


def run(args: argparse.Namespace) -> int:
    from surrogate.sweeping import load_spec

    spec = load_spec(args.spec)
    for axis in spec.axes:
        if axis.spacing != "values":
            check_memory(8 * axis.count, f"{spec.path}: field "
                         f"{f'axes.{axis.name}.{axis.spacing}[2]'!r} ({axis.count} values)")
    run_ = spec.run
    if not run_.seed < 2**63:
        raise ValueError(f"{args.spec}: field 'run.seed': must be < 2**63, got {run_.seed}")
    check_steps(run_.transient + run_.steps, f"{args.spec}: run.transient + run.steps")
    n_points = math.prod(spec.shape)
    check_memory(256 * n_points, f"{args.spec}: the grid of {n_points:.4g} points (axes "
                 + " x ".join(map(str, spec.shape)) + ")")
    if run_.drive != "none":  # the drive is tabulated at every step, then interpolated
        item = 8 if run_.float64 else 4
        check_memory(24 * item * run_.drive_samples,
                     f"{args.spec}: field 'run.steps' = {run_.steps} (+ run.transient "
                     f"{run_.transient}) with run.drive = {run_.drive!r}, a drive tabulated at "
                     f"every step,")
    check_coordinator(args.coordinator)
    out = prepare_out(args.out, force=args.force, resume=args.resume)
    for name in ("sweep.json", "sweep.npz"):
        check_out_file(out / name, "--out", inputs=[("SPEC", args.spec)])

    import jax

    if run_.float64:
        jax.config.update("jax_enable_x64", True)

    multihost = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or any(x is not None for x in multihost):
        # returns once every process has passed the check above
        _start_processes(*multihost, args.start_timeout)
    # process 0 writes the store: it holds the folder's lock while it does
    with store_lock(out) if jax.process_index() == 0 else contextlib.nullcontext():
        if args.force and not args.resume:
            remove_store(out / "chunks")
        return _sweep(args, spec, out)


def _sweep(args, spec, out) -> int:
    import jax
    import jax.numpy as jnp

    from surrogate.sweeping import run_spec, summary

    run_ = spec.run
    drive = None
    if run_.drive == "lorenz":
        from lorenz.data import lorenz_xy

        drive = lorenz_xy(run_.drive_samples, run_.dt,
                          jnp.float64 if run_.float64 else jnp.float32)
    t0 = time.perf_counter()
    points, res = run_spec(spec, out / "chunks", drive_samples=drive, resume=args.resume,
                           progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    if jax.process_index() != 0:
        return 0
    gridded = points.unflatten(res)
    arrays = {f"axis_{name}": values for name, values in points.axes.items()}
    arrays.update(gridded)
    atomic_write_npz(out / "sweep.npz", **arrays)
    warn_non_finite_arrays(str(out / "sweep.npz"), gridded)
    manifest = json.loads((out / "chunks" / "manifest.json").read_text())
    atomic_write_json(out / "sweep.json", {
        "command": "sweep",
        "spec_file": str(args.spec),
        "axes": {name: values.tolist() for name, values in points.axes.items()},
        "axis_order": list(points.axes),
        "grid_shape": list(points.shape),
        **spec.tables(),
        "metrics": summary(gridded),
        "seconds": elapsed,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "fingerprint": manifest["fingerprint"],
        "versions": versions(),
    })
    print(f"swept {len(points)} points ({' x '.join(map(str, points.shape))}) in "
          f"{elapsed:.1f} s; wrote {out}/sweep.npz, sweep.json")
    return 0
