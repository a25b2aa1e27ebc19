"""Wall and CPU time of the named stages of a run (``with stages("planes"): ...``)."""

from __future__ import annotations

import contextlib
import time

__all__ = ["Stages"]


class Stages:
    """Accumulates the wall time (``seconds``) and the process CPU time (``cpu_seconds``, all
    threads: on a shared machine the fairer measure) of each named stage, and logs them."""

    def __init__(self, log=None):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._log = log

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + dc
            if self._log is not None:
                self._log(f"{name}: {dt:.1f} s (CPU {dc:.1f} s)")
