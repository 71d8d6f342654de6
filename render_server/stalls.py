"""Streams whose client stopped reading: a streamed render whose next message has waited on the
client (HTTP/2 flow control) longer than ``--stream-idle-timeout`` is cancelled, which frees its
render slot. Time spent computing between messages does not count: only a message handed to gRPC
and not taken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("famos.server")


class StallWatch:
    """One background thread watching every open stream."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._streams: dict[int, tuple[list[float | None], Any, threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.cancelled = 0  # streams cancelled for stalling (the tests and the soak bench read it)

    def guarded(self, messages: Iterable[Any], *, context: Any, cancel: threading.Event) -> Iterator[Any]:
        """``messages`` passed through, cancelled when one waits on the client past the timeout."""
        waiting: list[float | None] = [None]  # since when the last message waits to be taken
        key = id(waiting)
        with self._lock:
            self._streams[key] = (waiting, context, cancel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="famos-stalls", daemon=True)
                self._thread.start()
        try:
            for message in messages:
                waiting[0] = time.monotonic()
                yield message
                waiting[0] = None
        finally:
            with self._lock:
                self._streams.pop(key, None)

    def _watch(self) -> None:
        period = min(1.0, self.timeout / 4)
        while True:
            time.sleep(period)
            now = time.monotonic()
            with self._lock:
                stalled = [(w, c, e) for w, c, e in self._streams.values() if w[0] is not None and now - w[0] > self.timeout]
            for waiting, context, cancel in stalled:
                log.warning("render stream cancelled: its client read nothing for %.0f s", now - waiting[0])
                waiting[0] = None
                self.cancelled += 1
                cancel.set()
                context.cancel()  # unblocks the send; the stream's generator is closed, its slot freed
