"""The server's memory budget (``--max-memory``): every streamed render and job reserves what its
estimate says it will hold (``famos.request.render_memory``: window, pipeline, decoded content)
before its content is decoded or a window allocated, and gives it back when it ends; so does each
image answer of the viewer (``--http``), before it reads a tile.

A streamed render that does not fit now is refused at once (RESOURCE_EXHAUSTED: the client
retries); a job waits for its memory, since it is queued anyway. A request that could never fit
is refused either way, at submission for a job.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from famos.errors import Cancelled, UserError
from famos.memory import machine_memory
from famos.request import Estimate
from famos.render_server.errors import ResourceExhausted

_POLL_SECONDS = 0.1  # how soon a waiting job notices a cancel


def default_max_memory() -> int:
    """Half the machine: the rest is the OS, the server itself, its file cache and the viewer."""
    return max(machine_memory() // 2, 1 << 30)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


class MemoryBudget:
    def __init__(self, total: int):
        self.total = total
        self._held = 0
        self._changed = threading.Condition()

    @property
    def held(self) -> int:
        with self._changed:
            return self._held

    def check_fits(self, estimate: Estimate) -> None:
        """Refuse what could never run here, whatever else is running."""
        if estimate.memory_bytes > self.total:
            raise ResourceExhausted(
                f"the render needs about {_mb(estimate.memory_bytes)} of memory, over the server's budget of "
                f"{_mb(self.total)} (--max-memory): use a smaller chunk, region or content image"
            )

    @contextlib.contextmanager
    def holding(self, *, wait: bool, cancel: threading.Event | None = None) -> Iterator[Reservation]:
        """A reservation for the ``with`` body: ``take(estimate)`` reserves (at most once), and
        everything taken is given back when the body ends, however it ends."""
        reservation = Reservation(self, wait=wait, cancel=cancel)
        try:
            yield reservation
        finally:
            reservation.release()

    @contextlib.contextmanager
    def reserved(self, n: int, *, what: str = "the answer") -> Iterator[None]:
        """``n`` bytes for the ``with`` body, or ResourceExhausted at once: the viewer's answers
        (``famos.viewer.server.ViewerConfig.reserve``), a job submission's decode of its content
        and a live job view's draw from the budget the renders do."""
        if n > self.total:  # never fits: not a retry (the viewer answers 400, not 503)
            raise UserError(f"{what} needs about {_mb(n)} of memory, over the server's budget of "
                            f"{_mb(self.total)} (--max-memory): ask for fewer pixels")
        self._take(n, wait=False, cancel=None, what=what)
        try:
            yield
        finally:
            self._give_back(n)

    def _take(self, n: int, *, wait: bool, cancel: threading.Event | None, what: str = "the render") -> None:
        with self._changed:
            while self._held + n > self.total:
                if not wait:
                    raise ResourceExhausted(
                        f"server busy: {what} needs about {_mb(n)} of memory and {_mb(self._held)} of the "
                        f"{_mb(self.total)} budget are held by running renders; retry"
                    )
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled while waiting for memory")
                self._changed.wait(_POLL_SECONDS)
            self._held += n

    def _give_back(self, n: int) -> None:
        with self._changed:
            self._held -= n
            self._changed.notify_all()


class Reservation:
    def __init__(self, budget: MemoryBudget, *, wait: bool, cancel: threading.Event | None):
        self.budget = budget
        self.wait = wait
        self.cancel = cancel
        self.bytes = 0

    def take(self, estimate: Estimate) -> None:
        """``famos.request.resolve``'s admission hook: reserve the estimate's memory, or refuse."""
        self.budget.check_fits(estimate)
        if self.bytes:
            raise RuntimeError("a reservation takes one estimate")
        self.budget._take(estimate.memory_bytes, wait=self.wait, cancel=self.cancel)
        self.bytes = estimate.memory_bytes

    def release(self) -> None:
        if self.bytes:
            self.budget._give_back(self.bytes)
            self.bytes = 0
