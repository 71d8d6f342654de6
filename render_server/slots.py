"""Render slots: at most ``workers`` renders run at once; a bounded number of streamed renders may
wait for a slot, further ones are refused at once (RESOURCE_EXHAUSTED) instead of piling up.

Jobs wait without that bound: their own number is bounded by ``--max-jobs`` at submission.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from famos.render_server.errors import ResourceExhausted
from famos.errors import Cancelled

_POLL_SECONDS = 0.1  # how soon a waiter notices that its client went away


class RenderSlots:
    def __init__(self, *, workers: int, max_waiting: int):
        if workers < 1:
            raise ValueError(f"workers = {workers}: must be >= 1")
        self.workers = workers
        self.max_waiting = max_waiting
        self._changed = threading.Condition()
        self._active = 0
        self._waiting = 0  # bounded waiters only

    @property
    def waiting(self) -> int:
        """Renders waiting for a worker (those that may be refused when the queue is full)."""
        with self._changed:
            return self._waiting

    @property
    def active(self) -> int:
        with self._changed:
            return self._active

    @contextlib.contextmanager
    def slot(self, *, cancel: threading.Event, bounded: bool = True) -> Iterator[None]:
        """Hold one slot for the ``with`` body; raises Cancelled when ``cancel`` is set while waiting."""
        with self._changed:
            if bounded and self._active >= self.workers and self._waiting >= self.max_waiting:
                raise ResourceExhausted(
                    f"server busy: {self._active} renders running and {self._waiting} waiting (the limit)"
                )
            self._waiting += bounded
            try:
                while self._active >= self.workers:
                    if cancel.is_set():
                        raise Cancelled("render cancelled while waiting for a worker")
                    self._changed.wait(_POLL_SECONDS)
            finally:
                self._waiting -= bounded
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify_all()
