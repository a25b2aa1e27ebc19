"""The spec of a surrogate sweep (``xmodal sweep SPEC``): a frozen ``SweepSpec`` read from a JSON
or TOML file with tables ``[axes]`` (what is swept: log, linear or listed values), ``[model]``
(the paper preset's graph and the unswept parameters) and ``[run]`` (steps, sampling, metrics,
seed, drive, chunking). Every error names the file and the field. The format, with an example,
is in docs/sweep.md and ``xmodal sweep --help``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from surrogate.model import NORMALISATIONS

__all__ = ["METRICS", "SWEEPABLE", "Axis", "ModelSpec", "RunSpec", "SweepSpec", "load_spec"]

#: Parameters a spec may sweep (per-point values; the graph is shared by all points).
SWEEPABLE = ("beta_self", "beta_cross", "kappa_self", "kappa_cross", "gain", "omega_spread",
             "anchor")
#: Sweepable parameters that must not be negative.
NON_NEGATIVE = ("anchor",)
METRICS = ("order_parameter", "modality_attention", "lyapunov")
FIELDS = ("auto", "dense", "sparse")
DRIVES = ("none", "lorenz")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The ``[model]`` table: the paper preset's graph and the values of unswept parameters
    (numbers kept as written in the file). ``anchor``: the anchoring strength h of every
    oscillator (0, and not swept: the model without the anchoring term); ``encoding_scale``:
    the encoding gains c_i ~ N(0, encoding_scale^2) of the input phases."""

    sizes: tuple[int, ...] = (50, 50)
    beta_self: float = 0.1
    beta_cross: float = 0.1
    k: int = 10
    p: float = 0.01
    cross_density: float = 0.1
    omega_spread: float = 1.0
    gain: float = 1.0
    normalisation: str = "softmax"
    kappa_self: float | None = None
    kappa_cross: float | None = None
    anchor: float = 0.0
    encoding_scale: float = math.pi / 2


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The ``[run]`` table: integration, sampling, metrics, seed, drive, chunking."""

    dt: float = 0.01
    steps: int = 5000
    transient: int = 1000
    sample_every: int = 10
    field: str = "auto"
    float64: bool = False
    seed: int = 0
    drive: str = "none"
    metrics: tuple[str, ...] = ("order_parameter", "modality_attention")
    chunk_size: int | None = None
    lyapunov_renorm_every: int = 10

    @property
    def drive_samples(self) -> int:
        """Samples of the drive at t = 0, dt, ...: the whole run and two more."""
        return self.transient + self.steps + 2


@dataclasses.dataclass(frozen=True)
class Axis:
    """One ``[axes]`` entry: ``spacing`` "log" or "linear" (``start``, ``stop``, ``count``) or
    "values" (``values``); nothing is allocated until ``values_array``."""

    name: str
    spacing: str
    start: float = 0.0
    stop: float = 0.0
    count: int = 0
    values: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.values) if self.spacing == "values" else self.count

    def values_array(self):
        """The axis values, a 1-D float64 NumPy array."""
        import numpy as np

        if self.spacing == "values":
            return np.asarray(self.values)
        space = np.geomspace if self.spacing == "log" else np.linspace
        return space(self.start, self.stop, self.count)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked spec: the ``axes`` in file order, the ``model`` and ``run`` tables, and the
    ``path`` it was read from."""

    axes: tuple[Axis, ...]
    model: ModelSpec = ModelSpec()
    run: RunSpec = RunSpec()
    path: str = "<spec>"

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid shape (one length per axis), known without allocating the axes."""
        return tuple(len(a) for a in self.axes)

    @property
    def anchored(self) -> bool:
        """Whether the model has the anchoring term: ``anchor`` swept or non-zero."""
        return any(a.name == "anchor" for a in self.axes) or self.model.anchor != 0

    @property
    def axis_values(self) -> dict:
        """name -> 1-D NumPy array of the axis values, in file order."""
        return {a.name: a.values_array() for a in self.axes}

    def tables(self) -> dict:
        """``{"model": {...}, "run": {...}}`` as JSON types (the sweep's fingerprinted config)."""
        def table(obj):
            return {k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(obj).items()}

        return {"model": table(self.model), "run": table(self.run)}


class _Checker:
    """Checks fields of one spec file; errors name the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, field: str, msg: str) -> ValueError:
        return ValueError(f"{self.path}: field {field!r}: {msg}")

    def number(self, field, value, *, positive=False, minimum=None):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise self.error(field, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.error(field, f"must be positive, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(field, f"must be >= {minimum}, got {value!r}")
        return value

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

    def choice(self, field, value, allowed) -> str:
        if value not in allowed:
            names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise self.error(field, f"must be {names}, got {value!r}")
        return value


def _read(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(f"{path}: spec file must end in .json or .toml")
    from surrogate.files import read_json_file, read_toml_file

    if not path.exists():
        raise ValueError(f"{path}: cannot read spec file (no such file)")
    data = (read_toml_file if suffix == ".toml" else read_json_file)(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the spec must be a table/object at the top level")
    return data


def _axis(check: _Checker, name: str, value) -> Axis:
    field = f"axes.{name}"
    if name not in SWEEPABLE:
        raise check.error(field, f"cannot be swept; sweepable: {', '.join(SWEEPABLE)} (the "
                          f"graph is shared by all points: set sizes/k/p/cross_density in "
                          f"[model])")
    check.table(field, value)
    if len(value) != 1 or next(iter(value)) not in ("log", "linear", "values"):
        raise check.error(field, "must be exactly one of {log = [start, stop, count]}, "
                          "{linear = [start, stop, count]}, {values = [...]}")
    spacing, args = next(iter(value.items()))
    sub = f"{field}.{spacing}"
    if not isinstance(args, list) or not args:
        raise check.error(sub, f"must be a non-empty list, got {args!r}")
    low = 0.0 if name in NON_NEGATIVE else None
    if spacing == "values":
        return Axis(name, spacing, values=tuple(float(check.number(f"{sub}[{i}]", v, minimum=low))
                                             for i, v in enumerate(args)))
    if len(args) != 3:
        raise check.error(sub, f"must be [start, stop, count], got {args!r}")
    start = float(check.number(f"{sub}[0]", args[0], positive=spacing == "log", minimum=low))
    stop = float(check.number(f"{sub}[1]", args[1], positive=spacing == "log", minimum=low))
    count = check.integer(f"{sub}[2]", args[2], 1)
    return Axis(name, spacing, start=start, stop=stop, count=count)


def _model(check: _Checker, given: Any) -> ModelSpec:
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    check.known("model", check.table("model", given), fields)
    m = dataclasses.replace(ModelSpec(), **given)
    sizes = m.sizes
    if not isinstance(sizes, (list, tuple)) or len(sizes) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in sizes):
        raise check.error("model.sizes", f"must be two integers >= 2, got {sizes!r}")
    k = check.integer("model.k", m.k, 0)
    if k % 2 or k >= min(sizes):
        raise check.error("model.k", f"must be even and smaller than every size, got {k}")
    for name in ("p", "cross_density"):
        v = check.number(f"model.{name}", getattr(m, name), minimum=0.0)
        if v > 1:
            raise check.error(f"model.{name}", f"must be in [0, 1], got {v!r}")
    for name in ("beta_self", "beta_cross", "omega_spread", "gain"):
        check.number(f"model.{name}", getattr(m, name))
    for name in ("anchor", "encoding_scale"):
        check.number(f"model.{name}", getattr(m, name), minimum=0.0)
    for name in ("kappa_self", "kappa_cross"):
        if getattr(m, name) is not None:
            check.number(f"model.{name}", getattr(m, name))
    check.choice("model.normalisation", m.normalisation, NORMALISATIONS)
    return dataclasses.replace(m, sizes=tuple(sizes))


def _run(check: _Checker, given: Any) -> RunSpec:
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    check.known("run", check.table("run", given), fields)
    r = dataclasses.replace(RunSpec(), **given)
    check.number("run.dt", r.dt, positive=True)
    check.integer("run.steps", r.steps, 1)
    check.integer("run.transient", r.transient, 0)
    check.integer("run.sample_every", r.sample_every, 1)
    check.integer("run.lyapunov_renorm_every", r.lyapunov_renorm_every, 1)
    if r.steps % r.sample_every:
        raise check.error("run.steps", f"must be a multiple of run.sample_every="
                          f"{r.sample_every}, got {r.steps}")
    if r.steps % r.lyapunov_renorm_every:
        raise check.error("run.steps", f"must be a multiple of run.lyapunov_renorm_every="
                          f"{r.lyapunov_renorm_every}, got {r.steps}")
    check.choice("run.field", r.field, FIELDS)
    if not isinstance(r.float64, bool):
        raise check.error("run.float64", f"must be true or false, got {r.float64!r}")
    check.integer("run.seed", r.seed, 0)
    check.choice("run.drive", r.drive, DRIVES)
    metrics = r.metrics
    if not isinstance(metrics, (list, tuple)) or not metrics \
            or any(m not in METRICS for m in metrics):
        raise check.error("run.metrics", f"must be a non-empty list drawn from "
                          f"{list(METRICS)}, got {metrics!r}")
    if r.chunk_size is not None:
        check.integer("run.chunk_size", r.chunk_size, 1)
    return dataclasses.replace(r, metrics=tuple(metrics))


def load_spec(path) -> SweepSpec:
    """Read and check a sweep spec (JSON or TOML) into a ``SweepSpec`` with defaults filled in;
    ValueError naming the file and the field otherwise."""
    path = Path(path)
    data = _read(path)
    check = _Checker(path)
    check.known("", data, ("axes", "model", "run"))
    if "axes" not in data:
        raise check.error("axes", "missing; name at least one axis, e.g. "
                          "beta_self = { log = [1e-4, 1.0, 16] }")
    axes_in = check.table("axes", data["axes"])
    if not axes_in:
        raise check.error("axes", "must name at least one axis")
    axes = tuple(_axis(check, name, v) for name, v in axes_in.items())
    return SweepSpec(axes=axes, model=_model(check, data.get("model", {})),
                     run=_run(check, data.get("run", {})), path=str(path))
