"""Integration of the surrogate: one ``simulate`` API; the solver object picks the path.

* ``solver=FixedStep(...)`` (the default): classic fixed-step RK4 in ``lax.scan``; the drive is
  evaluated once, before the loop, at every stage time.
* ``solver=`` any diffrax solver (``diffrax.Tsit5()``, ``surrogate.RK4()``, ...):
  ``diffrax.diffeqsolve`` with any step-size controller, ``SaveAt`` and adjoint.

Both evaluate the vector field by the strategy ``field`` (``surrogate.model``: ``Auto()``,
``Dense()``, ``Sparse()``, ``Reference()``, or their shorthand strings).

Both return a ``Solution`` of unwrapped phases (radians) and are jit-, vmap- and grad-able.
``RK4`` (``surrogate.rk4``, the project's one RK4) is the same method as a diffrax solver, so
the two paths can run the identical scheme.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

from surrogate import rk4
from surrogate.model import Auto, Field, Surrogate, prepare_rhs, resolve_field, rhs
from surrogate.rk4 import RK4, FixedStep, Solution

__all__ = ["RK4", "FixedStep", "Solution", "simulate", "fold", "driven_step", "surrogate_step",
           "run_drive"]


def driven_step(f, dt, n_populations: int, dtype, solver: FixedStep = FixedStep()):
    """``step(theta, u4) -> theta_next``: one RK4 step of ``f(theta, u)``; ``u4`` (4, M) the
    drive at the stage times, or None (no drive: zeros)."""
    zero_u = jnp.zeros((4, n_populations), dtype)
    return lambda theta, u4: rk4.step(f, theta, zero_u if u4 is None else u4, dt,
                                      stage_loop=solver.stage_loop)


def surrogate_step(sur: Surrogate, dt, field: Field | str = Auto(),
                   solver: FixedStep = FixedStep()):
    """``driven_step`` of ``sur``'s field evaluated by ``field`` (coupling tables built once,
    here)."""
    return driven_step(prepare_rhs(sur, field), dt, sur.network.n_populations, sur.dtype, solver)


def run_drive(sur: Surrogate, t0, dt, n_steps: int):
    """Drive at the four stage times of every step, (n_steps, 4, M); None without a drive."""
    if sur.drive is None:
        return None
    return rk4.stage_drive(sur.drive_at, t0, dt, n_steps, sur.dtype)


def _fast(sur, theta0, t0, dt, n_steps, save_every, field, solver):
    dtype = sur.dtype
    n_save = n_steps // save_every
    dt = jnp.asarray(dt, dtype)
    step = surrogate_step(sur, dt, field, solver)
    u = run_drive(sur, t0, dt, n_steps)
    if u is not None:
        u = u.reshape(n_save, save_every, 4, -1)

    def block(theta, u_block):
        theta, _ = jax.lax.scan(lambda th, u4: (step(th, u4), None), theta, u_block,
                                length=save_every, unroll=min(solver.unroll, save_every))
        return theta, theta

    theta0 = jnp.asarray(theta0, dtype)
    y1, ys = jax.lax.scan(block, theta0, u, length=n_save)
    ts = t0 + dt * save_every * jnp.arange(n_save + 1, dtype=dtype)
    return Solution(y1=y1, ts=ts, ys=jnp.concatenate([theta0[None], ys]))


def fold(
    sur: Surrogate,
    theta0: jax.Array,
    init,
    update: Callable,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    field: Field | str = Auto(),
    solver: FixedStep = FixedStep(),
) -> Solution:
    """Fold ``acc = update(acc, n, theta_n)`` over the states after each fixed RK4 step.

    The streaming counterpart of ``simulate`` with a ``FixedStep`` solver: nothing of the
    trajectory is stored, so statistics (for example the normal equations of a readout) of long
    runs over large batches fit in memory. ``n`` runs 1..n_steps (int32), ``theta_n`` is the state
    at t0 + n dt.

    Returns:
        ``Solution`` with ``y1`` (N,) the phases at t0 + n_steps dt and ``acc``.
    """
    rk4.check_steps(dt, n_steps)
    theta0 = jnp.asarray(theta0, sur.dtype)
    dt = jnp.asarray(dt, sur.dtype)
    if not isinstance(solver, FixedStep):
        raise ValueError(f"fold needs a surrogate.FixedStep solver, got {solver!r}")
    step = surrogate_step(sur, dt, field, solver)
    return rk4.fold(step, theta0, init, update, run_drive(sur, t0, dt, n_steps), n_steps,
                    unroll=solver.unroll)


def simulate(
    sur: Surrogate,
    theta0: jax.Array,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    save_every: int = 1,
    field: Field | str = Auto(),
    solver: FixedStep | diffrax.AbstractSolver = FixedStep(),
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    saveat: diffrax.SaveAt | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int | None = None,
) -> Solution:
    """Integrate the surrogate from ``theta0`` (N,) over [t0, t0 + n_steps dt].

    Args:
        sur: the system (graph, parameters, optional drive).
        theta0: (N,) initial phases, radians.
        dt: step (fast path), initial step ``dt0`` (diffrax path).
        n_steps: number of steps of size dt; the horizon is n_steps * dt.
        save_every: states are saved at t0 + dt * save_every * (0, 1, ..., n_steps / save_every).
        field: evaluation of the vector field (``Auto()``, ``Dense()``, ``Sparse()``,
            ``Reference()`` or their shorthand strings).
        solver: ``FixedStep(...)`` (fixed-step RK4 in a scan) or a diffrax solver
            (``diffeqsolve``).
        stepsize_controller, saveat, adjoint, max_steps: diffrax solvers only; defaults
            ConstantStepSize, the save grid above, RecursiveCheckpointAdjoint with one
            checkpoint per step and ``n_steps`` (times 16 with an adaptive controller).

    Returns:
        ``Solution`` with ``ts`` (T,), ``ys`` (T, N) and ``y1`` = ``ys[-1]``; for a custom
        ``saveat`` whatever it asks (``y1`` None when it saves no states).
    """
    rk4.check_steps(dt, n_steps, save_every)
    theta0 = jnp.asarray(theta0, sur.dtype)
    if theta0.shape != (sur.network.n,):
        raise ValueError(f"theta0 must have shape ({sur.network.n},), got {theta0.shape}")
    field = resolve_field(sur, field)
    if isinstance(solver, FixedStep):
        if any(x is not None for x in (stepsize_controller, saveat, adjoint, max_steps)):
            raise ValueError("stepsize_controller/saveat/adjoint/max_steps need a diffrax solver, "
                             "not FixedStep")
        return _fast(sur, theta0, t0, dt, n_steps, save_every, field, solver)
    if not isinstance(solver, diffrax.AbstractSolver):
        raise ValueError(f"solver must be a surrogate.FixedStep or a diffrax solver, "
                         f"got {solver!r}")
    controller = stepsize_controller or diffrax.ConstantStepSize()
    if max_steps is None:
        adaptive = not isinstance(controller, diffrax.ConstantStepSize)
        max_steps = n_steps * (16 if adaptive else 1) + 1
    if saveat is None:
        n_save = n_steps // save_every
        ts = t0 + dt * save_every * jnp.arange(n_save + 1, dtype=sur.dtype)
        saveat = diffrax.SaveAt(ts=ts)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: rhs(y, args.drive_at(t), args, field, tables=None)),
        solver,
        t0=t0,
        t1=t0 + n_steps * dt,
        dt0=dt,
        y0=theta0,
        args=sur,
        saveat=saveat,
        stepsize_controller=controller,
        # One checkpoint per step: with diffrax 0.7.2's default (checkpoints derived from
        # max_steps) the gradient through dense SaveAt(ts) saves was wrong (10 % off the
        # finite difference for one save per step, tests/test_anchoring.py); memory O(steps N).
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps),
        max_steps=max_steps,
    )
    return Solution(y1=None if sol.ys is None else sol.ys[-1], ts=sol.ts, ys=sol.ys)
