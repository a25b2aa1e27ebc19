"""``FitConfig``: the settings of a fit (model, time map, divergence, optimiser, analysis).

See docs/fit.md for what each setting means and how the fit uses it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from surrogate.coupling import Coupling, Free, Tied

#: The fit's default coupling reading: B and K both fitted.
FREE = Free()

__all__ = ["DIVERGENCES", "TIME_MAPS", "FitConfig"]

TIME_MAPS = ("fixed", "learned")
DIVERGENCES = ("kl", "mse")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of a fit (all static). Times in surrogate units, frequencies in rad per unit."""

    modalities: tuple[str, ...] = ("audio", "vision")
    heads: tuple[int, ...] | None = None
    sizes: tuple[int, ...] | None = None  # None: from the bundle's token counts
    n_total: int = 48
    k: int = 6
    p: float = 0.01
    cross_density: float = 0.15
    normalisation: str = "softmax"
    anchored: bool = True  # the anchored surrogate (docs/model.md); False: without the term
    anchor: float = 4.0  # h, as in the Lorenz presets (initial value when fit_anchor)
    encoding_scale: float = math.pi / 2  # c_i ~ N(0, encoding_scale^2)
    fit_anchor: bool = False
    realizations: int = 4  # R: graphs, frequencies, encodings and phases from independent keys
    horizon: float = 4.0
    dt: float = 0.05
    time_map: str = "fixed"
    n_initial: int = 1  # initial phase draws per realization
    divergence: str = "kl"
    restarts: int = 4
    steps: int = 300
    learning_rate: float = 0.05
    patience: int = 40
    tol: float = 1e-4
    coupling: Coupling = FREE  # Free(): B and K fitted; Tied(): K = B (the paper preset)
    init_B: float = 1.0
    init_K: float = 1.0
    init_spread: float = 0.5
    init_noise: float = 0.5
    fit_spread: bool = True
    fit_gain: bool = True
    polish_steps: int = 15
    held_out: int = 64  # realizations the fit never saw, for the noise covariance (0: no intervals)
    profile_steps: int = 3  # Levenberg-Marquardt (chord) steps per point of a likelihood profile
    level: float = 0.9  # coverage of the intervals
    simultaneous: bool = True  # intervals of all coordinates at once (chi2_P), else marginal
    sloppy_ratio: float = 1e-3
    converged_within: float = 1e-5

    def __post_init__(self):
        def positive(name):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"FitConfig.{name} must be positive, got {v!r}")

        for name in ("horizon", "dt", "learning_rate", "init_B", "init_K", "init_spread",
                     "sloppy_ratio", "tol", "encoding_scale"):
            positive(name)
        for name in ("polish_steps", "held_out", "profile_steps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"FitConfig.{name} must be an integer >= 0, got {v!r}")
        if 0 < self.held_out < 4:
            raise ValueError(f"FitConfig.held_out must be 0 (no intervals) or >= 4 (the noise "
                             f"covariance of one direction needs 4 draws), got {self.held_out}")
        if not (isinstance(self.anchor, (int, float)) and math.isfinite(self.anchor)
                and self.anchor >= 0):
            raise ValueError(f"FitConfig.anchor must be finite and >= 0, got {self.anchor!r}")
        if self.anchored and self.fit_anchor and self.anchor <= 0:
            raise ValueError("FitConfig.anchor must be > 0 to be fitted (it is fitted as a log)")
        if not 0 < self.level < 1:
            raise ValueError(f"FitConfig.level must be in (0, 1), got {self.level!r}")
        for name in ("n_total", "n_initial", "restarts", "steps", "patience", "realizations"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"FitConfig.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.coupling, (Free, Tied)):
            raise ValueError(f"FitConfig.coupling must be surrogate.coupling.Free() or "
                             f"surrogate.Tied(), got {self.coupling!r}")
        if self.time_map not in TIME_MAPS:
            raise ValueError(f"FitConfig.time_map must be one of {TIME_MAPS}, "
                             f"got {self.time_map!r}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"FitConfig.divergence must be one of {DIVERGENCES}, "
                             f"got {self.divergence!r}")
        steps = self.horizon / self.dt
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 2:
            raise ValueError(f"FitConfig.horizon={self.horizon} must be a multiple (>= 2) of "
                             f"dt={self.dt}")
        if self.sizes is not None and len(self.sizes) != len(self.modalities):
            raise ValueError(f"FitConfig.sizes={self.sizes} must give one size per modality "
                             f"{self.modalities}")
        if not 0 <= self.init_noise:
            raise ValueError(f"FitConfig.init_noise must be >= 0, got {self.init_noise!r}")

    @property
    def n_steps(self) -> int:
        return round(self.horizon / self.dt)

    def replace(self, **kw) -> FitConfig:
        return dataclasses.replace(self, **kw)
