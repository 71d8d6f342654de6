"""The render server's Prometheus metrics (``famos serve --metrics-port N``), served by
prometheus_client's WSGI app on a port of their own.

Every metric lives in a registry of the server's own, so that several servers share a process
(the tests start many). What the server already knows is read when Prometheus scrapes (render
slots, the memory budget, the job store); what happens once is counted as it happens: calls (by
``interceptors.CallLog``) and rendered chunks (through a render's progress callback, ``meter``).
"""

from __future__ import annotations

import collections
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from famos.errors import UserError
from famos.values import JobState, Progress

if TYPE_CHECKING:
    from famos.pipeline import ProgressCallback
    from famos.runners import RunnerOptions
    from famos.render_server.budget import MemoryBudget
    from famos.render_server.jobs import JobManager
    from famos.render_server.slots import RenderSlots

RATE_WINDOW_SECONDS = 30.0  # famos_render_megapixels_per_second averages over this
# seconds per chunk: milliseconds for a small chunk on a GPU, tens of seconds for a large one on a CPU
CHUNK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_EVERY_JOB = 2**62  # ListJobs-style limit that takes the whole store


class ServerMetrics:
    """The metrics of one server, whose ``runner`` is resolved (``RunnerOptions.resolved``). Built
    before the parts it reads (the server's render limits take its ``meter``), which ``watch`` then
    hands it."""

    def __init__(self, *, runner: RunnerOptions):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
        except ImportError:
            raise UserError('--metrics-port: prometheus-client is not installed (pip install "famos[server]")') from None

        self.registry = registry = CollectorRegistry()
        self._requests = Counter(
            "famos_requests", "gRPC calls answered, by service, method and status code",
            ("service", "method", "code"), registry=registry,
        )
        self._pixels = Counter("famos_rendered_pixels", "pixels rendered by streamed renders and jobs", registry=registry)
        self._chunk_seconds = Histogram(
            "famos_chunk_seconds",
            "seconds per rendered chunk, between consecutive chunks of a render as it receives them "
            "(a render's first chunk counts from its start: warm-up included)",
            buckets=CHUNK_SECONDS_BUCKETS, registry=registry,
        )
        Gauge(
            "famos_render_megapixels_per_second",
            f"megapixels rendered per second over the last {RATE_WINDOW_SECONDS:.0f} s, all renders together",
            registry=registry,
        ).set_function(self._megapixels_per_second)
        # famos_process_resident_memory_bytes and the rest of the process (on Linux)
        ProcessCollector(namespace="famos", registry=registry)
        Info("famos_device", "where the server renders: the resolved backend, precision and device",
             registry=registry).info({
                 "backend": runner.backend.value,
                 "precision": runner.precision.value,
                 "device": runner.device,
             })
        self._rate_lock = threading.Lock()
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (monotonic time, pixels)
        self._since = time.monotonic()

    def watch(self, *, slots: RenderSlots, budget: MemoryBudget, jobs: JobManager) -> None:
        """Gauges read from these at every scrape."""
        from prometheus_client import Gauge

        registry = self.registry
        Gauge("famos_renders_running", "streamed renders holding a worker (--workers)",
              registry=registry).set_function(lambda: slots.active)
        # RenderSlots counts its waiters without a public accessor; an int read needs no lock
        Gauge("famos_renders_waiting", "streamed renders waiting for a worker (at most --max-queue)",
              registry=registry).set_function(lambda: slots.waiting)
        Gauge("famos_memory_budget_held_bytes", "memory the running renders hold of the budget (their estimates)",
              registry=registry).set_function(lambda: budget.held)
        Gauge("famos_memory_budget_bytes", "the renders' memory budget (--max-memory)",
              registry=registry).set_function(lambda: budget.total)
        registry.register(_JobCollector(jobs, slots))

    def call(self, method: str, code: str) -> None:
        """One answered call; ``method`` as gRPC names it, ``/package.Service/Method``."""
        service, _, name = method.lstrip("/").rpartition("/")
        self._requests.labels(service=service, method=name, code=code).inc()

    def meter(self) -> ProgressCallback:
        """A progress callback for one render: its chunks' pixels and seconds into the metrics."""
        return _RenderMeter(self)

    def _chunks(self, n: int, pixels: int, seconds: float) -> None:
        self._pixels.inc(pixels)
        for _ in range(n):  # a cluster may report several chunks at once: each its share
            self._chunk_seconds.observe(seconds / n)
        with self._rate_lock:
            self._recent.append((time.monotonic(), pixels))

    def _megapixels_per_second(self) -> float:
        now = time.monotonic()
        with self._rate_lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_SECONDS:
                self._recent.popleft()
            pixels = sum(p for _, p in self._recent)
        # a server up for less than the window averages over its life so far
        return pixels / 1e6 / max(min(RATE_WINDOW_SECONDS, now - self._since), 1.0)


class _RenderMeter:
    """One render's progress (cumulative: chunks, pixels and seconds since its start) as increments."""

    def __init__(self, metrics: ServerMetrics):
        self._metrics = metrics
        self._last = Progress(0, 0, 0, 0, 0.0)

    def __call__(self, progress: Progress) -> None:
        last, self._last = self._last, progress
        chunks = progress.chunks_done - last.chunks_done
        if chunks > 0:
            self._metrics._chunks(chunks, progress.pixels_done - last.pixels_done, progress.seconds - last.seconds)


class _JobCollector:
    """Jobs by state and the work waiting for a worker, counted from the job store at each scrape."""

    def __init__(self, jobs: JobManager, slots: RenderSlots):
        self._jobs = jobs
        self._slots = slots

    def describe(self) -> list:
        return []  # nothing collected at registration: the job store is not open yet

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        if self._jobs.db is None:  # the job store opens with the server's start
            return
        counts = dict.fromkeys(JobState, 0)
        try:
            for job in self._jobs.list(_EVERY_JOB):
                counts[job.state] += 1
        except sqlite3.ProgrammingError:  # closed by the server's stop
            return
        jobs = GaugeMetricFamily("famos_jobs", "jobs in the output store, by state", labels=("state",))
        for state, n in counts.items():
            jobs.add_metric((state.value,), n)
        yield jobs
        yield GaugeMetricFamily(
            "famos_queue_depth", "work waiting for a worker: streamed renders waiting plus jobs queued",
            value=self._slots.waiting + counts[JobState.QUEUED],
        )


class MetricsServer:
    """The registry's text format at ``/metrics`` (any path answers it) on ``host:port``; bound when
    built, so that a taken port fails the server's start, served from ``start``."""

    def __init__(self, metrics: ServerMetrics, *, host: str, port: int):
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        from prometheus_client import make_wsgi_app

        class Quiet(WSGIRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - every scrape on stderr is noise
                pass

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True
            address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # IPv6 hosts too

        self.httpd = make_server(host, port, make_wsgi_app(metrics.registry), server_class=Server, handler_class=Quiet)
        self.port = self.httpd.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="famos-metrics", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
