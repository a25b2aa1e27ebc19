"""Differentiable bias metrics of the surrogate and their sensitivity to the couplings.

The knobs are ``Couplings``: B, K (M, M) and the per-modality drive gains g (M,) (oscillator i
gets gain g[sigma(i)]). A metric is a pure function ``metric(couplings) -> array`` built from a
surrogate (graph, frequencies, drive), initial phases and a ``Window`` of fixed RK4 steps; it
integrates the surrogate and time-averages the modality attention matrix over the steps after
the burn-in (streamed with ``integrate.fold``: nothing stored), so ``jax.grad`` / ``jax.jacfwd``
give exact derivatives of the finite-time metric:

* ``dominance``: D_ab = log(P[b, a] / P[a, b]) of the time-averaged P (``metrics`` module doc);
* ``cross_share``: (M,) mean cross-modal attention share of each modality's queries.

``sensitivity_table`` evaluates d metric / d coupling for every entry (forward mode, one JVP
per parameter); ``balance_couplings`` searches, by projected Adam, the couplings that minimise
D_ab^2 while the chosen blocks keep their total (each of B and K stays on the simplex
{x >= floor, sum x = total}): which redistribution of coupling removes the dominance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree
from optax.projections import projection_simplex

from surrogate._checks import check_count
from surrogate.integrate import fold
from surrogate.metrics import dominance_index, modality_attention
from surrogate.model import Auto, Field, Surrogate

__all__ = [
    "BalancePath",
    "Couplings",
    "Window",
    "balance_couplings",
    "couplings_of",
    "cross_share_metric",
    "dominance_metric",
    "mean_attention",
    "parameter_names",
    "project_simplex",
    "sensitivity",
    "sensitivity_table",
    "with_couplings",
]


@struct.dataclass
class Couplings:
    """The differentiable knobs: ``B``, ``K`` (M, M) (row: query, column: key) and ``gain``
    (M,) drive gains per modality."""

    B: jax.Array
    K: jax.Array
    gain: jax.Array


@struct.dataclass
class Window:
    """Fixed-step integration window: ``dt`` (time units), ``n_steps`` RK4 steps, the first
    ``n_burn`` of them discarded before averaging (all static)."""

    dt: float = struct.field(pytree_node=False, default=0.05)
    n_steps: int = struct.field(pytree_node=False, default=200)
    n_burn: int = struct.field(pytree_node=False, default=100)

    def __post_init__(self):
        check_count(self.n_steps, "Window.n_steps", 1)
        if not (isinstance(self.n_burn, (int, np.integer)) and 0 <= self.n_burn < self.n_steps):
            raise ValueError(f"Window.n_burn must be in [0, n_steps={self.n_steps}), "
                             f"got {self.n_burn!r}")
        if not self.dt > 0:
            raise ValueError(f"Window.dt must be positive, got {self.dt!r}")


def couplings_of(sur: Surrogate) -> Couplings:
    """The couplings of ``sur``; gains are the per-modality means of its per-oscillator gains."""
    pop = sur.network.population
    m = sur.network.n_populations
    onehot = jax.nn.one_hot(pop, m, dtype=sur.dtype)
    gain = (sur.params.gain @ onehot) / onehot.sum(0)
    return Couplings(B=sur.params.B, K=sur.params.K, gain=gain)


def with_couplings(sur: Surrogate, c: Couplings) -> Surrogate:
    """``sur`` with B, K and per-oscillator gains g[sigma(i)] from ``c``."""
    gain = jnp.asarray(c.gain, sur.dtype)[sur.network.population]
    return sur.replace(params=sur.params.replace(B=c.B, K=c.K, gain=gain))


def mean_attention(c: Couplings, sur: Surrogate, theta0: jax.Array, window: Window = Window(),
                   field: Field = Auto()) -> jax.Array:
    """(M, M) modality attention P averaged over steps n_burn + 1 .. n_steps from ``theta0``."""
    s = with_couplings(sur, c)
    m = sur.network.n_populations
    n_avg = window.n_steps - window.n_burn

    def update(acc, n, theta):
        return acc + jnp.where(n > window.n_burn, modality_attention(theta, s), 0.0) / n_avg

    return fold(s, theta0, jnp.zeros((m, m), s.dtype), update, dt=window.dt,
                n_steps=window.n_steps, field=field).acc


def dominance_metric(c: Couplings, sur: Surrogate, theta0: jax.Array, window: Window = Window(),
                     a: int = 0, b: int = 1) -> jax.Array:
    """Dominance D_ab of the time-averaged P (scalar; > 0: modality a dominates b)."""
    return dominance_index(mean_attention(c, sur, theta0, window), a, b)


def cross_share_metric(c: Couplings, sur: Surrogate, theta0: jax.Array,
                       window: Window = Window()) -> jax.Array:
    """(M,) time-averaged cross-modal attention share of each modality's queries."""
    p = mean_attention(c, sur, theta0, window)
    return p.sum(-1) - jnp.diagonal(p)


def parameter_names(c: Couplings) -> tuple[str, ...]:
    """Names of the entries of ``c`` in the order of ``sensitivity``: B[a,b], K[a,b], gain[a]."""
    m = c.gain.shape[0]
    return (tuple(f"B[{a},{b}]" for a in range(m) for b in range(m))
            + tuple(f"K[{a},{b}]" for a in range(m) for b in range(m))
            + tuple(f"gain[{a}]" for a in range(m)))


def sensitivity(metric: Callable[[Couplings], jax.Array], c: Couplings) -> jax.Array:
    """d metric / d couplings, forward mode: (*metric shape, 2 M^2 + M) in ``parameter_names``
    order (``ravel_pytree`` of ``c``: B, K, gain, each in C order)."""
    flat, unravel = ravel_pytree(c)
    return jax.jacfwd(lambda x: metric(unravel(x)))(flat)


def sensitivity_table(metrics: Mapping[str, Callable[[Couplings], jax.Array]], c: Couplings
                      ) -> tuple[tuple[str, ...], dict[str, np.ndarray], dict[str, float]]:
    """Rows of the bias sensitivity table: (parameter names, {row name: gradient (P,)},
    {row name: metric value}). Vector metrics give one row per component (``name[i]``)."""
    names = parameter_names(c)
    rows, values = {}, {}
    for name, metric in metrics.items():
        value, grad = jax.jit(lambda cc, f=metric: (f(cc), sensitivity(f, cc)))(c)
        value = np.asarray(value)
        grad = np.asarray(grad).reshape(value.size, len(names))
        for i, v in enumerate(value.reshape(-1)):
            key = name if value.ndim == 0 else f"{name}[{i}]"
            rows[key], values[key] = grad[i], float(v)
    return names, rows, values


def project_simplex(x: jax.Array, total, floor: float = 0.0) -> jax.Array:
    """Euclidean projection of x (any shape) onto {y >= floor, sum y = total}: optax's simplex
    projection of x - floor onto the simplex of sum total - floor * x.size, shifted back."""
    y = projection_simplex(x - floor, total - floor * x.size) + floor
    return y.astype(x.dtype)  # optax computes in the default float type (float64 under x64)


@struct.dataclass
class BalancePath:
    """Search path: ``couplings`` with a leading step axis (S + 1,), ``value`` (S + 1,) the
    metric along it."""

    couplings: Couplings
    value: jax.Array


def balance_couplings(
    metric: Callable[[Couplings], jax.Array],
    c0: Couplings,
    *,
    fields: Sequence[str] = ("B", "K"),
    steps: int = 40,
    learning_rate: float = 0.05,
    floor: float = 1e-3,
) -> BalancePath:
    """Projected Adam on metric(c)^2 over the blocks ``fields`` (each kept at its total sum,
    entries >= ``floor``); other fields stay fixed. Returns the whole path."""
    bad = [f for f in fields if f not in ("B", "K", "gain")]
    if bad or not fields:
        raise ValueError(f"fields must be a non-empty subset of ('B', 'K', 'gain'), got {fields}")
    totals = {f: jnp.sum(getattr(c0, f)) for f in fields}
    frozen = Couplings(**{f: f not in fields for f in ("B", "K", "gain")})
    opt = optax.chain(optax.adam(learning_rate), optax.masked(optax.set_to_zero(), frozen))

    def project(c):
        return c.replace(**{f: project_simplex(getattr(c, f), totals[f], floor) for f in fields})

    def objective(c):
        return jnp.sum(metric(c) ** 2)

    @jax.jit
    def step(c, state):
        value, grad = jax.value_and_grad(objective)(c)
        updates, state = opt.update(grad, state, c)
        return project(optax.apply_updates(c, updates)), state, metric(c)

    c = project(c0)
    state = opt.init(c)
    path, values = [c], []
    for _ in range(steps):
        c, state, v = step(c, state)
        path.append(c)
        values.append(v)
    values.append(jax.jit(metric)(c))
    return BalancePath(couplings=jax.tree.map(lambda *x: jnp.stack(x), *path),
                       value=jnp.stack(values))
