"""The coupling reading: how the coupling strengths K follow the attention sharpness B.

Two readings of the source paper's "low beta = weak attention" (docs/model.md), and the fit's
third: small frozen objects whose fields are static (part of the jit cache key).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["Coupling", "Tied", "Fixed", "Free", "block_matrix"]


def block_matrix(diagonal, off_diagonal, m: int = 2, dtype=jnp.float32) -> jax.Array:
    """(m, m) matrix with ``diagonal`` on the diagonal and ``off_diagonal`` elsewhere."""
    eye = jnp.eye(m, dtype=dtype)
    return jnp.asarray(diagonal, dtype) * eye + jnp.asarray(off_diagonal, dtype) * (1 - eye)


class Coupling:
    """A coupling reading (``Tied``, ``Fixed``, ``Free``)."""

    def strengths(self, B: jax.Array, K: jax.Array | None = None) -> jax.Array:
        """K (m, m) of this reading given B (m, m) (and the free K, where the reading has one)."""
        raise NotImplementedError


@struct.dataclass
class Tied(Coupling):
    """K = B blockwise: low beta means weak attention and weak coupling (the paper preset)."""

    def strengths(self, B, K=None):
        return B


@struct.dataclass
class Fixed(Coupling):
    """K fixed, ``kappa_self`` in the diagonal blocks and ``kappa_cross`` (default: the same)
    off it: only the attention sharpness B varies."""

    kappa_self: float = struct.field(pytree_node=False, default=0.3)
    kappa_cross: float | None = struct.field(pytree_node=False, default=None)

    def __post_init__(self):
        for name in ("kappa_self", "kappa_cross"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"Fixed.{name} must be a number, got {v!r}")

    def strengths(self, B, K=None):
        cross = self.kappa_self if self.kappa_cross is None else self.kappa_cross
        return block_matrix(self.kappa_self, cross, B.shape[0], B.dtype)


@struct.dataclass
class Free(Coupling):
    """K a parameter of its own, independent of B (the fit's default: B and K both fitted)."""

    def strengths(self, B, K=None):
        if K is None:
            raise ValueError("Free coupling needs K of its own")
        return K
