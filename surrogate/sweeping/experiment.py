"""The surrogate's metrics over a grid of coupling parameters: what ``xmodal sweep`` computes.

Per point, over the ``run.steps`` measured steps after ``run.transient`` discarded ones (states
sampled every ``run.sample_every`` steps): ``order_parameter`` gives ``order_parameter`` (mean
Kuramoto R per modality) and ``order_parameter_final``; ``modality_attention`` gives the mean
modality attention matrix P, ``cross_share`` (row sums of P off the diagonal) and ``dominance``
(D_01 = log P10 / P01); ``lyapunov`` the largest conditional Lyapunov exponent (Benettin on the
reference vector field, renormalised every ``run.lyapunov_renorm_every`` steps; costly: it
differentiates the dense field), transverse to the common phase shift unless the model is
anchored (the shift is no symmetry then). All points share the graph, the unit natural
frequencies, the input encodings and the initial phases drawn from ``run.seed``.

Two paths compute the same numbers: ``point_function`` (one point, ``fold``; vmapped by the
engine) and ``chunk_function`` (a chunk with the points on the minor axis, ``fold_batch``, the
neighbour-slot field); ``sweep_function`` picks the second where the field is the sparse one.
See docs/sweep.md.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from surrogate.batch import fold_batch
from surrogate.integrate import fold
from surrogate.lyapunov import conditional_lyapunov_exponents
from surrogate.metrics import dominance_index, modality_attention, order_parameter
from surrogate.model import (
    Params,
    Sparse,
    block_matrix,
    initial_phases,
    make_drive,
    paper_preset,
    resolve_field,
)
from surrogate.sweeping.engine import sweep
from surrogate.sweeping.points import Points, grid
from surrogate.sweeping.spec import SweepSpec

__all__ = ["SweepModel", "chunk_function", "point_function", "run_spec", "standardised_drive",
           "summary", "sweep_function"]


def standardised_drive(samples, dt: float):
    """A piecewise-linear drive through ``samples`` (T, M) at t = 0, dt, ..., each column
    standardised to mean 0 and standard deviation 1."""
    samples = jnp.asarray(samples)
    xy = (samples - samples.mean(0)[None, :]) / samples.std(0)[None, :]
    return make_drive(dt * jnp.arange(samples.shape[0], dtype=samples.dtype), xy)


class SweepModel:
    """What every point of a checked spec shares, and the per-point pieces of both paths.

    ``drive_samples``: (T, M) samples of the drive at t = 0, dt, ... (T = ``run.drive_samples``)
    when ``run.drive`` is not "none" (for "lorenz": x(t), y(t) of Lorenz-63); they are
    standardised per column and interpolated linearly."""

    def __init__(self, spec: SweepSpec, drive_samples=None):
        model, run = spec.model, spec.run
        self.model, self.run, self.metrics = model, run, run.metrics
        self.anchored = spec.anchored
        self.dtype = dtype = jnp.float64 if run.float64 else jnp.float32
        k_model, k_theta = jax.random.split(jax.random.key(run.seed))
        drive = None
        if run.drive != "none":
            if drive_samples is None:
                raise ValueError(f"{spec.path}: field 'run.drive': {run.drive!r} needs the drive "
                                 f"samples (drive_samples, ({run.drive_samples}, 2))")
            drive = standardised_drive(drive_samples, run.dt)
        elif drive_samples is not None:
            raise ValueError(f"{spec.path}: field 'run.drive' is 'none' but drive samples were "
                             f"given")
        self.base = paper_preset(
            k_model, sizes=tuple(model.sizes), k=model.k, p=model.p,
            cross_density=model.cross_density, omega_spread=1.0, gain=1.0,
            encoding_scale=model.encoding_scale, normalisation=model.normalisation,
            drive=drive, dtype=dtype,
        )
        self.theta0 = initial_phases(k_theta, self.base.network.n, dtype)
        self.m = self.base.network.n_populations
        self.zeros = (jnp.zeros((self.m,), dtype), jnp.zeros((self.m, self.m), dtype))

    def params(self, point):
        """``Params`` of one point (name -> scalar); K = B unless kappa_* are given; the
        anchoring fields only when the spec is ``anchored``."""
        def get(name, default=None):
            value = point[name] if name in point else getattr(self.model, name)
            return default if value is None else jnp.asarray(value, self.dtype)

        b_self, b_cross = get("beta_self"), get("beta_cross")
        base = self.base.params
        unit_omega = base.omega  # N(0, 1) draws, scaled by omega_spread
        anchoring = {}
        if self.anchored:  # encodings drawn once for all points
            anchoring = {"anchor": jnp.full(unit_omega.shape, get("anchor"), self.dtype),
                         "encoding_gain": base.encoding_gain,
                         "encoding_offset": base.encoding_offset}
        return Params(
            omega=get("omega_spread") * unit_omega,
            gain=jnp.full(unit_omega.shape, get("gain"), self.dtype),
            B=block_matrix(b_self, b_cross, self.m, self.dtype),
            K=block_matrix(get("kappa_self", b_self), get("kappa_cross", b_cross), self.m,
                           self.dtype),
            **anchoring)

    def surrogate(self, params):
        return dataclasses.replace(self.base, params=params)

    def sample(self, params, theta, acc):
        """``acc`` plus the sampled metrics of one system at phases ``theta`` (N,)."""
        sur = self.surrogate(params)
        r_sum, p_sum = acc
        r = order_parameter(theta, sur) if "order_parameter" in self.metrics else 0
        p = modality_attention(theta, sur) if "modality_attention" in self.metrics else 0
        return r_sum + r, p_sum + p

    def outputs(self, params, theta_start, theta, acc):
        """The metrics of one system from its sums and its first and last measured states."""
        sur, run = self.surrogate(params), self.run
        r_sum, p_sum = acc
        n_samples = run.steps // run.sample_every
        out = {}
        if "order_parameter" in self.metrics:
            out["order_parameter"] = r_sum / n_samples
            out["order_parameter_final"] = order_parameter(theta, sur)
        if "modality_attention" in self.metrics:
            p = p_sum / n_samples
            out["modality_attention"] = p
            out["cross_share"] = p.sum(-1) - jnp.diagonal(p)
            out["dominance"] = dominance_index(p, 0, 1)
        if "lyapunov" in self.metrics:
            res = conditional_lyapunov_exponents(
                sur, theta_start, dt=run.dt, n_steps=run.steps, k=1,
                renorm_every=run.lyapunov_renorm_every, n_records=1,
                t0=run.transient * run.dt, modulo_phase_shift=not self.anchored)
            out["lyapunov"] = res.exponents[0]
        return out


def _model(spec) -> SweepModel:
    return spec if isinstance(spec, SweepModel) else SweepModel(spec)


def sweep_function(spec):
    """``(fn, batched)`` for ``surrogate.sweep``: ``chunk_function`` when the vector field is
    the neighbour-slot one ("sparse", or "auto" on a sparse graph), else ``point_function``;
    from a ``SweepSpec`` (no drive) or a ``SweepModel``."""
    model = _model(spec)
    if isinstance(resolve_field(model.base, model.run.field), Sparse):
        return chunk_function(model), True
    return point_function(model), False


def point_function(spec):
    """``fn(point) -> {metric: array}`` for one point (``fold``; ``surrogate.sweep`` vmaps
    it), from a ``SweepSpec`` (no drive) or a ``SweepModel``: the reference for
    ``chunk_function``."""
    model = _model(spec)
    run = model.run
    dt, steps, transient, every = run.dt, run.steps, run.transient, run.sample_every

    def fn(point):
        params = model.params(point)
        sur = model.surrogate(params)
        theta = model.theta0
        if transient:
            theta = fold(sur, theta, (), lambda acc, i, th: acc, dt=dt, n_steps=transient,
                         field=run.field).y1
        theta_start = theta

        def update(acc, i, th):
            return jax.lax.cond(i % every == 0, lambda a: model.sample(params, th, a),
                                lambda a: a, acc)

        sol = fold(sur, theta, model.zeros, update, dt=dt, n_steps=steps, t0=transient * dt,
                   field=run.field)
        return model.outputs(params, theta_start, sol.y1, sol.acc)

    return fn


def chunk_function(spec):
    """``fn(points) -> {metric: (G, ...) array}`` for a chunk of G points (name -> (G,) array)
    with the points on the minor axis (``fold_batch``, the neighbour-slot vector field), for
    ``surrogate.sweep(..., batched=True)``; the same numbers as ``point_function`` with field
    "sparse"."""
    model = _model(spec)
    run = model.run
    dt, steps, transient, every = run.dt, run.steps, run.transient, run.sample_every

    def fn(points):
        params = jax.vmap(model.params)(points)
        g = params.B.shape[0]
        theta = jnp.broadcast_to(model.theta0, (g, model.theta0.shape[0]))
        if transient:
            theta = fold_batch(model.base, theta, (), lambda acc, i, th: acc, dt=dt,
                               n_steps=transient, params=params).y1
        theta_start = theta
        sample = jax.vmap(model.sample)

        def update(acc, i, th):
            return jax.lax.cond(i % every == 0, lambda a: sample(params, th, a), lambda a: a,
                                acc)

        zeros = jax.tree.map(lambda z: jnp.broadcast_to(z, (g,) + z.shape), model.zeros)
        sol = fold_batch(model.base, theta, zeros, update, dt=dt, n_steps=steps,
                         t0=transient * dt, params=params)
        return jax.vmap(model.outputs)(params, theta_start, sol.y1, sol.acc)

    return fn


def run_spec(spec: SweepSpec, store=None, *, drive_samples=None, resume: bool = False,
             progress: bool = True) -> tuple[Points, dict]:
    """Sweep the grid of ``spec`` (``surrogate.sweep`` with the spec's chunk size; the store's
    fingerprint covers the spec's model and run tables); returns the points and the metrics, a
    dict of (P, ...) arrays. Enable float64 (``jax_enable_x64``) first for ``run.float64``."""
    points = grid(**spec.axis_values)
    fn, batched = sweep_function(SweepModel(spec, drive_samples))
    res = sweep(fn, points, chunk_size=spec.run.chunk_size, store=store, config=spec.tables(),
                resume=resume, progress=progress, batched=batched)
    return points, res


def summary(gridded: dict) -> dict:
    """name -> {"shape", "min", "max", "mean"} of each gridded metric (NaN-aware)."""
    return {name: {"shape": list(np.shape(v)), "min": float(np.nanmin(v)),
                   "max": float(np.nanmax(v)), "mean": float(np.nanmean(v))}
            for name, v in gridded.items()}
