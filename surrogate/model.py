"""Parameters and vector field of the attention surrogate (DESIGN.md section 3).

    dtheta_i/dt = omega_i + g_i u_{sigma(i)}(t)
                  + sum_j K[sigma(i), sigma(j)] alpha_ij sin(theta_j - theta_i)
    alpha_ij    = a_ij exp(B[sigma(i), sigma(j)] cos(theta_j - theta_i)) / Z_i

with Z_i = sum_j a_ij exp(B cos(theta_j - theta_i)) ("softmax": alpha is an attention row),
Z_i = deg(i) ("mean") or Z_i = 1 ("none"). Phases are in radians, time in surrogate units.

Three evaluations of the same function are provided:

* ``"reference"``: the formula as written (cos, sin and exp per pair); used by ``vector_field``, the
  diffrax path and as the check of the others;
* ``"dense"``: masked dense (N, N) with the identities cos(tj - ti) = cj ci + sj si and
  sin(tj - ti) = sj ci - cj si, so one exp per pair is the only transcendental;
* ``"sparse"``: the same on gathered neighbour lists (N, D), D the largest degree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import diffrax
import jax
import jax.numpy as jnp
from flax import struct

from surrogate.network import Network, build_network

__all__ = [
    "Params",
    "Surrogate",
    "NORMALISATIONS",
    "block_matrix",
    "make_drive",
    "paper_preset",
    "initial_phases",
    "vector_field",
    "rhs",
    "attention_weights",
    "CouplingTables",
    "coupling_tables",
    "prepare_rhs",
    "replace",
]

NORMALISATIONS = ("softmax", "mean", "none")
Kind = Literal["reference", "dense", "sparse"]


@struct.dataclass
class Params:
    """Differentiable parameters of the surrogate.

    Attributes:
        omega: (N,) natural frequencies, rad per unit time.
        gain: (N,) input gains g_i of the external drive.
        B: (M, M) attention sharpness between modalities (row: query, column: key).
        K: (M, M) coupling strength between modalities.
    """

    omega: jax.Array
    gain: jax.Array
    B: jax.Array
    K: jax.Array


@struct.dataclass
class Surrogate:
    """A surrogate system: graph, parameters, optional drive u(t) of shape (M,), normalisation.

    This PyTree is the ``args`` of ``vector_field(t, theta, args)``.
    """

    network: Network
    params: Params
    drive: diffrax.AbstractPath | None = None
    normalisation: str = struct.field(pytree_node=False, default="softmax")

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if not (isinstance(self.network, Network) and isinstance(self.params, Params)):
            return  # a pytree skeleton built by a JAX transformation
        n, m = self.network.n, self.network.n_populations
        p = self.params
        for name, shape in (("omega", (n,)), ("gain", (n,)), ("B", (m, m)), ("K", (m, m))):
            got = getattr(getattr(p, name), "shape", shape)  # non-arrays: pytree placeholders
            if got != shape:
                raise ValueError(f"params.{name} must have shape {shape}, got {got}")

    @property
    def dtype(self):
        return self.params.omega.dtype

    def drive_at(self, t) -> jax.Array:
        """u(t), shape (M,); zeros without a drive."""
        if self.drive is None:
            return jnp.zeros((self.network.n_populations,), self.dtype)
        u = jnp.asarray(self.drive.evaluate(t), self.dtype)
        return jnp.broadcast_to(u, (self.network.n_populations,))


def block_matrix(diagonal, off_diagonal, m: int = 2, dtype=jnp.float32) -> jax.Array:
    """(m, m) matrix with ``diagonal`` on the diagonal and ``off_diagonal`` elsewhere."""
    eye = jnp.eye(m, dtype=dtype)
    return jnp.asarray(diagonal, dtype) * eye + jnp.asarray(off_diagonal, dtype) * (1 - eye)


def make_drive(ts, values) -> diffrax.LinearInterpolation:
    """Piecewise-linear drive u(t) from samples: ``ts`` (T,), ``values`` (T, M) or (T,).

    Outside [ts[0], ts[-1]] the end segments are extrapolated linearly.
    """
    ts = jnp.asarray(ts)
    values = jnp.asarray(values)
    if ts.ndim != 1 or values.shape[0] != ts.shape[0]:
        raise ValueError(
            f"drive samples must be ts (T,) and values (T, M); got {ts.shape} and {values.shape}"
        )
    return diffrax.LinearInterpolation(ts=ts, ys=values)


def initial_phases(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    """(n,) phases uniform in [0, 2 pi)."""
    return jax.random.uniform(key, (n,), dtype=dtype, maxval=2 * jnp.pi)


def paper_preset(
    key: jax.Array,
    beta_self: float = 0.1,
    beta_cross: float = 0.1,
    *,
    sizes: Sequence[int] = (50, 50),
    k: int = 10,
    p: float = 0.01,
    cross_density: float = 0.1,
    omega_spread: float = 1.0,
    gain: float = 1.0,
    normalisation: str = "softmax",
    drive: diffrax.AbstractPath | None = None,
    dtype=jnp.float32,
) -> Surrogate:
    """The source paper's setting: K = B blockwise, 50 + 50 oscillators, k = 10, p = 0.01.

    The paper sweeps beta_self and beta_cross over 1e-4..1 and reads low beta as weak attention;
    setting the coupling strength equal to the sharpness (kappa = beta) is our interpretation of
    that. Natural frequencies are drawn N(0, omega_spread^2); all input gains equal ``gain``.
    """
    k_net, k_omega = jax.random.split(key)
    net = build_network(k_net, sizes, k, p, cross_density)
    m = len(net.sizes)
    B = block_matrix(beta_self, beta_cross, m, dtype)
    params = Params(
        omega=omega_spread * jax.random.normal(k_omega, (net.n,), dtype),
        gain=jnp.full((net.n,), gain, dtype),
        B=B,
        K=B,
    )
    return Surrogate(network=net, params=params, drive=drive, normalisation=normalisation)


def _columns(x: jax.Array, sur: Surrogate, kind: Kind) -> jax.Array:
    """Values of a per-oscillator array x (N,) at the columns j of each row: (N, D) or (1, N)."""
    if kind == "sparse":
        return x[sur.network.neighbours]
    return x[None, :]


@struct.dataclass
class CouplingTables:
    """Per-pair constants of one evaluation kind, rows over i and columns over j ((N, D) sparse,
    (N, N) otherwise): block sharpness ``beta``, coupling ``kappa``, edge ``mask``, and the
    per-row softmax shift (N,) = max_b |B[sigma(i), b]| (cancels in the softmax, keeps exp <= 1).

    They depend on the parameters but not on the phases: integrators build them once per solve.
    """

    beta: jax.Array
    kappa: jax.Array
    mask: jax.Array
    shift: jax.Array


def coupling_tables(sur: Surrogate, kind: Kind) -> CouplingTables:
    """Build the ``CouplingTables`` of ``sur`` for the evaluation ``kind``."""
    if kind not in ("reference", "dense", "sparse"):
        raise ValueError(f"kind must be 'reference', 'dense' or 'sparse', got {kind!r}")
    pop = sur.network.population
    pj = _columns(pop, sur, kind)
    if kind == "sparse":
        mask = sur.network.neighbour_mask.astype(sur.dtype)
    else:
        mask = sur.network.adjacency.astype(sur.dtype)
    B, K = sur.params.B, sur.params.K
    shift = jnp.max(jnp.abs(B), axis=1)[pop]
    return CouplingTables(beta=B[pop[:, None], pj], kappa=K[pop[:, None], pj], mask=mask,
                          shift=shift)


def _attention(cos_d, tab: CouplingTables, normalisation: str):
    """alpha over the last axis from cos(theta_j - theta_i)."""
    if normalisation == "softmax":
        e = tab.mask * jnp.exp(tab.beta * cos_d - tab.shift[:, None])
        z = e.sum(-1, keepdims=True)
        return e / jnp.where(z > 0, z, 1)
    e = tab.mask * jnp.exp(tab.beta * cos_d)
    if normalisation == "mean":
        deg = tab.mask.sum(-1, keepdims=True)
        return e / jnp.where(deg > 0, deg, 1)
    return e


def attention_weights(theta: jax.Array, sur: Surrogate) -> jax.Array:
    """Attention matrix alpha_ij at phases theta (N,): (N, N), zero off the graph."""
    cos_d = jnp.cos(theta[None, :] - theta[:, None])
    return _attention(cos_d, coupling_tables(sur, "dense"), sur.normalisation)


def rhs(
    theta: jax.Array,
    u: jax.Array,
    sur: Surrogate,
    kind: Kind = "reference",
    tables: CouplingTables | None = None,
) -> jax.Array:
    """dtheta/dt at phases theta (N,) under drive value u (M,), by the chosen evaluation.

    ``tables`` (from ``coupling_tables(sur, kind)``) may be passed to hoist them out of a loop.
    """
    return prepare_rhs(sur, kind, tables)(jnp.asarray(theta, sur.dtype), u)


def prepare_rhs(sur: Surrogate, kind: Kind = "reference", tables: CouplingTables | None = None):
    """``f(theta, u) -> dtheta/dt`` equal to ``rhs(theta, u, sur, kind, tables)``, with everything
    that does not depend on the phases (coupling tables, their slot-major copies) built once,
    here: integrators call this outside their time loop and ``f`` inside it.
    """
    tab = coupling_tables(sur, kind) if tables is None else tables
    drive_index = sur.network.population
    omega, gain = sur.params.omega, sur.params.gain
    if kind == "reference":

        def coupling(theta):
            d = theta[None, :] - theta[:, None]
            w = tab.kappa * _attention(jnp.cos(d), tab, sur.normalisation)
            return jnp.sum(w * jnp.sin(d), axis=-1)

    else:
        slots = _slot_major(tab, sur.network.neighbours if kind == "sparse" else None,
                            sur.normalisation)

        def coupling(theta):
            return _slot_coupling(theta, slots, sur.normalisation)

    def f(theta, u):
        return omega + gain * u[drive_index] + coupling(theta)

    return f


#: Slots (neighbour-list columns, or all N columns for "dense") up to this count are unrolled;
#: beyond, a ``fori_loop`` over slots runs ``_SLOT_UNROLL`` of them per iteration. Measured on
#: XLA:CPU, batch 256: unrolled was 2x faster than the loop for 83 slots (N = 1000 sparse) and
#: for 100 (N = 100 dense), at 5-6 s compile instead of 2 s.
_SLOTS_UNROLLED = 128
_SLOT_UNROLL = 4


@struct.dataclass
class _Slots:
    """Slot-major coupling tables: ``beta``, ``kappa``, ``mask`` (S, N) hold column d of the
    (N, S) ``CouplingTables`` in row d; ``columns`` (S, N) int the neighbour j of row i in slot d
    (None for dense: slot d is oscillator d); ``shift`` (N,) softmax shift; ``denom`` (N,) the
    fixed normaliser of "mean" (degree), unused otherwise.
    """

    beta: jax.Array
    kappa: jax.Array
    mask: jax.Array
    columns: jax.Array | None
    shift: jax.Array
    denom: jax.Array


def _slot_major(tab: CouplingTables, neighbours, normalisation: str) -> _Slots:
    deg = tab.mask.sum(-1)
    return _Slots(
        beta=tab.beta.T, kappa=tab.kappa.T, mask=tab.mask.T,
        columns=None if neighbours is None else neighbours.T,
        shift=tab.shift, denom=jnp.where(deg > 0, deg, 1),
    )


def _slot_coupling(theta, slots: _Slots, normalisation: str) -> jax.Array:
    """Coupling term (N,) of the one-exp-per-pair forms, accumulated one slot at a time.

    A slot is one column of the coupling tables: for ``"sparse"`` the d-th neighbour of every
    row (gathered), for ``"dense"`` oscillator d (broadcast). Per slot the work is on (N,) vectors
    with three (N,) accumulators (softmax denominator, sum of w_ij sin theta_j, sum of
    w_ij cos theta_j), so no (N, D) or (N, N) intermediate is formed; then
    sin(tj - ti) = sj ci - cj si gives the sum of w_ij sin(tj - ti).

    Under ``vmap`` this measured 13x faster on XLA:CPU than forming the whole (N, D) block at once
    (batch 256, N = 100, D = 19: 8.4 vs 109 us per point-evaluation): there the (batch, N, D)
    gather and the elementwise work over it did not fuse into one pass. Slot-major tables keep
    each slot's coefficients contiguous.
    """
    c, s = jnp.cos(theta), jnp.sin(theta)
    softmax = normalisation == "softmax"

    def slot(d, acc):
        # Tables are indexed here rather than scanned over as xs: under vmap, scanning batched
        # xs would move their batch axis (a copy of every table) at each evaluation.
        z, num_s, num_c = acc
        col = d if slots.columns is None else slots.columns[d]
        cj, sj = c[col], s[col]
        arg = slots.beta[d] * (c * cj + s * sj)
        e = slots.mask[d] * jnp.exp(arg - slots.shift if softmax else arg)
        w = slots.kappa[d] * e
        return z + e, num_s + w * sj, num_c + w * cj

    zero = jnp.zeros_like(c)
    acc = (zero, zero, zero)
    n_slots = slots.mask.shape[0]
    if n_slots <= _SLOTS_UNROLLED:
        for d in range(n_slots):
            acc = slot(d, acc)
    else:
        acc = jax.lax.fori_loop(0, n_slots, slot, acc, unroll=_SLOT_UNROLL)
    z, num_s, num_c = acc
    if softmax:
        denom = jnp.where(z > 0, z, 1)
    elif normalisation == "mean":
        denom = slots.denom
    else:
        denom = 1
    return (c * num_s - s * num_c) / denom


def vector_field(t, theta: jax.Array, args: Surrogate) -> jax.Array:
    """The surrogate's vector field f(t, theta, args) -> dtheta/dt, (N,) -> (N,) (diffrax style)."""
    return rhs(theta, args.drive_at(t), args, "reference")


def replace(sur: Surrogate, **params) -> Surrogate:
    """A copy of ``sur`` with some parameters replaced, e.g. ``replace(sur, B=B, K=K)``."""
    return dataclasses.replace(sur, params=sur.params.replace(**params))
