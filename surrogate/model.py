"""Parameters and vector field of the attention surrogate (docs/model.md).

    dtheta_i/dt = omega_i + g_i u_{sigma(i)}(t) + h_i sin(psi_i(t) - theta_i)
                  + sum_j K[sigma(i), sigma(j)] alpha_ij sin(theta_j - theta_i)
    psi_i(t)    = c_i u_{sigma(i)}(t) + b_i
    alpha_ij    = a_ij exp(B[sigma(i), sigma(j)] cos(theta_j - theta_i)) / Z_i

with Z_i = sum_j a_ij exp(B cos(theta_j - theta_i)) ("softmax": alpha is an attention row),
Z_i = deg(i) ("mean") or Z_i = 1 ("none"). The anchoring term h_i sin(psi_i - theta_i) pulls each
oscillator toward its own phase encoding psi_i of the current input (the forced Kuramoto model);
h = 0 is the purely additive drive g u of the first release. Phases are in radians, time in
surrogate units.

Three evaluations of the same function are provided, as strategy objects (``field=``):

* ``Reference()``: the formula as written (cos, sin and exp per pair); used by ``vector_field``,
  the check of the others;
* ``Dense()``: masked dense (N, N) with the identities cos(tj - ti) = cj ci + sj si and
  sin(tj - ti) = sj ci - cj si, so one exp per pair is the only transcendental;
* ``Sparse()``: the same on gathered neighbour lists (N, D), D the largest degree;

and ``Auto()`` picks ``Sparse`` or ``Dense`` from the graph density. The strings "reference",
"dense", "sparse" and "auto" are shorthands for the default objects.

The per-oscillator terms (frequency, drive, anchoring) are ``input_terms``, the coupling sums
``coupling``; every path (the batched one and the fused kernel's reference included) calls them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import diffrax
import jax
import jax.numpy as jnp
from flax import struct

from surrogate.coupling import Coupling, Tied, block_matrix
from surrogate.network import Network, build_network
from surrogate.trig import sincos

__all__ = [
    "Field",
    "Reference",
    "Dense",
    "Sparse",
    "Auto",
    "as_field",
    "resolve_field",
    "Params",
    "Surrogate",
    "input_terms",
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
    "slot_sums",
    "replace",
]

NORMALISATIONS = ("softmax", "mean", "none")


class Field:
    """A strategy for evaluating the vector field (``Reference``, ``Dense``, ``Sparse``,
    ``Auto``): small frozen objects whose fields are static (part of the jit cache key)."""


@struct.dataclass
class Reference(Field):
    """The literal formula: cos, sin and exp per pair, (N, N)."""


@struct.dataclass
class Dense(Field):
    """Masked dense (N, N), one exp per pair (the trig identities)."""


@struct.dataclass
class Sparse(Field):
    """Gathered neighbour lists (N, D), one exp per edge.

    Attributes:
        slot_loop_max: loop over the D neighbour slots when D is at most this (every operation
            elementwise over the rows: XLA:CPU reduces over a slot axis ~10x slower than it
            adds; measured on 2 cores, 16 x 16 grid: about 2.5x faster than gather-then-reduce);
            above it, gather the (N, D) block and reduce.
        unroll_slots: unroll that loop (1.5-3x faster to run up to ~50 slots, 2x slower at 83,
            benchmarks/slot_loop.py) or keep it rolled (fastest to compile: the tangent dynamics
            of the unrolled loop take ~80 s to compile on CPU against ~3 s rolled, so
            ``surrogate.lyapunov`` asks for ``Sparse(unroll_slots=False)``).
    """

    slot_loop_max: int = struct.field(pytree_node=False, default=64)
    unroll_slots: bool = struct.field(pytree_node=False, default=True)


@struct.dataclass
class Auto(Field):
    """``Sparse()`` when fewer than ``sparse_below`` of the ordered pairs are edges, else
    ``Dense()`` (measured on 2 CPU cores, docs/performance.md: sparse gather 2.2x the naive dense
    at density 0.15)."""

    sparse_below: float = struct.field(pytree_node=False, default=0.35)


_SHORTHANDS = {"reference": Reference, "dense": Dense, "sparse": Sparse, "auto": Auto}


def as_field(field) -> Field:
    """A ``Field`` from a ``Field`` or its shorthand string ("reference", "dense", "sparse",
    "auto"); ValueError naming anything else."""
    if isinstance(field, Field):
        return field
    if isinstance(field, str) and field in _SHORTHANDS:
        return _SHORTHANDS[field]()
    raise ValueError(f"field must be surrogate.Reference(), Dense(), Sparse(), Auto() or one of "
                     f"{sorted(_SHORTHANDS)}, got {field!r}")


def resolve_field(sur: Surrogate, field) -> Field:
    """The concrete evaluation (``Reference``, ``Dense`` or ``Sparse``) of ``field`` for ``sur``
    (``Auto`` decided by the graph density, which is static)."""
    field = as_field(field)
    if isinstance(field, Auto):
        return Sparse() if sur.network.density < field.sparse_below else Dense()
    return field


@struct.dataclass
class Params:
    """Differentiable parameters of the surrogate.

    Attributes:
        omega: (N,) natural frequencies, rad per unit time.
        gain: (N,) additive input gains g_i, rad per unit time per unit of input.
        B: (M, M) attention sharpness between modalities (row: query, column: key).
        K: (M, M) coupling strength between modalities, rad per unit time.
        anchor: (N,) anchoring strengths h_i, rad per unit time, or None (no anchoring term).
        encoding_gain: (N,) c_i of the input phase psi_i = c_i u + b_i, rad per unit of input.
        encoding_offset: (N,) b_i, rad. The three anchoring fields are given together or not at
            all.
    """

    omega: jax.Array
    gain: jax.Array
    B: jax.Array
    K: jax.Array
    anchor: jax.Array | None = None
    encoding_gain: jax.Array | None = None
    encoding_offset: jax.Array | None = None

    @property
    def anchored(self) -> bool:
        """Whether the anchoring term is present (its strength may still be 0)."""
        return self.anchor is not None


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
        anchoring = ("anchor", "encoding_gain", "encoding_offset")
        given = [getattr(p, name) is not None for name in anchoring]
        if any(given) and not all(given):
            raise ValueError(f"params.anchor, encoding_gain and encoding_offset go together; "
                             f"got {dict(zip(anchoring, given, strict=False))} (True: given)")
        shapes = [("omega", (n,)), ("gain", (n,)), ("B", (m, m)), ("K", (m, m))]
        shapes += [(name, (n,)) for name in anchoring if getattr(p, name) is not None]
        for name, shape in shapes:
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
    anchor: float = 0.0,
    encoding_scale: float = jnp.pi / 2,
    coupling: Coupling | None = None,
    normalisation: str = "softmax",
    drive: diffrax.AbstractPath | None = None,
    dtype=jnp.float32,
) -> Surrogate:
    """The source paper's setting: 50 + 50 oscillators, k = 10, p = 0.01, B = [[b_s, b_c],
    [b_c, b_s]].

    ``coupling``, the reading of the paper's "low beta = weak attention" (docs/model.md):
    ``Tied()`` (the default) ties K = B blockwise; ``Fixed(kappa_self, kappa_cross)`` fixes K
    and leaves only the attention sharpness B to vary.
    Natural frequencies are drawn N(0, omega_spread^2) and all additive input gains equal
    ``gain``. Anchoring: h_i = ``anchor`` for every oscillator, encoding gains
    c_i ~ N(0, encoding_scale^2) and offsets b_i ~ U(0, 2 pi), drawn from ``key`` (the graph
    and the frequencies do not depend on them: ``anchor=0`` is the first release's model).
    """
    k_net, k_omega = jax.random.split(key)
    k_gain, k_offset = jax.random.split(jax.random.fold_in(key, 1))
    net = build_network(k_net, sizes, k, p, cross_density)
    m = len(net.sizes)
    B = block_matrix(beta_self, beta_cross, m, dtype)
    coupling = Tied() if coupling is None else coupling
    if not isinstance(coupling, Coupling):
        raise ValueError(f"coupling must be surrogate.Tied() or surrogate.Fixed(...), "
                         f"got {coupling!r}")
    K = coupling.strengths(B)
    params = Params(
        omega=omega_spread * jax.random.normal(k_omega, (net.n,), dtype),
        gain=jnp.full((net.n,), gain, dtype),
        B=B,
        K=K,
        anchor=jnp.full((net.n,), anchor, dtype),
        encoding_gain=encoding_scale * jax.random.normal(k_gain, (net.n,), dtype),
        encoding_offset=jax.random.uniform(k_offset, (net.n,), dtype, maxval=2 * jnp.pi),
    )
    return Surrogate(network=net, params=params, drive=drive, normalisation=normalisation)


def input_terms(theta, u_i, p: Params, cs=None):
    """The per-oscillator terms omega + g u + h sin(psi - theta), psi = c u + b, of rows i.

    Args:
        theta: phases of the rows (N,) (or (N, G) with per-system parameters (N, G)).
        u_i: the drive of each row's modality, broadcastable to theta.
        p: parameters (only omega, gain and the anchoring fields are read).
        cs: (cos theta, sin theta) when the caller has them: the anchoring term is then
            sin psi cos theta - cos psi sin theta (one sin/cos pair per row and call);
            None: the literal formula (the reference).
    """
    out = p.omega + p.gain * u_i
    if p.anchor is None:
        return out
    psi = p.encoding_gain * u_i + p.encoding_offset
    if cs is None:
        return out + p.anchor * jnp.sin(psi - theta)
    c, s = cs
    return out + p.anchor * (jnp.sin(psi) * c - jnp.cos(psi) * s)


def _columns(x: jax.Array, sur: Surrogate, field: Field) -> jax.Array:
    """Values of a per-oscillator array x (N,) at the columns j of each row: (N, D) or (1, N)."""
    if isinstance(field, Sparse):
        return x[sur.network.neighbours]
    return x[None, :]


@struct.dataclass
class CouplingTables:
    """Per-pair constants of one field evaluation, rows over i and columns over j ((N, D)
    sparse, (N, N) otherwise): block sharpness ``beta``, coupling ``kappa``, edge ``mask``, and
    the per-row softmax shift (N,) = max_b |B[sigma(i), b]| (cancels in the softmax, keeps
    exp <= 1).

    They depend on the parameters but not on the phases: integrators build them once per solve.
    Static ``unroll_slots`` (sparse form): as ``Sparse.unroll_slots``.
    """

    beta: jax.Array
    kappa: jax.Array
    mask: jax.Array
    shift: jax.Array
    unroll_slots: bool = struct.field(pytree_node=False, default=True)

    @classmethod
    def build(cls, B, K, population, columns, mask, unroll_slots: bool = True) -> CouplingTables:
        """The tables of blocks ``B``, ``K`` (M, M, *batch) for rows of ``population`` (N,) and
        the populations of their ``columns`` ((N, D) neighbours or (1, N))."""
        rows = population[:, None]
        return cls(beta=B[rows, columns], kappa=K[rows, columns], mask=mask,
                   shift=jnp.max(jnp.abs(B), axis=1)[population], unroll_slots=unroll_slots)


def coupling_tables(sur: Surrogate, field) -> CouplingTables:
    """Build the ``CouplingTables`` of ``sur`` for the evaluation ``field``."""
    field = resolve_field(sur, field)
    pop = sur.network.population
    pj = _columns(pop, sur, field)
    if isinstance(field, Sparse):
        mask = sur.network.neighbour_mask.astype(sur.dtype)
    else:
        mask = sur.network.adjacency.astype(sur.dtype)
    unroll = isinstance(field, Sparse) and field.unroll_slots
    return CouplingTables.build(sur.params.B, sur.params.K, pop, pj, mask, unroll)


def slot_sums(c, s, tab: CouplingTables, neighbours, normalisation: str, exps=None):
    """Sparse coupling sum_j kappa alpha sin(theta_j - theta_i), one neighbour slot at a time.

    ``exps``: (values (E, ...), index (N, D)) when the caller has the slots' masked
    exponentials mask exp(beta cos(theta_j - theta_i) [- shift]) as a table (one per undirected
    edge, ``surrogate.batch``): slot (i, d) reads values[index[i, d]]; None: computed here."""
    values, index = (None, None) if exps is None else exps

    def slot(acc, xs):
        z, a, b = acc
        j, beta, kappa, mask, k = xs
        cj, sj = c[j], s[j]
        if k is None:
            x = beta * (c * cj + s * sj)
            e = mask * jnp.exp(x - tab.shift if normalisation == "softmax" else x)
        else:
            e = values[k]
        w = kappa * e
        return (z + e, a + w * sj, b + w * cj), None

    slots = tuple(None if x is None else jnp.moveaxis(x, 1, 0)
                  for x in (neighbours, tab.beta, tab.kappa, tab.mask, index))
    zero = jnp.zeros_like(c)
    (z, a, b), _ = jax.lax.scan(slot, (zero, zero, zero), slots,
                                unroll=True if tab.unroll_slots else 1)
    if normalisation == "softmax":
        norm = jnp.where(z > 0, z, 1)
    elif normalisation == "mean":
        deg = tab.mask.sum(1)
        norm = jnp.where(deg > 0, deg, 1)
    else:
        norm = 1
    return (c * a - s * b) / norm


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
    return _attention(cos_d, coupling_tables(sur, Dense()), sur.normalisation)


def rhs(
    theta: jax.Array,
    u: jax.Array,
    sur: Surrogate,
    field: Field | str = Reference(),
    tables: CouplingTables | None = None,
) -> jax.Array:
    """dtheta/dt at phases theta (N,) under drive value u (M,), by the evaluation ``field``.

    ``tables`` (from ``coupling_tables(sur, field)``) may be passed to hoist them out of a loop.
    """
    field = resolve_field(sur, field)
    theta = jnp.asarray(theta, sur.dtype)
    tab = coupling_tables(sur, field) if tables is None else tables
    u_i = u[sur.network.population]
    if isinstance(field, Reference):
        d = theta[None, :] - theta[:, None]
        w = tab.kappa * _attention(jnp.cos(d), tab, sur.normalisation)
        return input_terms(theta, u_i, sur.params) + jnp.sum(w * jnp.sin(d), axis=-1)
    s, c = sincos(theta)
    if isinstance(field, Sparse) and tab.mask.shape[1] <= field.slot_loop_max:
        coupling = slot_sums(c, s, tab, sur.network.neighbours, sur.normalisation)
    else:
        cj, sj = _columns(c, sur, field), _columns(s, sur, field)
        cos_d = c[:, None] * cj + s[:, None] * sj
        w = tab.kappa * _attention(cos_d, tab, sur.normalisation)
        coupling = c * jnp.sum(w * sj, -1) - s * jnp.sum(w * cj, -1)
    return input_terms(theta, u_i, sur.params, (c, s)) + coupling


def prepare_rhs(sur: Surrogate, field: Field | str = Reference(),
                tables: CouplingTables | None = None):
    """``f(theta, u) -> dtheta/dt`` equal to ``rhs(theta, u, sur, field)``, with the
    phase-independent coupling tables built once, here: integrators call this outside their
    time loop."""
    field = resolve_field(sur, field)
    tab = coupling_tables(sur, field) if tables is None else tables
    return lambda theta, u: rhs(theta, u, sur, field, tab)


def vector_field(t, theta: jax.Array, args: Surrogate) -> jax.Array:
    """The surrogate's vector field f(t, theta, args) -> dtheta/dt, (N,) -> (N,) (diffrax style)."""
    return rhs(theta, args.drive_at(t), args, Reference())


def replace(sur: Surrogate, **params) -> Surrogate:
    """A copy of ``sur`` with some parameters replaced, e.g. ``replace(sur, B=B, K=K)``."""
    return dataclasses.replace(sur, params=sur.params.replace(**params))
