"""Typed Python client of the FAMOS render server (see protos/famos/render/v1/render.proto).

    with RenderClient("render-host:50051", token="...") as client:
        for model in client.models():
            print(model.name, model.canvas_width, model.canvas_height)
        client.render_to_tiff("tiles-v2", "mosaic.tif", seed=3)   # streamed, assembled locally
        job = client.submit("tiles-v2", output_name="print.tif", print_size="60x40cm",
                            tiff=TiffOptions(dpi=150))               # rendered by the server
        for state in client.watch(job.id): ...
        client.download(job.id, "print.tif")

A render is a ``famos.request.RenderRequest``, given whole or as a model name and its fields
(``seed``, ``region``, ``size``, ``scale``, ``print_size``, ``chunk``, ``content``: PNG/JPEG bytes,
``tiff``: the file's options); it is resolved as `famos render` resolves it. Results are the value types the server uses too (``famos.values``: ModelInfo, Job, Started,
Piece, Progress; regions are ``famos.planning.Rect``), server errors a ``ServerError`` carrying the
gRPC status code. Needs grpcio, protobuf, numpy and tifffile; never torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np

from famos.clients import convert
from famos.clients.convert import ServerError
from famos.files import atomic_output
from famos.errors import InvalidField
from famos.planning import Rect
from famos.request import RenderRequest, file_resolution, output_canvas
from famos.tiff_writer import TiffReport, write_tiled_tiff
from famos.values import Job, ModelInfo, Piece, Progress, Started
from famos.protos.famos.render.v1 import render_pb2 as pb
from famos.protos.famos.render.v1 import render_pb2_grpc

_MAX_MESSAGE = 64 * 2**20  # a content image travels in one request


@dataclasses.dataclass(frozen=True)
class RenderResult:
    tiff: TiffReport
    region: Rect
    description: dict[str, Any]


class RenderStream:
    """The events of one streamed render (``Started``, ``Piece``s, ``Progress``); ``cancel()`` (from
    any thread) stops the server's work within one chunk."""

    def __init__(self, call):
        self._call = call

    def __iter__(self) -> Iterator[Started | Piece | Progress]:
        with _server_errors():
            for message in self._call:
                yield convert.render_event(message)

    def cancel(self) -> None:
        self._call.cancel()


class RenderClient:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float | None = None,
    ):
        """``target`` is HOST:PORT. TLS when ``tls`` or ``root_certificates`` (PEM of the CA that
        signed the server's certificate; None: the system's roots). ``timeout`` applies to unary calls."""
        options = [
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", 8 * 2**20),
            # a server that vanished (host down, cable cut) ends the call within ~40 s instead of never
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = render_pb2_grpc.RenderServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RenderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # models

    def models(self) -> list[ModelInfo]:
        return [convert.model_info(m) for m in self._unary(self._stub.ListModels, pb.ListModelsRequest()).models]

    def model(self, name: str) -> ModelInfo:
        return convert.model_info(self._unary(self._stub.GetModel, pb.GetModelRequest(name=name)))

    # streamed renders

    def render(self, request: RenderRequest | str, **fields: Any) -> RenderStream:
        """Start a streamed render of ``request`` (or of the model so named, with ``fields``)."""
        request = as_request(request, fields)
        message = convert.render_request(request, output_canvas(request, None))
        return RenderStream(self._stub.Render(message, metadata=self._metadata))

    def render_to_tiff(
        self,
        request: RenderRequest | str,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        **fields: Any,
    ) -> RenderResult:
        """Stream a render into a tiled TIFF at ``path`` (atomically, in memory O(one strip)); the
        TIFF equals `famos render` of the same request, description and resolution included.
        Setting ``cancel`` stops the render (and the server's work) and raises ``ServerError(CANCELLED)``."""
        request = as_request(request, fields)
        if request.tiff.bits != 8:
            raise InvalidField("bits", "a streamed render carries 8 bits per sample: render 16-bit files with famos render")
        canvas = output_canvas(request, None)
        stream = RenderStream(self._stub.Render(convert.render_request(request, canvas), metadata=self._metadata))
        events = iter(stream)
        watcher = _cancel_watcher(cancel, stream)
        try:
            started = next(events, None)
            if not isinstance(started, Started):
                raise ServerError(grpc.StatusCode.INTERNAL, "render stream did not start with a header")
            report = write_tiled_tiff(
                path,
                _strips(events, started.region.width, progress),
                height=started.region.height,
                width=started.region.width,
                options=file_resolution(request, canvas, started.trained),
                description=started.description,
            )
        except BaseException:
            stream.cancel()  # Ctrl-C, a full disk or a bad message: stop the server's work too
            raise
        finally:
            if watcher is not None:
                watcher.set()
        return RenderResult(report, started.region, started.description)

    # jobs

    def submit(self, request: RenderRequest | str, *, output_name: str = "", **fields: Any) -> Job:
        """Queue ``request`` as a job whose file the server writes (its resolution: as `famos render`'s)."""
        request = as_request(request, fields)
        canvas = output_canvas(request, None)
        message = pb.SubmitJobRequest(
            render=convert.render_request(request, canvas),
            output_name=output_name,
            # a print size's exact DPI here; no DPI asked for: the server applies the model's trained one
            tiff=convert.tiff_settings(file_resolution(request, canvas, None)),
        )
        return convert.job(self._unary(self._stub.SubmitJob, message))

    def job(self, job_id: str) -> Job:
        """The job's current state (the first message of ``watch``)."""
        call = self._stub.WatchJob(pb.JobRequest(id=job_id), metadata=self._metadata)
        with _server_errors():
            try:
                return convert.job(next(call))
            finally:
                call.cancel()

    def watch(self, job_id: str) -> Iterator[Job]:
        """The job now and after every change, until it is final."""
        call = self._stub.WatchJob(pb.JobRequest(id=job_id), metadata=self._metadata)
        with _server_errors():
            try:
                for message in call:
                    yield convert.job(message)
            finally:
                call.cancel()

    def wait(self, job_id: str) -> Job:
        """Block until the job is final; returns its last state."""
        last = None
        for last in self.watch(job_id):
            pass
        return last

    def cancel(self, job_id: str) -> Job:
        return convert.job(self._unary(self._stub.CancelJob, pb.JobRequest(id=job_id)))

    def jobs(self, limit: int = 0) -> list[Job]:
        return [convert.job(j) for j in self._unary(self._stub.ListJobs, pb.ListJobsRequest(limit=limit)).jobs]

    def download(self, job_id: str, path: str | os.PathLike[str]) -> Job:
        """The finished TIFF of a job, written atomically to ``path`` and checked against its SHA-256."""
        job = self.job(job_id)
        path = pathlib.Path(path)
        digest = hashlib.sha256()
        call = self._stub.DownloadJob(pb.JobRequest(id=job_id), metadata=self._metadata)
        try:
            with atomic_output(path) as partial, _server_errors(), open(partial, "wb") as fh:
                for piece in call:
                    if piece.offset != fh.tell():
                        raise ServerError(grpc.StatusCode.DATA_LOSS, f"download: piece at {piece.offset}, expected {fh.tell()}")
                    fh.write(piece.data)
                    digest.update(piece.data)
                if fh.tell() != job.size_bytes or digest.hexdigest() != job.sha256:
                    raise ServerError(grpc.StatusCode.DATA_LOSS, f"download of job {job_id}: size or SHA-256 differs from the server's")
        except BaseException:
            call.cancel()
            raise
        return job

    def _unary(self, method, request):
        with _server_errors():
            return method(request, metadata=self._metadata, timeout=self._timeout)


def as_request(request: RenderRequest | str, fields: dict[str, Any]) -> RenderRequest:
    """A request given whole, or a model name with the request's other fields as keywords."""
    if isinstance(request, RenderRequest):
        return dataclasses.replace(request, **fields) if fields else request
    return RenderRequest(model=request, **fields)


@contextlib.contextmanager
def _server_errors() -> Iterator[None]:
    """grpc.RpcError as ServerError: a UserError, so the CLI prints one line, not a traceback."""
    try:
        yield
    except grpc.RpcError as err:
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        details = err.details() if callable(getattr(err, "details", None)) else str(err)
        raise ServerError(code, details or code.name) from None


def _cancel_watcher(cancel: threading.Event | None, stream: RenderStream) -> threading.Event | None:
    """A thread that cancels ``stream`` when ``cancel`` is set; returns the event that ends it."""
    if cancel is None:
        return None
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.05):
                stream.cancel()
                return

    threading.Thread(target=watch, name="famos-client-cancel", daemon=True).start()
    return done


def _strips(events: Iterator[Any], width: int, progress: Callable[[Progress], None] | None) -> Iterator[np.ndarray]:
    """Row bands of the region from its tiles, checking that they partition it in row-major order."""
    top = 0
    band: np.ndarray | None = None
    filled = 0  # columns of the band received
    for event in events:
        if isinstance(event, Progress):
            if progress is not None:
                progress(event)
            continue
        if not isinstance(event, Piece):
            raise ServerError(grpc.StatusCode.INTERNAL, f"unexpected render event {type(event).__name__}")
        height, tile_width, _ = event.pixels.shape
        if band is None:
            band = np.empty((height, width, 3), np.uint8)
        if event.y != top or event.x != filled or height != band.shape[0] or event.x + tile_width > width:
            raise ServerError(
                grpc.StatusCode.INTERNAL,
                f"tile at ({event.x}, {event.y}) size {tile_width}x{height} does not continue the region "
                f"(expected column {filled} of rows {top}..{top + band.shape[0]})",
            )
        band[:, filled : filled + tile_width] = event.pixels
        filled += tile_width
        if filled == width:
            yield band
            top += band.shape[0]
            band, filled = None, 0
