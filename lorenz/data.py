"""Lorenz-63 data for the observer and forecasting tasks: standardised series and time splits.

The series is integrated by RK4 at ``dt`` (0.01 by default), the transient dropped, then every
``sample_every``-th state kept: samples are ``delta = dt * sample_every`` apart in Lorenz time.
Each coordinate is standardised by the mean and standard deviation of the *training* part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lorenz.systems import LorenzParams, lorenz63, rk4_trajectory

__all__ = ["Splits", "LorenzSeries", "lorenz_series", "lorenz_xy", "attractor_points",
           "LYAPUNOV_TIME"]

#: Lorenz-63 Lyapunov time 1 / 0.9056 (Sprott; docs/lyapunov.md).
LYAPUNOV_TIME = 1.0 / 0.9056


@struct.dataclass
class Splits:
    """Consecutive parts of a series, in samples: washout, train, validation, test (static)."""

    washout: int = struct.field(pytree_node=False, default=250)
    train: int = struct.field(pytree_node=False, default=1000)
    val: int = struct.field(pytree_node=False, default=250)
    test: int = struct.field(pytree_node=False, default=500)

    def __post_init__(self):
        for name in ("washout", "train", "val", "test"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (0 if name == "washout" else 2):
                raise ValueError(f"Splits.{name} must be an integer >= "
                                 f"{0 if name == 'washout' else 2}, got {v!r}")

    @property
    def total(self) -> int:
        return self.washout + self.train + self.val + self.test

    def ids(self) -> np.ndarray:
        """(total,) split id per sample: -1 washout, 0 train, 1 validation, 2 test."""
        return np.repeat([-1, 0, 1, 2], [self.washout, self.train, self.val, self.test])

    def slices(self) -> dict[str, slice]:
        edges = np.cumsum([0, self.washout, self.train, self.val, self.test])
        names = ("washout", "train", "val", "test")
        return {n: slice(int(a), int(b))
                for n, a, b in zip(names, edges[:-1], edges[1:], strict=True)}


@struct.dataclass
class LorenzSeries:
    """A standardised Lorenz-63 series.

    Attributes:
        ts: (T,) sample times (Lorenz time units), starting at 0.
        u: (T, 3) standardised (x, y, z).
        mean, std: (3,) the standardisation, from the training part.
        delta: sample spacing (static).
    """

    ts: jax.Array
    u: jax.Array
    mean: jax.Array
    std: jax.Array
    delta: float = struct.field(pytree_node=False)

    @property
    def raw(self) -> jax.Array:
        """(T, 3) the series in Lorenz units."""
        return self.u * self.std[None, :] + self.mean[None, :]


def lorenz_series(
    splits: Splits,
    *,
    dt: float = 0.01,
    sample_every: int = 1,
    transient: int = 5000,
    y0=(1.0, 1.0, 1.0),
    params: LorenzParams | None = None,
    dtype=jnp.float32,
) -> LorenzSeries:
    """Lorenz-63 by RK4 in float64 (whatever the process-wide x64 flag), ``splits.total``
    samples, returned in ``dtype``.

    Args:
        splits: the sample counts; the standardisation uses the ``train`` part.
        dt: RK4 step; samples are ``dt * sample_every`` apart.
        transient: RK4 steps dropped before the first sample.
        y0: initial state (3,) before the transient; change it for independent series.
    """
    if not isinstance(sample_every, (int, np.integer)) or sample_every < 1:
        raise ValueError(f"sample_every must be a positive integer, got {sample_every!r}")
    n_steps = (splits.total - 1) * sample_every
    with jax.enable_x64(True):  # scoped: the series does not depend on the process flag
        ys = np.asarray(rk4_trajectory(lorenz63, jnp.asarray(y0, jnp.float64), params, dt=dt,
                                       n_steps=n_steps, transient=transient,
                                       save_every=sample_every).ys)
    train = ys[splits.slices()["train"]]
    mean, std = train.mean(0), train.std(0)
    delta = dt * sample_every
    ts = delta * jnp.arange(splits.total, dtype=dtype)
    return LorenzSeries(ts=ts, u=jnp.asarray((ys - mean) / std, dtype),
                        mean=jnp.asarray(mean, dtype), std=jnp.asarray(std, dtype),
                        delta=float(delta))


def attractor_points(n: int, *, spacing: float = 100.0, dt: float = 0.01,
                     transient: float = 50.0) -> np.ndarray:
    """(n, 3) initial conditions on the Lorenz-63 attractor, ``spacing`` time units apart on
    one float64 RK4 trajectory from (1, 1, 1) after ``transient`` time units: starts of
    independent replications (about 90 Lyapunov times apart)."""
    every = round(spacing / dt)
    with jax.enable_x64(True):
        ys = rk4_trajectory(lorenz63, jnp.ones(3, jnp.float64), dt=dt,
                            n_steps=max(n - 1, 1) * every, transient=round(transient / dt),
                            save_every=every).ys
    return np.asarray(ys)[:n]


def lorenz_xy(n_samples: int, dt: float, dtype=jnp.float32, transient_time: float = 20.0):
    """x(t), y(t) of Lorenz-63 (raw, not standardised) at t = 0, dt, ..., (n_samples, 2), from
    (1, 1, 1) after ``transient_time`` time units (RK4 at ``dt``): the drive of sweep specs."""
    ys = rk4_trajectory(lorenz63, jnp.asarray([1.0, 1.0, 1.0], dtype), dt=dt,
                        n_steps=n_samples - 1, transient=round(transient_time / dt)).ys
    return ys[:, :2]
