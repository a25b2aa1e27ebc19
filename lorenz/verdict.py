"""Calibrated verdicts: a paired effect over replications, its 95 % interval and a margin.

A sub-claim of the paper is a contrast between the low-beta and the high-beta block of a plane,
measured on each replication (the same Lorenz trajectory, graph and frequency draw in both
blocks): ``effects`` (n,), positive in the claim's direction. The verdict compares the Student-t
95 % interval of the mean effect with the equivalence margin m > 0 (the smallest effect worth
reporting, stated with the verdict):

* "supported": the whole interval lies above +m;
* "contradicted": the whole interval lies below -m;
* "no detectable effect": otherwise (the interval reaches into [-m, m]).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

__all__ = ["Verdict", "verdict", "VERDICTS"]

VERDICTS = ("supported", "contradicted", "no detectable effect")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Mean effect, its 95 % interval (lo, hi), the margin, the replication count, the word."""

    effect: float
    lo: float
    hi: float
    margin: float
    n: int
    word: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def verdict(effects, margin: float, level: float = 0.95) -> Verdict:
    """The verdict on paired effects (n,) (n >= 2) against the margin ``margin`` (> 0)."""
    e = np.asarray(effects, np.float64).ravel()
    if e.size < 2 or not np.all(np.isfinite(e)):
        raise ValueError(f"need >= 2 finite paired effects, got {e.tolist()}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    mean = float(e.mean())
    half = float(stats.t.ppf(0.5 + level / 2, e.size - 1) * e.std(ddof=1) / np.sqrt(e.size))
    lo, hi = mean - half, mean + half
    word = ("supported" if lo > margin else "contradicted" if hi < -margin
            else "no detectable effect")
    return Verdict(effect=mean, lo=lo, hi=hi, margin=float(margin), n=int(e.size), word=word)
