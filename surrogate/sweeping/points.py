"""Parameter points of a sweep: a grid (cartesian product of named axes) or a list of points.

    points = grid(beta_self=np.logspace(-4, 0, 64), beta_cross=np.logspace(-4, 0, 64))
    nmse = points.unflatten(out)["nmse"]            # (64, 64), axis i: beta_self, j: beta_cross
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import numpy as np

__all__ = ["Points", "as_points", "grid"]


@dataclasses.dataclass(frozen=True, eq=False)
class Points:
    """P parameter points: ``columns`` maps each name to a (P,) array.

    Attributes:
        columns: name -> (P,) NumPy array (numeric).
        shape: the grid shape for ``grid`` points (product P), (P,) for a list of points.
        axes: name -> 1-D axis values for ``grid`` points, None for a list.
    """

    columns: Mapping[str, np.ndarray]
    shape: tuple[int, ...]
    axes: Mapping[str, np.ndarray] | None = None

    def __post_init__(self):
        if not self.columns:
            raise ValueError("points need at least one named parameter")
        sizes = {name: np.shape(v) for name, v in self.columns.items()}
        n = math.prod(self.shape)
        for name, shape in sizes.items():
            if shape != (n,):
                raise ValueError(f"points: column {name!r} must have shape ({n},), got {shape}")

    def __len__(self) -> int:
        return math.prod(self.shape)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Point i as a dict of NumPy scalars."""
        return {name: v[i] for name, v in self.columns.items()}

    def unflatten(self, tree):
        """Reshape the leading axis P of every leaf of ``tree`` to ``shape`` (grid layout)."""
        n = len(self)

        def one(x):
            x = np.asarray(x)
            if x.shape[:1] != (n,):
                raise ValueError(f"leaf of shape {x.shape} has no leading axis of {n} points")
            return x.reshape(self.shape + x.shape[1:])

        return jax.tree.map(one, tree)


def _column(name: str, values, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{what} {name!r} must be a non-empty 1-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{what} {name!r} must be numeric, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(
            f"{what} {name!r} has a non-finite value {a[bad].item()!r} at index {bad}")
    return a


def grid(**axes) -> Points:
    """The cartesian product of named 1-D axes, flattened in C order (the last axis fastest).

    ``grid(beta_self=bs, beta_cross=bc)`` has P = len(bs) * len(bc) points; point
    i * len(bc) + j is (bs[i], bc[j]); ``shape`` is (len(bs), len(bc)).
    """
    if not axes:
        raise ValueError("grid needs at least one axis, e.g. grid(beta_self=[0.1, 1.0])")
    cols = {name: _column(name, v, "axis") for name, v in axes.items()}
    mesh = np.meshgrid(*cols.values(), indexing="ij")
    return Points(
        columns={name: m.ravel() for name, m in zip(cols, mesh, strict=True)},
        shape=tuple(len(v) for v in cols.values()),
        axes=cols,
    )


def as_points(points) -> Points:
    """``Points`` from ``Points`` or a mapping of equal-length 1-D arrays (a list of points)."""
    if isinstance(points, Points):
        return points
    if not isinstance(points, Mapping):
        raise TypeError(f"points must be Points (see grid) or a dict of 1-D arrays, got "
                        f"{type(points).__name__}")
    if not points:
        raise ValueError("points need at least one named parameter")
    cols = {str(name): _column(str(name), v, "points column") for name, v in points.items()}
    lengths = {name: len(v) for name, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"points columns must have equal lengths, got {lengths}")
    return Points(columns=cols, shape=(next(iter(lengths.values())),))
