"""Progress a person can trust: a rate and a time left that are right early, and on a terminal or
in a log alike.

A render's first chunk also pays for the warm-up (the runtime compiling the graph for its shape,
caches, the first inputs prepared while nothing runs ahead), so the rate counts from the end of
the first chunk: taken from the start, the first estimate came out about twice the real time.
Until a second chunk is done the rate is the first chunk's, warm-up included, and says so.

Off a terminal (a log file, a scheduler) a progress bar is noise; ``ProgressLines`` writes one line
every ``LOG_EVERY_SECONDS`` instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_EVERY_SECONDS = 30.0
BAR_WIDTH = 20  # characters of the bar a terminal shows


class Eta:
    """Rate and time left of ``total`` units of work from timed updates (units done, seconds since
    the start)."""

    def __init__(self, total: float):
        self.total = total
        self.done = 0.0
        self.seconds = 0.0
        self._first: tuple[float, float] | None = None  # (done, seconds) when the first unit finished

    def update(self, done: float, seconds: float) -> None:
        if self._first is None and done > 0:
            self._first = (done, seconds)
        self.done, self.seconds = done, seconds

    @property
    def warming_up(self) -> bool:
        """Whether the rate still includes the warm-up (nothing done yet, or only the first unit)."""
        return self._first is None or self.done <= self._first[0]

    @property
    def rate(self) -> float | None:
        """Units per second: since the first unit finished; before that, the first unit's own."""
        if self._first is None:
            return None
        done, seconds = self._first
        if self.done > done and self.seconds > seconds:
            return (self.done - done) / (self.seconds - seconds)
        return done / seconds if seconds > 0 else None

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate; None before anything is done."""
        rate = self.rate
        return (self.total - self.done) / rate if rate else None


def clock(seconds: float) -> str:
    """Seconds as a progress display reads them: 42 s, 3 min 05 s, 2 h 07 min."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def status(eta: Eta, *, unit: str, scale: float = 1.0) -> str:
    """``eta`` as one line's worth: done/total, the rate and the time left (``scale``: units per
    displayed unit, e.g. 1e6 pixels per MP)."""
    done, total = eta.done / scale, eta.total / scale
    share = eta.done / eta.total if eta.total else 1.0
    places = 0 if scale == 1 else 2  # whole steps; megapixels to the hundredth
    head = f"{share:4.0%} {done:,.{places}f}/{total:,.{places}f} {unit}, {clock(eta.seconds)} elapsed"
    if eta.rate is None:
        return f"{head}, warm-up (the first part compiles and fills the caches)"
    if eta.done >= eta.total:  # the whole run's rate: the last chunks can finish together, which
        # makes the rate since the first one meaningless (182 MP/s was seen for a 1.3 s render)
        return f"{head}, {eta.done / eta.seconds / scale:,.2f} {unit}/s" if eta.seconds > 0 else head
    rate = f"{eta.rate / scale:,.2f} {unit}/s"
    warm = " (warm-up included)" if eta.warming_up else ""
    return f"{head}, {rate}{warm}, about {clock(eta.remaining)} left"


class ProgressLines:
    """Progress on ``stream``: a redrawn line on a terminal, else one line every ``every`` seconds
    (and the last), each prefixed by ``prog``."""

    def __init__(self, prog: str, total: float, *, unit: str, scale: float = 1.0, stream: TextIO | None = None,
                 every: float | None = None, enabled: bool = True):
        self.prog, self.unit, self.scale = prog, unit, scale
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.terminal = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = LOG_EVERY_SECONDS if every is None else every
        self.eta = Eta(total)
        self._last_line = time.monotonic()
        self._width = 0
        if self.terminal:
            self._draw()

    def update(self, done: float, seconds: float) -> None:
        self.eta.update(done, seconds)
        if not self.enabled:
            return
        if self.terminal:
            self._draw()
        elif done >= self.eta.total or time.monotonic() - self._last_line >= self.every:
            self._last_line = time.monotonic()
            print(f"{self.prog}: {status(self.eta, unit=self.unit, scale=self.scale)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.terminal:
            print(file=self.stream, flush=True)

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # the terminal's line ends however the work ends

    def _draw(self) -> None:
        share = self.eta.done / self.eta.total if self.eta.total else 1.0
        filled = round(BAR_WIDTH * min(1.0, share))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"{self.prog}: [{bar}] {status(self.eta, unit=self.unit, scale=self.scale)}"
        print("\r" + line.ljust(self._width), end="", file=self.stream, flush=True)
        self._width = len(line)
