"""``xmodal sweep``: the surrogate's metrics over a grid of coupling parameters, from a spec file.

A spec (JSON or TOML) names the grid axes and, optionally, the model and the run::

    [axes]     # any of beta_self, beta_cross, kappa_self, kappa_cross, gain, omega_spread
    beta_self  = { log = [1e-4, 1.0, 16] }      # start, stop, count (log-spaced, start > 0)
    beta_cross = { linear = [0.0, 1.0, 5] }     # or { values = [0.1, 0.5, 1.0] }

    [model]                              # paper preset (DESIGN.md section 3); K = B unless
    sizes = [50, 50]                     # kappa_self / kappa_cross are set here or swept
    beta_self = 0.1                      # values of parameters that are not swept
    beta_cross = 0.1
    k = 10
    p = 0.01
    cross_density = 0.1
    omega_spread = 1.0
    gain = 1.0
    normalisation = "softmax"

    [run]
    dt = 0.01
    steps = 5000          # measured steps, after `transient` steps that are discarded
    transient = 1000
    sample_every = 10     # metrics are averaged over states sampled every n measured steps
    kind = "auto"         # vector-field evaluation of the fast path
    float64 = false
    seed = 0              # graph, natural frequencies and initial phases (shared by all points)
    drive = "none"        # or "lorenz": x(t) drives modality 0, y(t) modality 1 (standardised)
    metrics = ["order_parameter", "modality_attention", "lyapunov"]   # default: first two
    chunk_size = 256      # optional: points per chunk (checkpoint granularity)

Metrics, per point, over the ``steps`` measured steps (states sampled every ``sample_every``):
``order_parameter`` gives ``order_parameter`` (mean Kuramoto R per modality) and
``order_parameter_final``; ``modality_attention`` gives the mean modality attention matrix P,
``cross_share`` (row sums of P off the diagonal) and ``dominance`` (D_01 = log P10 / P01);
``lyapunov`` the largest conditional Lyapunov exponent transverse to the common phase shift
(Benettin on the reference vector field, renormalised every ``lyapunov_renorm_every`` steps;
costly: it differentiates the dense field).

Writes ``--out DIR``: ``sweep.npz`` (axes and metrics in grid layout, axis order as in the spec),
``sweep.json`` (spec, shapes, summary, versions) and ``chunks/`` (the resumable store).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from xmodal.report import (
    atomic_write_json,
    atomic_write_npz,
    check_coordinator,
    check_memory,
    check_steps,
    prepare_out,
    remove_store,
    versions,
    warn_non_finite_arrays,
)

#: Parameters a spec may sweep (per-point values; the graph is shared by all points).
SWEEPABLE = ("beta_self", "beta_cross", "kappa_self", "kappa_cross", "gain", "omega_spread")
METRICS = ("order_parameter", "modality_attention", "lyapunov")
MODEL_DEFAULTS = dict(beta_self=0.1, beta_cross=0.1, sizes=[50, 50], k=10, p=0.01,
                      cross_density=0.1, omega_spread=1.0, gain=1.0, normalisation="softmax",
                      kappa_self=None, kappa_cross=None)
RUN_DEFAULTS = dict(dt=0.01, steps=5000, transient=1000, sample_every=10, kind="auto",
                    float64=False, seed=0, drive="none", metrics=["order_parameter",
                    "modality_attention"], chunk_size=None, lyapunov_renorm_every=10)


# ------------------------------------------------------------------------------------ spec


class _Spec:
    """Checks fields of one spec file; errors name the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, field: str, msg: str) -> ValueError:
        return ValueError(f"{self.path}: field {field!r}: {msg}")

    def number(self, field, value, *, positive=False, minimum=None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise self.error(field, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.error(field, f"must be positive, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(field, f"must be >= {minimum}, got {value!r}")
        return float(value)

    def integer(self, field, value, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(field, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def table(self, field, value) -> dict:
        if not isinstance(value, dict):
            raise self.error(field, f"must be a table/object, got {type(value).__name__}")
        return value

    def known(self, field, table: dict, allowed) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(f"{field}.{key}" if field else key,
                                 f"unknown field; expected one of {sorted(allowed)}")


def _read(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(f"{path}: spec file must end in .json or .toml")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read spec file ({err.strerror})") from None
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except ValueError as err:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid {suffix[1:].upper()} ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the spec must be a table/object at the top level")
    return data


def _axis(spec: _Spec, name: str, value):
    import numpy as np

    field = f"axes.{name}"
    if name not in SWEEPABLE:
        raise spec.error(field, f"cannot be swept; sweepable: {', '.join(SWEEPABLE)} (the graph "
                         f"is shared by all points: set sizes/k/p/cross_density in [model])")
    spec.table(field, value)
    if len(value) != 1 or next(iter(value)) not in ("log", "linear", "values"):
        raise spec.error(field, "must be exactly one of {log = [start, stop, count]}, "
                         "{linear = [start, stop, count]}, {values = [...]}")
    kind, args = next(iter(value.items()))
    sub = f"{field}.{kind}"
    if not isinstance(args, list) or not args:
        raise spec.error(sub, f"must be a non-empty list, got {args!r}")
    if kind == "values":
        return np.asarray([spec.number(f"{sub}[{i}]", v) for i, v in enumerate(args)])
    if len(args) != 3:
        raise spec.error(sub, f"must be [start, stop, count], got {args!r}")
    start = spec.number(f"{sub}[0]", args[0], positive=kind == "log")
    stop = spec.number(f"{sub}[1]", args[1], positive=kind == "log")
    count = spec.integer(f"{sub}[2]", args[2], 1)
    check_memory(8 * count, f"{spec.path}: field {sub + '[2]'!r} ({count} values)")
    if kind == "log":
        return np.geomspace(start, stop, count)
    return np.linspace(start, stop, count)


def load_spec(path) -> dict:
    """Read and check a sweep spec; returns {"axes": {name: values}, "model": {...},
    "run": {...}} with defaults filled in. ValueError naming the file and field otherwise."""
    path = Path(path)
    data = _read(path)
    spec = _Spec(path)
    spec.known("", data, ("axes", "model", "run"))
    if "axes" not in data:
        raise spec.error("axes", "missing; name at least one axis, e.g. "
                         "beta_self = { log = [1e-4, 1.0, 16] }")
    axes_in = spec.table("axes", data["axes"])
    if not axes_in:
        raise spec.error("axes", "must name at least one axis")
    axes = {name: _axis(spec, name, v) for name, v in axes_in.items()}

    model = dict(MODEL_DEFAULTS)
    given = spec.table("model", data.get("model", {}))
    spec.known("model", given, MODEL_DEFAULTS)
    model.update(given)
    sizes = model["sizes"]
    if not isinstance(sizes, list) or len(sizes) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in sizes):
        raise spec.error("model.sizes", f"must be two integers >= 2, got {sizes!r}")
    k = spec.integer("model.k", model["k"], 0)
    if k % 2 or k >= min(sizes):
        raise spec.error("model.k", f"must be even and smaller than every size, got {k}")
    for name in ("p", "cross_density"):
        v = spec.number(f"model.{name}", model[name], minimum=0.0)
        if v > 1:
            raise spec.error(f"model.{name}", f"must be in [0, 1], got {v!r}")
    for name in ("beta_self", "beta_cross", "omega_spread", "gain"):
        spec.number(f"model.{name}", model[name])
    for name in ("kappa_self", "kappa_cross"):
        if model[name] is not None:
            spec.number(f"model.{name}", model[name])
    if model["normalisation"] not in ("softmax", "mean", "none"):
        raise spec.error("model.normalisation", "must be 'softmax', 'mean' or 'none', got "
                         f"{model['normalisation']!r}")

    run = dict(RUN_DEFAULTS)
    given = spec.table("run", data.get("run", {}))
    spec.known("run", given, RUN_DEFAULTS)
    run.update(given)
    spec.number("run.dt", run["dt"], positive=True)
    spec.integer("run.steps", run["steps"], 1)
    spec.integer("run.transient", run["transient"], 0)
    spec.integer("run.sample_every", run["sample_every"], 1)
    spec.integer("run.lyapunov_renorm_every", run["lyapunov_renorm_every"], 1)
    if run["steps"] % run["sample_every"]:
        raise spec.error("run.steps", f"must be a multiple of run.sample_every="
                         f"{run['sample_every']}, got {run['steps']}")
    if run["steps"] % run["lyapunov_renorm_every"]:
        raise spec.error("run.steps", f"must be a multiple of run.lyapunov_renorm_every="
                         f"{run['lyapunov_renorm_every']}, got {run['steps']}")
    if run["kind"] not in ("auto", "dense", "sparse"):
        raise spec.error("run.kind", f"must be 'auto', 'dense' or 'sparse', got {run['kind']!r}")
    if not isinstance(run["float64"], bool):
        raise spec.error("run.float64", f"must be true or false, got {run['float64']!r}")
    spec.integer("run.seed", run["seed"], 0)
    if run["drive"] not in ("none", "lorenz"):
        raise spec.error("run.drive", f"must be 'none' or 'lorenz', got {run['drive']!r}")
    metrics = run["metrics"]
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
        raise spec.error("run.metrics", f"must be a non-empty list drawn from {list(METRICS)}, "
                         f"got {metrics!r}")
    if run["chunk_size"] is not None:
        spec.integer("run.chunk_size", run["chunk_size"], 1)
    return {"axes": axes, "model": model, "run": run}


# ------------------------------------------------------------------------------ per point


def _lorenz_drive(n_samples: int, dt: float, dtype):
    """Standardised Lorenz-63 x(t), y(t) at t = 0, dt, ..., as a (T, 2) piecewise-linear drive."""
    import jax.numpy as jnp

    from lorenz.systems import lorenz63, rk4_trajectory
    from surrogate import make_drive

    _, ys = rk4_trajectory(lorenz63, jnp.asarray([1.0, 1.0, 1.0], dtype), dt=dt,
                           n_steps=n_samples - 1, transient=round(20.0 / dt))
    xy = ys[:, :2]
    xy = (xy - xy.mean(0)) / xy.std(0)
    return make_drive(dt * jnp.arange(n_samples, dtype=dtype), xy)


class _Model:
    """What every point of a checked spec shares, and the per-point pieces of both paths."""

    def __init__(self, spec: dict):
        import jax
        import jax.numpy as jnp

        import surrogate as sg

        model, run = spec["model"], spec["run"]
        self.model, self.run, self.metrics = model, run, run["metrics"]
        self.dtype = dtype = jnp.float64 if run["float64"] else jnp.float32
        k_model, k_theta = jax.random.split(jax.random.key(run["seed"]))
        drive = None
        if run["drive"] == "lorenz":
            drive = _lorenz_drive(run["transient"] + run["steps"] + 2, run["dt"], dtype)
        self.base = sg.paper_preset(
            k_model, sizes=tuple(model["sizes"]), k=model["k"], p=model["p"],
            cross_density=model["cross_density"], omega_spread=1.0, gain=1.0,
            normalisation=model["normalisation"], drive=drive, dtype=dtype,
        )
        self.theta0 = sg.initial_phases(k_theta, self.base.network.n, dtype)
        self.m = self.base.network.n_populations
        self.zeros = (jnp.zeros((self.m,), dtype), jnp.zeros((self.m, self.m), dtype))

    def params(self, point):
        """``Params`` of one point (name -> scalar); K = B unless kappa_* are given."""
        import jax.numpy as jnp

        import surrogate as sg

        def get(name, default=None):
            value = point[name] if name in point else self.model[name]
            return default if value is None else jnp.asarray(value, self.dtype)

        b_self, b_cross = get("beta_self"), get("beta_cross")
        unit_omega = self.base.params.omega  # N(0, 1) draws, scaled by omega_spread
        return sg.Params(
            omega=get("omega_spread") * unit_omega,
            gain=jnp.full(unit_omega.shape, get("gain"), self.dtype),
            B=sg.block_matrix(b_self, b_cross, self.m, self.dtype),
            K=sg.block_matrix(get("kappa_self", b_self), get("kappa_cross", b_cross), self.m,
                              self.dtype))

    def surrogate(self, params):
        import dataclasses

        return dataclasses.replace(self.base, params=params)

    def sample(self, params, theta, acc):
        """``acc`` plus the sampled metrics of one system at phases ``theta`` (N,)."""
        import surrogate as sg

        sur = self.surrogate(params)
        r_sum, p_sum = acc
        r = sg.order_parameter(theta, sur) if "order_parameter" in self.metrics else 0
        p = sg.modality_attention(theta, sur) if "modality_attention" in self.metrics else 0
        return r_sum + r, p_sum + p

    def outputs(self, params, theta_start, theta, acc):
        """The metrics of one system from its sums and its first and last measured states."""
        import jax.numpy as jnp

        import surrogate as sg

        sur, run = self.surrogate(params), self.run
        r_sum, p_sum = acc
        n_samples = run["steps"] // run["sample_every"]
        out = {}
        if "order_parameter" in self.metrics:
            out["order_parameter"] = r_sum / n_samples
            out["order_parameter_final"] = sg.order_parameter(theta, sur)
        if "modality_attention" in self.metrics:
            p = p_sum / n_samples
            out["modality_attention"] = p
            out["cross_share"] = p.sum(-1) - jnp.diagonal(p)
            out["dominance"] = sg.dominance_index(p, 0, 1)
        if "lyapunov" in self.metrics:
            from surrogate.lyapunov import conditional_lyapunov_exponents

            res = conditional_lyapunov_exponents(
                sur, theta_start, dt=run["dt"], n_steps=run["steps"], k=1,
                renorm_every=run["lyapunov_renorm_every"], n_records=1,
                t0=run["transient"] * run["dt"])
            out["lyapunov"] = res.exponents[0]
        return out


def sweep_function(spec: dict):
    """``(fn, batched)`` for ``surrogate.sweep``: ``chunk_function`` when the vector field is
    the neighbour-slot one ("sparse", or "auto" on a sparse graph), else ``point_function``."""
    import surrogate as sg

    model = _Model(spec)
    if sg.resolve_kind(model.base, model.run["kind"]) == "sparse":
        return chunk_function(model), True
    return point_function(model), False


def point_function(spec):
    """``fn(point) -> {metric: array}`` for one point (``sg.fold``; ``surrogate.sweep`` vmaps
    it), from a checked spec (or its ``_Model``): the reference for ``chunk_function``."""
    import jax

    import surrogate as sg

    model = spec if isinstance(spec, _Model) else _Model(spec)
    run = model.run
    dt, steps, transient, every = run["dt"], run["steps"], run["transient"], run["sample_every"]

    def fn(point):
        params = model.params(point)
        sur = model.surrogate(params)
        theta = model.theta0
        if transient:
            theta, _ = sg.fold(sur, theta, (), lambda acc, i, th: acc, dt=dt,
                               n_steps=transient, kind=run["kind"])
        theta_start = theta

        def update(acc, i, th):
            return jax.lax.cond(i % every == 0, lambda a: model.sample(params, th, a),
                                lambda a: a, acc)

        theta, acc = sg.fold(sur, theta, model.zeros, update, dt=dt, n_steps=steps,
                             t0=transient * dt, kind=run["kind"])
        return model.outputs(params, theta_start, theta, acc)

    return fn


def chunk_function(spec):
    """``fn(points) -> {metric: (G, ...) array}`` for a chunk of G points (name -> (G,) array)
    with the points on the minor axis (``sg.fold_batch``, the neighbour-slot vector field), for
    ``surrogate.sweep(..., batched=True)``; the same numbers as ``point_function`` with kind
    "sparse"."""
    import jax
    import jax.numpy as jnp

    import surrogate as sg

    model = spec if isinstance(spec, _Model) else _Model(spec)
    run = model.run
    dt, steps, transient, every = run["dt"], run["steps"], run["transient"], run["sample_every"]

    def fn(points):
        params = jax.vmap(model.params)(points)
        g = params.B.shape[0]
        theta = jnp.broadcast_to(model.theta0, (g, model.theta0.shape[0]))
        if transient:
            theta, _ = sg.fold_batch(model.base, theta, (), lambda acc, i, th: acc, dt=dt,
                                     n_steps=transient, params=params)
        theta_start = theta
        sample = jax.vmap(model.sample)

        def update(acc, i, th):
            return jax.lax.cond(i % every == 0, lambda a: sample(params, th, a), lambda a: a,
                                acc)

        zeros = jax.tree.map(lambda z: jnp.broadcast_to(z, (g,) + z.shape), model.zeros)
        theta, acc = sg.fold_batch(model.base, theta, zeros, update, dt=dt, n_steps=steps,
                                   t0=transient * dt, params=params)
        return jax.vmap(model.outputs)(params, theta_start, theta, acc)

    return fn


# ------------------------------------------------------------------------------------ CLI


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="metrics of the surrogate over a parameter grid (resumable); write sweep.npz/json",
        description="Sweep the surrogate over a grid of coupling parameters given in a JSON or "
        "TOML spec file: per point, time-averaged "
        "order parameters, modality attention, cross-modal share, dominance and optionally the "
        "largest conditional Lyapunov exponent. Sharded over all devices; finished chunks are "
        "kept in OUT/chunks so that --resume continues a killed sweep.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", type=Path, help="spec file, .json or .toml")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue the sweep stored in --out")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out (discarding the sweep stored there)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    m = p.add_argument_group(
        "multi-host", "Run the same command on every host (one process each): the grid is "
        "sharded over the devices of all hosts; process 0 reads and writes --out. Any of these "
        "flags starts jax.distributed; those left out are detected from the cluster (SLURM, "
        "Open MPI, ...).")
    m.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    m.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    m.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1")
    m.add_argument("--distributed", action="store_true",
                   help="start jax.distributed with every setting detected from the cluster")
    m.add_argument("--start-timeout", type=int, default=120, metavar="S",
                   help="seconds to wait for all processes to join (default 120)")
    p.set_defaults(run=run)


def _start_processes(coordinator, num_processes, process_id, timeout: int) -> None:
    import jax

    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {num_processes}")
    if process_id is not None and (
            process_id < 0 or (num_processes is not None and process_id >= num_processes)):
        raise ValueError(f"--process-id must be in 0 .. --num-processes - 1, got {process_id}")
    if timeout < 1:
        raise ValueError(f"--start-timeout must be >= 1 second, got {timeout}")
    # jax.distributed aborts the process (a C++ check failure, no Python exception) when the
    # coordinator cannot be reached or the port is taken: check both first, with a deadline.
    check_coordinator(coordinator, process_id=process_id, wait_s=timeout)
    try:  # sg.init_multihost, with the timeout of the start
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout)
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"cannot start the multi-host run ({err}); give --coordinator HOST:PORT, "
            f"--num-processes and --process-id, or run under a cluster manager that JAX "
            f"detects (SLURM, Open MPI, ...)") from None


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    run_ = spec["run"]
    if not run_["seed"] < 2**63:
        raise ValueError(f"{args.spec}: field 'run.seed': must be < 2**63, got {run_['seed']}")
    check_steps(run_["transient"] + run_["steps"], f"{args.spec}: run.transient + run.steps")
    n_points = math.prod(len(v) for v in spec["axes"].values())
    check_memory(256 * n_points, f"{args.spec}: the grid of {n_points:.4g} points (axes "
                 + " x ".join(str(len(v)) for v in spec["axes"].values()) + ")")
    check_coordinator(args.coordinator)
    out = prepare_out(args.out, force=args.force, resume=args.resume)
    if args.force and not args.resume:
        remove_store(out / "chunks")

    import jax

    if spec["run"]["float64"]:
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    import surrogate as sg

    multihost = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or any(x is not None for x in multihost):
        _start_processes(*multihost, args.start_timeout)  # returns once every process has passed the check above

    points = sg.grid(**spec["axes"])
    fn, batched = sweep_function(spec)
    config = {"model": spec["model"], "run": spec["run"]}
    t0 = time.perf_counter()
    res = sg.sweep(fn, points, chunk_size=spec["run"]["chunk_size"], store=out / "chunks",
                   config=config, resume=args.resume, progress=not args.quiet, batched=batched)
    elapsed = time.perf_counter() - t0
    if jax.process_index() != 0:
        return 0
    gridded = points.unflatten(res)
    arrays = {f"axis_{name}": values for name, values in points.axes.items()}
    arrays.update(gridded)
    atomic_write_npz(out / "sweep.npz", **arrays)
    warn_non_finite_arrays(str(out / "sweep.npz"), gridded)
    summary = {name: {"shape": list(np.shape(v)), "min": float(np.nanmin(v)),
                      "max": float(np.nanmax(v)), "mean": float(np.nanmean(v))}
               for name, v in gridded.items()}
    manifest = json.loads((out / "chunks" / "manifest.json").read_text())
    atomic_write_json(out / "sweep.json", {
        "command": "sweep",
        "spec_file": str(args.spec),
        "axes": {name: values.tolist() for name, values in points.axes.items()},
        "axis_order": list(points.axes),
        "grid_shape": list(points.shape),
        "model": spec["model"],
        "run": spec["run"],
        "metrics": summary,
        "seconds": elapsed,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "fingerprint": manifest["fingerprint"],
        "versions": versions(),
    })
    print(f"swept {len(points)} points ({' x '.join(map(str, points.shape))}) in "
          f"{elapsed:.1f} s; wrote {out}/sweep.npz, sweep.json")
    return 0
