"""Classic fourth-order Runge-Kutta: the one tableau, step and streaming fold of the project.

    k_1 = f(y, x_1),   k_j = f(y + dt a_j k_{j-1}, x_j)   (j = 2, 3, 4)
    y(t + dt) = y + (dt / 6) (k_1 + 2 k_2 + 2 k_3 + k_4)

``x_j`` is what the field needs at stage j besides the state: the stage time ``t + c_j dt``
for a field ``f(t, y, args)`` (``stage_times``), or drive values at the stage times computed
for a whole run before the loop (``stage_drive``). Every fixed-step path calls ``step``: the
surrogate's fast path and batched path, the tangent dynamics of the Lyapunov spectra and the
low-dimensional test systems; the fused GPU kernel reads the same coefficients, and ``RK4`` is
the same tableau as a diffrax solver. Classic RK4 only uses the sub-diagonal of its Butcher
matrix, so the stages carry just the last slope and the weighted sum of slopes: elementwise
operations, no stage axis, no matmul (which would run at TF32 precision on GPUs).

The loop structure is a strategy, ``FixedStep(stage_loop, unroll)``: a small frozen object whose
fields are static (they enter the jit cache key), passed to ``simulate``, ``fold`` and the batched
paths as ``solver=``, as a diffrax solver object is passed to ``diffeqsolve``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from surrogate._checks import check_count

__all__ = ["NODES", "STAGE_A", "WEIGHTS", "TABLEAU", "RK4", "FixedStep", "Solution", "step",
           "flow_step", "fold", "stage_times", "stage_drive", "check_steps"]

#: Stage nodes c_j: stage j evaluates the field at t + c_j dt.
NODES = (0.0, 0.5, 0.5, 1.0)
#: Sub-diagonal of the Butcher matrix: stage j's state is y + dt a_j k_{j-1} (a_1 unused, 0).
STAGE_A = (0.0, 0.5, 0.5, 1.0)
#: Weights as ``(w, d)``: y(t + dt) = y + (dt / d) sum_j w_j k_j, exact integers w = (1, 2, 2, 1)
#: over d = 6 (the Butcher weights b_j = w_j / d).
WEIGHTS = ((1.0, 2.0, 2.0, 1.0), 6.0)

#: The same method as a diffrax Butcher tableau (diffrax checks its consistency on creation).
TABLEAU = diffrax.ButcherTableau(
    c=np.array(NODES[1:]),
    b_sol=np.array(WEIGHTS[0]) / WEIGHTS[1],
    b_error=np.zeros(4),
    a_lower=tuple(np.eye(j + 1)[j] * STAGE_A[j + 1] for j in range(3)),
)


@struct.dataclass
class Solution:
    """What a fixed-step run returns (``simulate``, ``fold``, ``simulate_batch``,
    ``fold_batch``, ``fused_simulate``, ``lorenz.rk4_trajectory``).

    Attributes:
        y1: the final state (the last saved one for ``simulate(path="diffrax")``): (N,) phases
            of one surrogate, radians, not wrapped; (G, N) of a batch; (n,) of a flow.
        ts: (T,) save times, or None where nothing is saved (folds, batches).
        ys: (T, ...) the states at ``ts``, or None.
        acc: the final accumulator of a fold (``PhaseMeans`` of a batch run with
            ``means=True``), or None.
    """

    y1: Any
    ts: jax.Array | None = None
    ys: Any = None
    acc: Any = None


class RK4(diffrax.AbstractERK):
    """Classic RK4 as a diffrax solver (fixed steps only: it has no error estimate)."""

    tableau: ClassVar[diffrax.ButcherTableau] = TABLEAU
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = staticmethod(
        lambda *, t0, t1, y0, y1, k: diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)
    )

    def order(self, terms):
        del terms
        return 4


@struct.dataclass
class FixedStep:
    """Fixed-step RK4 with its loop structure (every field static: part of the jit cache key).

    Attributes:
        stage_loop: run the four stages in a ``fori_loop`` (one field evaluation in the compiled
            program: short compiles for large fields) or unrolled (XLA fuses across stages:
            faster for small fields). The two differ by float rounding only (fused
            multiply-adds). benchmarks/sweep.py times the alternatives side by side.
        unroll: time steps per iteration of the scan over steps.
    """

    stage_loop: bool = struct.field(pytree_node=False, default=True)
    unroll: int = struct.field(pytree_node=False, default=1)

    def __post_init__(self):
        check_count(self.unroll, "FixedStep.unroll", 1)


def step(f: Callable, y, xs, dt, *, stage_loop: bool = True):
    """One RK4 step of ``f(y, x) -> dy/dt`` (``y`` any PyTree of arrays).

    Args:
        f: the field; ``x`` is the stage's slice of ``xs``.
        y: the state.
        xs: the four stage inputs, ``xs[j]`` for stage j: an array with a leading axis of 4,
            or (unrolled stages only) a sequence of four, e.g. ``stage_times(t, dt)``.
        dt: the step (an array of the state's dtype).
        stage_loop: as ``FixedStep.stage_loop``.

    Returns:
        the state after the step.
    """
    dtype = jax.tree.leaves(y)[0].dtype
    a = jnp.asarray(STAGE_A, dtype)
    w, d = jnp.asarray(WEIGHTS[0], dtype), WEIGHTS[1]
    tmap = jax.tree.map

    def stage(j, carry):
        k, acc = carry
        k = f(tmap(lambda y_, k_: y_ + dt * a[j] * k_, y, k), xs[j])
        return k, tmap(lambda s, k_: s + w[j] * k_, acc, k)

    if stage_loop:
        zero = tmap(jnp.zeros_like, y)
        carry = jax.lax.fori_loop(0, 4, stage, (zero, zero))
    else:  # unrolled, stage 1 at y itself starts the sum (no update by a zero slope)
        k = f(y, xs[0])
        carry = (k, tmap(lambda k_: w[0] * k_, k))
        for j in range(1, 4):
            carry = stage(j, carry)
    return tmap(lambda y_, s: y_ + dt / d * s, y, carry[1])


def flow_step(vector_field: Callable, t, y, args, dt):
    """One RK4 step of a diffrax-style field ``vector_field(t, y, args)`` from (t, y) over dt,
    stages unrolled (the low-dimensional systems and tangent dynamics)."""
    return step(lambda y_, t_: vector_field(t_, y_, args), y, stage_times(t, dt), dt,
                stage_loop=False)


def stage_times(t, dt) -> tuple:
    """The four stage times t + c_j dt of the step from t, the ``xs`` of a field
    ``f(t, y, args)``: scalars, t and t + dt without a multiply by c = 0 or 1."""
    return tuple(t if c == 0 else t + dt if c == 1 else t + c * dt for c in NODES)


def stage_drive(drive_at: Callable, t0, dt, n_steps: int, dtype) -> jax.Array:
    """``drive_at`` (a function of time) at the stage times of ``n_steps`` steps from t0:
    (n_steps, 4, ...), computed once before a time loop."""
    times = t0 + dt * jnp.arange(n_steps, dtype=dtype)
    stage_t = times[:, None] + dt * jnp.asarray(NODES, dtype)[None, :]
    return jax.vmap(jax.vmap(drive_at))(stage_t)


def fold(step_fn: Callable, y0, init, update: Callable, xs, n_steps: int, *,
         unroll: int = 1) -> Solution:
    """``Solution(y1, acc=acc)`` after ``n_steps`` steps ``y = step_fn(y, x)``, with
    ``acc = update(acc, n, y_n)`` after each (n = 1..n_steps, int32); ``xs``: per-step inputs
    with a leading axis n_steps, or None; ``unroll`` steps per scan iteration. Nothing of the
    trajectory is stored."""

    def body(carry, x):
        y, acc = carry
        n, xn = x
        y = step_fn(y, xn)
        return (y, update(acc, n, y)), None

    ns = jnp.arange(1, n_steps + 1, dtype=jnp.int32)
    (y, acc), _ = jax.lax.scan(body, (y0, init), (ns, xs), unroll=min(unroll, n_steps))
    return Solution(y1=y, acc=acc)


def check_steps(dt, n_steps: int, save_every: int = 1) -> None:
    """ValueError for a non-positive or non-integer step count, a ``save_every`` that does not
    divide it, or a non-positive ``dt`` (a traced dt is checked where it runs)."""
    check_count(n_steps, "n_steps", 1)
    check_count(save_every, "save_every", 1)
    if n_steps % save_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of save_every={save_every}")
    if isinstance(dt, (int, float, np.floating)) and not dt > 0:
        raise ValueError(f"dt must be positive, got dt={dt!r}")
