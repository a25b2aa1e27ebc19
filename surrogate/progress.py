"""Progress of long jobs, one protocol for every command: a tqdm bar on a terminal; elsewhere
(a log file, a pipe) a line every ``every`` seconds and one final line, with the count, the
rate and the time left. Messages (``say``) go to the same stream, prefixed with the job's
name."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Items done out of ``total``, for a job called ``desc`` (the prefix of every line).

    ``done`` counts items found finished before this run (a resumed job): they start the bar
    but not the rate. ``enabled=False`` prints nothing (e.g. on every process but the first).
    Use as a context manager, or call ``begin``, ``update`` and ``close``."""

    def __init__(self, total: int, *, desc: str, unit: str = "items", enabled: bool = True,
                 stream=None, done: int = 0, every: float = 30.0):
        self.total, self.done, self.computed = int(total), int(done), 0
        self.every, self.logged = every, 0.0
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.start = None
        self.bar = None

    def say(self, text: str) -> None:
        """One message line, ``desc: text``."""
        if self.enabled:
            if self.bar is not None:
                self.bar.write(f"{self.desc}: {text}", file=self.stream)
            else:
                print(f"{self.desc}: {text}", file=self.stream, flush=True)

    def begin(self) -> Progress:
        self.start = self.logged = time.perf_counter()
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, unit=self.unit, desc=self.desc,
                            file=self.stream, dynamic_ncols=True, smoothing=0.1)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        self.computed += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.start is not None and self.done < self.total \
                and time.perf_counter() - self.logged > self.every:
            self.logged = time.perf_counter()
            self._line(self.logged)
        if self.done >= self.total:
            self.close()

    def _line(self, now: float) -> None:
        rate = self.computed / max(now - self.start, 1e-9)
        eta = int((self.total - self.done) / max(rate, 1e-9))
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} "
              f"({100 * self.done / max(self.total, 1):.1f}%), {rate:.4g} {self.unit}/s, "
              f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}", file=self.stream,
              flush=True)

    def close(self) -> None:
        """Close the bar, or print the final line when the job finished (not after an error)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and not self.tty and self.start is not None \
                and self.done >= self.total:
            self._line(time.perf_counter())
        self.start = None

    def __enter__(self) -> Progress:
        return self.begin()

    def __exit__(self, *exc) -> None:
        self.close()
