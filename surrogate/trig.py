"""sin and cos of the phases, together.

XLA:CPU evaluates float32 ``sin`` and ``cos`` element by element, 2.3-3.7 ns an element each on
the 2-core reference machine, against 0.3-0.6 ns for both by the polynomial below
(``benchmarks/trig.py``: 7.7-12.9x); the phases' sines and cosines were a third of the batched
engine's work. On other platforms XLA's own are as fast (an H200: 0.02 ns against 0.03) and are
kept (``jax.lax.platform_dependent``: chosen where the program is lowered). Float32 on CPU:
reduction by pi/2 in four parts (Cody-Waite; the first three of 8 significant bits, so k pi/2
is exact for |k| < 2^16), then Taylor polynomials on [-pi/4, pi/4] (truncation below 3e-8).
Absolute error at most 2e-7 for |x| < 1e5 rad (XLA's: 3e-8; ``tests/test_trig.py``), beyond
which the reduction loses accuracy. Float64 (and every other dtype): ``jnp.sin``, ``jnp.cos``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sincos"]

# pi/2 = sum of _PI_2: three parts of 8 significant bits, then the float32 rest.
_PI_2 = (1.5703125, 0.000484466552734375, -6.407499313354492e-07, 9.920935184482005e-10)
# 1 / n! for the odd (sin) and even (cos) Taylor terms, highest first.
_SIN = tuple(float((-1) ** (k // 2) / np.prod(np.arange(1, k + 1))) for k in (9, 7, 5, 3))
_COS = tuple(float((-1) ** (k // 2) / np.prod(np.arange(1, k + 1))) for k in (8, 6, 4, 2))


def _horner(coefs, r2):
    out = jnp.full_like(r2, coefs[0])
    for c in coefs[1:]:
        out = out * r2 + c
    return out


def _xla(x):
    return jnp.sin(x), jnp.cos(x)


def _polynomial(x):
    k = jnp.round(x * np.float32(2 / np.pi))
    r = x
    for part in _PI_2:  # |r| <= pi/4
        r = r - k * np.float32(part)
    r2 = r * r
    s = r + r * r2 * _horner(_SIN, r2)
    c = 1 + r2 * _horner(_COS, r2)
    q = k.astype(jnp.int32) & 3  # the quadrant: x = r + q pi/2 (mod 2 pi)
    swap = (q & 1) == 1
    sin = jnp.where(swap, c, s)
    cos = jnp.where(swap, s, c)
    return jnp.where(q >= 2, -sin, sin), jnp.where((q == 1) | (q == 2), -cos, cos)


def sincos(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sin x, cos x), each of the shape and dtype of ``x`` (radians); differentiable."""
    x = jnp.asarray(x)
    if x.dtype != jnp.float32:
        return _xla(x)
    return jax.lax.platform_dependent(x, cpu=_polynomial, default=_xla)
