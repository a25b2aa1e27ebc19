"""Wall time of the named stages of a run (``with stages("planes"): ...``)."""

from __future__ import annotations

import contextlib
import time

__all__ = ["Stages"]


class Stages:
    """Accumulates the wall time of each named stage (seconds, insertion order) and logs it."""

    def __init__(self, log=None):
        self.seconds: dict[str, float] = {}
        self._log = log

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            if self._log is not None:
                self._log(f"{name}: {dt:.1f} s")
