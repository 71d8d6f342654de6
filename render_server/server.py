"""`famos serve`: the render server's lifecycle (build, start, graceful stop) and its command line.

    famos serve --models MODELS --output STORE --port 50051 [--token T] [--tls-cert C --tls-key K]
                [--metrics-port 9100]

Every call is logged as one JSON line (logger ``famos.server.calls``, INFO); ``--metrics-port``
serves Prometheus metrics at http://HOST:PORT/metrics (``famos.render_server.metrics``).

On SIGTERM or SIGINT the server reports NOT_SERVING to health checks, stops accepting calls, gives
running calls ``--grace`` seconds, and pauses running jobs between two chunks; they resume on the
next start.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import pathlib
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from famos.errors import UserError
from famos.chunk_loop import DEFAULT_CHUNK, MIN_CHUNK
from famos.cli_parser import Parser
from famos.cluster import ClusterOptions, add_cluster_arguments, cluster_options
from famos.runners import RunnerOptions, add_runner_arguments, runner_options

log = logging.getLogger("famos.server")

# Calls that are neither renders nor waiting for one (model queries, job calls, watches, downloads)
# get this many gRPC threads on top of the render workers and the render wait queue.
_UNBUDGETED_CALLS = 16  # health checks, reflection, and refusals being answered
# a dead peer (a laptop that slept, a cut cable) is noticed within a minute, not never
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    models: pathlib.Path
    output: pathlib.Path
    host: str = "127.0.0.1"
    port: int = 50051  # 0: any free port (see RenderServer.port)
    token: str | None = None
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    max_pixels: int = 2**30  # of one render's region
    max_content_pixels: int = 2**26  # of a decoded content image
    max_chunk: int = DEFAULT_CHUNK  # of a chunk a request names (a window's memory grows with its square)
    max_memory: int | None = None  # bytes the renders may hold at once (render_server.budget); None: half the machine
    max_message_bytes: int = 64 * 2**20  # of a request (content images travel inside requests)
    max_jobs: int = 64  # unfinished jobs held
    workers: int = 2  # renders running at once (streamed and jobs)
    max_queue: int = 8  # streamed renders waiting for a worker
    job_workers: int = 1  # jobs rendering at once, apart from the streamed renders' --workers
    max_other_calls: int = 64  # calls other than renders at once (watches, downloads, lists, submits)
    stream_idle_timeout: float = 120.0  # seconds a streamed render may wait on a client that reads nothing
    chunk: int | None = None  # default chunk side; None: the device's (famos.request.resolve)
    runner: RunnerOptions = RunnerOptions()
    cluster: ClusterOptions | None = None  # render on a Ray cluster's workers instead of in this process
    http_port: int | None = None  # the viewer (IIIF + deep-zoom page) over the jobs; 0: any free port
    openseadragon: str = ""  # where the viewer page loads OpenSeadragon from
    public_url: str = ""  # where IIIF clients reach the viewer (behind a proxy, on 0.0.0.0); default http://host:port/
    # the viewer's limits: ViewerConfig fields (famos.viewer.cli.limit_settings); empty: its defaults
    viewer_limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics_port: int | None = None  # Prometheus metrics over HTTP on host (render_server.metrics); 0: any free port
    grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: must be 0 to 65535 (0: any free port)")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise UserError(f"--http {self.http_port}: must be 0 to 65535 (0: any free port)")
        if self.metrics_port is not None:
            if not 0 <= self.metrics_port <= 65535:
                raise UserError(f"--metrics-port {self.metrics_port}: must be 0 to 65535 (0: any free port)")
            for option, taken in (("--port", self.port), ("--http", self.http_port)):
                if self.metrics_port and self.metrics_port == taken:
                    raise UserError(f"--metrics-port {self.metrics_port}: the same port as {option}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UserError("--tls-cert and --tls-key go together")
        if self.max_memory is not None and self.max_memory < 1 << 20:
            raise UserError(f"--max-memory {self.max_memory}: must be at least 1M")
        if not (math.isfinite(self.grace_seconds) and self.grace_seconds >= 0):
            raise UserError(f"--grace {self.grace_seconds}: must be a number of seconds, 0 or more")
        if not (math.isfinite(self.stream_idle_timeout) and self.stream_idle_timeout > 0):
            raise UserError(f"--stream-idle-timeout {self.stream_idle_timeout}: must be a positive number of seconds")
        for name in ("workers", "job_workers", "max_jobs", "max_pixels", "max_content_pixels", "max_chunk", "max_other_calls"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} = {getattr(self, name)}: must be >= 1")
        if self.max_queue < 0:
            raise UserError(f"--max-queue = {self.max_queue}: must be >= 0")
        if self.chunk is not None and self.chunk < MIN_CHUNK:
            raise UserError(f"--chunk = {self.chunk}: must be at least {MIN_CHUNK} pixels")


class RenderServer:
    """One gRPC server with the render service, health checking and reflection."""

    def __init__(self, config: ServerConfig):
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from famos.render_server.interceptors import BearerToken, CallBudget, CallLog, ErrorMapping
        from famos.render_server.stalls import StallWatch
        from famos.cluster import WorkerPool
        from famos.render_server.jobs import JobManager, JobsConfig
        from famos.render_server.models import ModelStore
        from famos.render_server.service import SERVICE_NAME, RenderService
        from famos.render_server.budget import MemoryBudget, default_max_memory
        from famos.render_server.handlers import render_service_handler
        from famos.render_server.slots import RenderSlots
        from famos.request import AdmissionLimits
        from famos.render_server.streaming import ServerLimits

        if not config.models.is_dir():
            raise UserError(f"--models {config.models}: no such folder")
        if not config.output.is_dir():
            try:  # a new store: the server makes its folder (the models must exist already)
                config.output.mkdir(parents=True)
            except OSError as err:
                raise UserError(f"--output {config.output}: cannot create the output store ({err.strerror or err})") from None
            log.info("created the output store %s", config.output)
        # resolved once (`auto` becomes this machine's backend and precision): what ListModels
        # reports, what the renderers and a cluster's workers run
        runner = config.runner.resolved()
        self.config = config = dataclasses.replace(config, runner=runner)
        if config.cluster is None:  # a cluster's workers check their own device
            from famos.runners import check_available

            check_available(runner)
        self.metrics = None
        if config.metrics_port is not None:
            from famos.render_server.metrics import ServerMetrics

            self.metrics = ServerMetrics(runner=config.runner)
        limits = ServerLimits(
            AdmissionLimits(max_pixels=config.max_pixels, max_content_pixels=config.max_content_pixels,
                            max_chunk=config.max_chunk),
            default_chunk=config.chunk,
            meter=self.metrics.meter if self.metrics is not None else None,
        )
        # the cluster's workers serve every model; they start with the server and stop with it
        self.pool = WorkerPool(config.cluster, config.runner) if config.cluster is not None else None
        self.models = ModelStore(config.models, runner=config.runner, cluster=self.pool)
        self.slots = RenderSlots(workers=config.workers, max_waiting=config.max_queue)
        self.budget = MemoryBudget(config.max_memory or default_max_memory())
        self.jobs = JobManager(
            JobsConfig(output=config.output, max_jobs=config.max_jobs, job_workers=config.job_workers, limits=limits),
            models=self.models, budget=self.budget,
        )
        if self.metrics is not None:
            self.metrics.watch(slots=self.slots, budget=self.budget, jobs=self.jobs)
        self.stalls = StallWatch(config.stream_idle_timeout)
        interceptors = [CallBudget(f"/{SERVICE_NAME}/", limit=config.max_other_calls), ErrorMapping(f"/{SERVICE_NAME}/")]
        if config.token:
            interceptors.insert(0, BearerToken(config.token))  # refuse before anything else runs
        interceptors.insert(0, CallLog(f"/{SERVICE_NAME}/", metrics=self.metrics))  # logs the refusals too
        # the service's budgets (render slots and waiters, other calls) refuse first; gRPC's own
        # limit, above their sum, is never what a client meets
        threads = config.workers + config.max_queue + config.max_other_calls + _UNBUDGETED_CALLS
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="famos-rpc"),
            interceptors=interceptors,
            # beyond this, gRPC itself answers RESOURCE_EXHAUSTED instead of queuing invisibly
            maximum_concurrent_rpcs=threads,
            options=[
                # gRPC shares ports by default: a second `famos serve` would silently split the
                # clients (and resume the same jobs twice) instead of failing to start.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", 4 * 2**20),
                # a huge authorization header reaches the token check (UNAUTHENTICATED) instead of
                # gRPC's own header limit (RESOURCE_EXHAUSTED)
                ("grpc.max_metadata_size", 1 << 20),
                *KEEPALIVE,
                # clients ping every 30 s (clients.render_client): allowed, not a GOAWAY
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ],
        )
        self.server.add_generic_rpc_handlers((render_service_handler(
            RenderService(models=self.models, jobs=self.jobs, slots=self.slots, limits=limits, stalls=self.stalls,
                          budget=self.budget),
        ),))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._serving = health_pb2.HealthCheckResponse.SERVING
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        # an IPv6 literal takes brackets in a target (::1 -> [::1]:50051)
        host = f"[{config.host}]" if ":" in config.host and not config.host.startswith("[") else config.host
        address = f"{host}:{config.port}"
        if config.tls_cert is not None:
            _check_tls_pair(config.tls_cert, config.tls_key)
        _check_port_free(config.host, config.port)
        try:
            if config.tls_cert is not None:
                credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc's way of saying the bind failed
            self.port = 0
        if self.port == 0:
            raise UserError(f"cannot listen on {address} (in use or not a local address)")
        self._service_name = SERVICE_NAME
        self.viewer = None
        if config.http_port is not None:
            from famos.render_server.viewing import JobImages
            from famos.viewer.server import ViewerConfig, ViewerServer

            self.job_images = JobImages(self.jobs)
            try:
                self.viewer = ViewerServer(self.job_images, ViewerConfig(
                    host=config.host, port=config.http_port, token=config.token, openseadragon=config.openseadragon,
                    public_url=config.public_url, reserve=self.budget.reserved, **config.viewer_limits,
                ))
            except OSError as err:
                raise UserError(f"--http {config.http_port}: cannot listen on {config.host} ({err.strerror})") from None
        self.metrics_server = None
        self.metrics_port: int | None = None  # the bound one
        if self.metrics is not None:
            from famos.render_server.metrics import MetricsServer

            _check_port_free(config.host, config.metrics_port, option="--metrics-port")
            try:
                self.metrics_server = MetricsServer(self.metrics, host=config.host, port=config.metrics_port)
            except OSError as err:
                raise UserError(f"--metrics-port {config.metrics_port}: cannot listen on {config.host} "
                                f"({err.strerror or err})") from None
            self.metrics_port = self.metrics_server.port

    def start(self) -> None:
        self.jobs.start()  # resumes what a previous process left unfinished
        self.server.start()
        if self.viewer is not None:
            self.viewer.start()
            log.info("viewer on %s", self.viewer.url)
        if self.metrics_server is not None:
            self.metrics_server.start()
            log.info("metrics on %s", self.metrics_server.url)
        for service in ("", self._service_name):
            self.health.set(service, self._serving)
        log.info("listening on %s:%d (%s)", self.config.host, self.port, "TLS" if self.config.tls_cert else "plaintext")

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        if self.viewer is not None:
            self.viewer.stop()
            self.job_images.close()
        if self.metrics_server is not None:  # before the job store it reads closes
            self.metrics_server.stop()
        self.jobs.stop()
        stopped.wait()
        if self.pool is not None:
            self.pool.close()


def viewer_openseadragon(given: str | None) -> str:
    """The viewer page's OpenSeadragon; without one the IIIF service still runs (with a warning)."""
    from famos.viewer.cli import openseadragon_location

    try:
        return openseadragon_location(given)
    except UserError as err:
        log.warning("viewer page without OpenSeadragon: %s", err)
        return given or ""


def _check_port_free(host: str, port: int, *, option: str = "--port") -> None:
    """UserError naming the port (and its ``option``) when another process listens on it: grpcio
    would log a C-core line and say only that the bind failed. (A port freed or taken in between is
    the bind's to report.)"""
    import errno
    import socket

    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # not an address: grpcio's bind says so
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpcio binds: TIME_WAIT is no conflict
        try:
            probe.bind(sockaddr)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"{option} {port}: {host}:{port} is in use by another process") from None


def _check_tls_pair(cert: pathlib.Path, key: pathlib.Path) -> None:
    """A certificate chain and its key, read as OpenSSL will (grpcio would only say it cannot listen)."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as err:
        raise UserError(f"--tls-cert/--tls-key: {err.filename}: no such file") from None
    except (ssl.SSLError, OSError) as err:
        raise UserError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its private key "
                        f"({getattr(err, 'reason', None) or err})") from None


def memory_size(text: str) -> int:
    """``8G``, ``512M``, ``65536K`` or bytes -> bytes (argparse's type for --max-memory)."""
    import re

    found = re.fullmatch(r"\s*(\d{1,15})\s*([KMGT]?)i?B?\s*", text.upper())
    if not found:
        raise ValueError(text)  # argparse: "invalid memory_size value"
    return int(found[1]) * 1024 ** " KMGT".index(found[2] or " ")


def main(argv: list[str] | None = None) -> int:
    from famos.memory import DEFAULT_CHUNK_HELP
    from famos.viewer.cli import add_limit_arguments, limit_settings

    parser = Parser(prog="famos serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, required=True, help="folder of bundle folders (model name = folder name)")
    parser.add_argument("--output", type=pathlib.Path, required=True, help="job output store (TIFFs, job database)")
    parser.add_argument("--host", default=ServerConfig.host, help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, default=ServerConfig.port, help="0: any free port (printed on start)")
    parser.add_argument("--token", default=os.environ.get("FAMOS_TOKEN"),
                        help="require 'authorization: Bearer TOKEN' (default: $FAMOS_TOKEN)")
    parser.add_argument("--tls-cert", type=pathlib.Path, help="PEM certificate chain")
    parser.add_argument("--tls-key", type=pathlib.Path, help="PEM private key")
    parser.add_argument("--max-pixels", type=int, default=ServerConfig.max_pixels, help="largest region one render may cover")
    parser.add_argument("--max-chunk", type=int, default=ServerConfig.max_chunk,
                        help="largest chunk side a request may ask for (a window's memory grows with its square)")
    parser.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                        help="memory the renders may hold at once, e.g. 8G or 512M (default: half of this machine's); "
                             "a streamed render past it is refused, a job waits")
    parser.add_argument("--max-jobs", type=int, default=ServerConfig.max_jobs, help="unfinished jobs held at once")
    parser.add_argument("--workers", type=int, default=ServerConfig.workers, help="renders running at once")
    parser.add_argument("--max-queue", type=int, default=ServerConfig.max_queue, help="streamed renders waiting for a worker")
    parser.add_argument("--job-workers", type=int, default=ServerConfig.job_workers,
                        help="jobs rendering at once (their own workers: streams never hold up jobs)")
    parser.add_argument("--max-other-calls", type=int, default=ServerConfig.max_other_calls,
                        help="calls other than renders at once (watches, downloads, lists)")
    parser.add_argument("--stream-idle-timeout", type=float, default=ServerConfig.stream_idle_timeout,
                        help="seconds a streamed render waits on a client that reads nothing before it is cancelled")
    parser.add_argument("--chunk", type=int, default=ServerConfig.chunk,
                        help=f"default chunk side in pixels (default: {DEFAULT_CHUNK_HELP})")
    parser.add_argument("--grace", type=float, default=ServerConfig.grace_seconds, help="seconds for calls to finish on shutdown")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much the server logs to stderr (default INFO)")
    add_runner_arguments(parser)
    add_cluster_arguments(parser)
    parser.add_argument("--http", type=int, metavar="PORT",
                        help="also serve the viewer: IIIF Image API and a deep-zoom page over the jobs (0: any free port)")
    parser.add_argument("--openseadragon", help="folder or URL with openseadragon.min.js for the viewer page")
    parser.add_argument("--public-url", default=ServerConfig.public_url,
                        help="the viewer's address as IIIF clients reach it (info.json ids), e.g. behind a proxy")
    add_limit_arguments(parser, prefix="--viewer-")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port; default: none)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        models=args.models, output=args.output, host=args.host, port=args.port, token=args.token or None,
        tls_cert=args.tls_cert, tls_key=args.tls_key, max_pixels=args.max_pixels, max_chunk=args.max_chunk,
        max_memory=args.max_memory,
        max_jobs=args.max_jobs,
        workers=args.workers, max_queue=args.max_queue, job_workers=args.job_workers, chunk=args.chunk,
        max_other_calls=args.max_other_calls, stream_idle_timeout=args.stream_idle_timeout,
        runner=runner_options(args), cluster=cluster_options(args), grace_seconds=args.grace,
        http_port=args.http, openseadragon=viewer_openseadragon(args.openseadragon) if args.http is not None else "",
        public_url=args.public_url, metrics_port=args.metrics_port,
        viewer_limits=limit_settings(args, prefix="--viewer-"),
    )
    server = RenderServer(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    # Machine-readable, on stdout: with --port 0 this is how a caller learns the port.
    print(f"famos serve: listening on {config.host}:{server.port}", flush=True)
    if server.viewer is not None:
        print(f"famos serve: viewer on {server.viewer.url}", flush=True)
    if server.metrics_server is not None:
        print(f"famos serve: metrics on {server.metrics_server.url}", flush=True)
    while not stop.wait(1.0):
        pass
    log.info("shutting down (grace %.0f s)", config.grace_seconds)
    server.stop()
    return 0
