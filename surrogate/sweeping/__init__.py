"""Sweeps: a per-point function over a grid or list of parameter points, chunked, sharded over
devices, resumable from disk.

    points = grid(beta_self=np.logspace(-4, 0, 64), beta_cross=np.logspace(-4, 0, 64))
    out = sweep(final_metrics, points, store="runs/plane", config={"steps": 5000, "dt": 0.01})
    nmse = points.unflatten(out)["nmse"]            # (64, 64), axis i: beta_self, j: beta_cross

Modules: ``points`` (grids and lists of points), ``engine`` (``sweep``: chunks, sharding,
compile cache, progress), ``store`` (chunk files, manifest, fingerprint), ``multihost`` (one
process per host), ``spec`` (the ``xmodal sweep`` spec file) and ``experiment`` (the surrogate's
metrics per point). See docs/sweep.md.
"""

from surrogate.sweeping.engine import sweep
from surrogate.sweeping.experiment import (
    SweepModel,
    chunk_function,
    point_function,
    run_spec,
    standardised_drive,
    summary,
    sweep_function,
)
from surrogate.sweeping.multihost import init_multihost
from surrogate.sweeping.points import Points, as_points, grid
from surrogate.sweeping.spec import (
    METRICS,
    SWEEPABLE,
    Axis,
    ModelSpec,
    RunSpec,
    SweepSpec,
    load_spec,
)
from surrogate.sweeping.store import FORMAT, MANIFEST, SweepStoreError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "METRICS",
    "SWEEPABLE",
    "Axis",
    "ModelSpec",
    "Points",
    "RunSpec",
    "SweepModel",
    "SweepSpec",
    "SweepStoreError",
    "as_points",
    "chunk_function",
    "grid",
    "init_multihost",
    "load_spec",
    "point_function",
    "run_spec",
    "standardised_drive",
    "summary",
    "sweep",
    "sweep_function",
]
