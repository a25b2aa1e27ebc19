"""Integration of the surrogate: one ``simulate`` API with two paths.

* ``path="diffrax"``: ``diffrax.diffeqsolve`` with any solver, step-size controller, ``SaveAt``
  and adjoint (default: Tsit5 with a constant step ``dt``).
* ``path="fast"``: classic fixed-step RK4 in ``lax.scan``; the drive is evaluated once, before the
  loop, at every stage time.

Both evaluate the vector field by ``kind``: the one-exp-per-pair ``"dense"`` or ``"sparse"`` forms,
``"auto"`` (sparse when the graph density is below ``SPARSE_BELOW``), or the literal formula
``"reference"`` (what ``vector_field`` computes).

Both return a ``Trajectory`` of unwrapped phases (radians) and are jit-, vmap- and grad-able.
``RK4`` is the same method as a diffrax solver, so the two paths can run the identical scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate.model import Surrogate, prepare_rhs, rhs

__all__ = ["RK4", "Trajectory", "simulate", "fold", "resolve_kind", "SPARSE_BELOW"]

#: ``kind="auto"`` gathers neighbours when fewer than this fraction of pairs are edges. Measured
#: (shared/notes/performance.md): sparse gather 2.2x the naive dense on CPU at density 0.15.
SPARSE_BELOW = 0.35


class RK4(diffrax.AbstractERK):
    """Classic 4th-order Runge-Kutta as a diffrax solver (fixed steps only: no error estimate)."""

    tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
        c=np.array([0.5, 0.5, 1.0]),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    )
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = staticmethod(
        lambda *, t0, t1, y0, y1, k: diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)
    )

    def order(self, terms):
        del terms
        return 4


@struct.dataclass
class Trajectory:
    """Saved states: ``ts`` (T,) times, ``ys`` (T, N) phases in radians (not wrapped)."""

    ts: jax.Array
    ys: jax.Array


def resolve_kind(sur: Surrogate, kind: str) -> str:
    """'dense' or 'sparse' for ``kind="auto"`` from the graph density; checks explicit values."""
    if kind == "auto":
        return "sparse" if sur.network.density < SPARSE_BELOW else "dense"
    if kind not in ("dense", "sparse", "reference"):
        raise ValueError(f"kind must be 'auto', 'dense', 'sparse' or 'reference', got {kind!r}")
    return kind


def _check_steps(dt, n_steps: int, save_every: int) -> None:
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if not isinstance(save_every, (int, np.integer)) or save_every < 1:
        raise ValueError(f"save_every must be a positive integer, got {save_every!r}")
    if n_steps % save_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of save_every={save_every}")
    if isinstance(dt, (int, float)) and not dt > 0:
        raise ValueError(f"dt must be positive, got dt={dt!r}")


#: Classic RK4 tableau: stage j evaluates at t + C[j] dt, y + dt sum_l A[j, l] k_l.
_A = np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]])
_B = np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6])
_C = np.array([0.0, 0.5, 0.5, 1.0])


def _stage_drive(sur, t0, dt, n_steps):
    """Drive at the four RK4 stage times of every step: (n_steps, 4, M); None without a drive."""
    if sur.drive is None:
        return None
    times = t0 + dt * jnp.arange(n_steps, dtype=sur.dtype)
    stage_t = times[:, None] + dt * jnp.asarray(_C, sur.dtype)
    return jax.vmap(jax.vmap(sur.drive_at))(stage_t)


#: Loop structure of the fixed-step path, read when a function is traced. ``_STAGE_LOOP``: the
#: four RK4 stages run in a ``fori_loop`` (one vector-field evaluation in the compiled body)
#: rather than unrolled; ``_STEP_UNROLL``: time steps per iteration of the scans over steps.
#: benchmarks/sweep.py times the alternatives side by side (on GPU every loop iteration costs a
#: host round trip for its predicate, so fewer iterations may pay there).
_STAGE_LOOP = True
_STEP_UNROLL = 1


def _rk4_step(f, dt, zero_u):
    """step(theta, u4) -> theta after one RK4 step of ``f(theta, u) -> dtheta/dt`` (any state
    shape); u4 (4, M): drive values at the stage times, or None (``zero_u`` then).

    Classic RK4 evaluates stage j at theta + dt A[j, j-1] k_{j-1}, so the stages carry only the
    last slope and the weighted sum of slopes: elementwise sums (no matmul precision, TF32 on
    GPU, and no reduction over a stage axis, which XLA:CPU runs slowly).
    """
    a = jnp.asarray(np.r_[0.0, np.diag(_A, -1)], dt.dtype)  # (0, 1/2, 1/2, 1)
    b = jnp.asarray(_B, dt.dtype)

    def step(theta, u4):
        u4 = zero_u if u4 is None else u4

        def stage(j, carry):
            k, acc = carry
            k = f(theta + dt * a[j] * k, u4[j])
            return k, acc + b[j] * k

        carry = (jnp.zeros_like(theta), jnp.zeros_like(theta))
        if _STAGE_LOOP:
            carry = jax.lax.fori_loop(0, 4, stage, carry)
        else:
            for j in range(4):
                carry = stage(j, carry)
        return theta + dt * carry[1]

    return step


def _surrogate_step(sur, dt, kind):
    """The RK4 step of ``sur``'s vector field by ``kind``, tables built once, here."""
    return _rk4_step(prepare_rhs(sur, kind), dt, jnp.zeros((4, sur.network.n_populations),
                                                           sur.dtype))


def _fold_steps(step, theta0, init, update, u, n_steps: int):
    """(theta, acc) after ``n_steps`` steps, ``acc = update(acc, n, theta_n)`` after each."""

    def body(carry, xs):
        theta, acc = carry
        n, u4 = xs
        theta = step(theta, u4)
        return (theta, update(acc, n, theta)), None

    ns = jnp.arange(1, n_steps + 1, dtype=jnp.int32)
    (theta, acc), _ = jax.lax.scan(body, (theta0, init), (ns, u),
                                   unroll=min(_STEP_UNROLL, n_steps))
    return theta, acc


def _fast(sur, theta0, t0, dt, n_steps, save_every, kind):
    dtype = sur.dtype
    n_save = n_steps // save_every
    dt = jnp.asarray(dt, dtype)
    step = _surrogate_step(sur, dt, kind)
    u = _stage_drive(sur, t0, dt, n_steps)
    if u is not None:
        u = u.reshape(n_save, save_every, 4, -1)

    def block(theta, u_block):
        theta, _ = jax.lax.scan(lambda th, u4: (step(th, u4), None), theta, u_block,
                                length=save_every, unroll=min(_STEP_UNROLL, save_every))
        return theta, theta

    theta0 = jnp.asarray(theta0, dtype)
    _, ys = jax.lax.scan(block, theta0, u, length=n_save)
    ts = t0 + dt * save_every * jnp.arange(n_save + 1, dtype=dtype)
    return Trajectory(ts=ts, ys=jnp.concatenate([theta0[None], ys]))


def fold(
    sur: Surrogate,
    theta0: jax.Array,
    init,
    update: Callable,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    kind: str = "auto",
):
    """Fold ``acc = update(acc, n, theta_n)`` over the states after each fixed RK4 step.

    The streaming counterpart of ``simulate(path="fast")``: nothing of the trajectory is stored,
    so statistics (for example the normal equations of a readout) of long runs over large batches
    fit in memory. ``n`` runs 1..n_steps (int32), ``theta_n`` is the state at t0 + n dt.

    Returns:
        (theta at t0 + n_steps dt, final accumulator).
    """
    _check_steps(dt, n_steps, 1)
    theta0 = jnp.asarray(theta0, sur.dtype)
    dt = jnp.asarray(dt, sur.dtype)
    step = _surrogate_step(sur, dt, resolve_kind(sur, kind))
    return _fold_steps(step, theta0, init, update, _stage_drive(sur, t0, dt, n_steps), n_steps)


def simulate(
    sur: Surrogate,
    theta0: jax.Array,
    *,
    dt: float,
    n_steps: int,
    t0: float = 0.0,
    save_every: int = 1,
    path: str = "fast",
    kind: str = "auto",
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    saveat: diffrax.SaveAt | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int | None = None,
) -> Trajectory:
    """Integrate the surrogate from ``theta0`` (N,) over [t0, t0 + n_steps dt].

    Args:
        sur: the system (graph, parameters, optional drive).
        theta0: (N,) initial phases, radians.
        dt: step (fast path), initial step ``dt0`` (diffrax path).
        n_steps: number of steps of size dt; the horizon is n_steps * dt.
        save_every: states are saved at t0 + dt * save_every * (0, 1, ..., n_steps / save_every).
        path: "fast" (fixed-step RK4, scan) or "diffrax".
        kind: evaluation of the vector field: "auto", "dense", "sparse" or "reference".
        solver, stepsize_controller, saveat, adjoint, max_steps: diffrax path only; defaults
            Tsit5, ConstantStepSize, the save grid above, RecursiveCheckpointAdjoint and
            ``n_steps`` (times 16 with an adaptive controller).

    Returns:
        ``Trajectory`` with ``ts`` (T,) and ``ys`` (T, N); for a custom ``saveat`` whatever it asks.
    """
    _check_steps(dt, n_steps, save_every)
    theta0 = jnp.asarray(theta0, sur.dtype)
    if theta0.shape != (sur.network.n,):
        raise ValueError(f"theta0 must have shape ({sur.network.n},), got {theta0.shape}")
    if path == "fast":
        if any(x is not None for x in (solver, stepsize_controller, saveat, adjoint, max_steps)):
            raise ValueError("solver/stepsize_controller/saveat/adjoint/max_steps need path='diffrax'")
        return _fast(sur, theta0, t0, dt, n_steps, save_every, resolve_kind(sur, kind))
    if path != "diffrax":
        raise ValueError(f"path must be 'fast' or 'diffrax', got {path!r}")
    controller = stepsize_controller or diffrax.ConstantStepSize()
    if max_steps is None:
        adaptive = not isinstance(controller, diffrax.ConstantStepSize)
        max_steps = n_steps * (16 if adaptive else 1) + 1
    if saveat is None:
        n_save = n_steps // save_every
        ts = t0 + dt * save_every * jnp.arange(n_save + 1, dtype=sur.dtype)
        saveat = diffrax.SaveAt(ts=ts)
    kind = resolve_kind(sur, kind)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: rhs(y, args.drive_at(t), args, kind, tables=None)),
        solver or diffrax.Tsit5(),
        t0=t0,
        t1=t0 + n_steps * dt,
        dt0=dt,
        y0=theta0,
        args=sur,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(),
        max_steps=max_steps,
    )
    return Trajectory(ts=sol.ts, ys=sol.ys)
