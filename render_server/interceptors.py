"""Server interceptors: the one place where domain errors become gRPC status codes, the
bearer-token check, the call budget, and the call log.

They wrap the method handlers, so every RPC (unary or streaming) gets the same treatment and the
servicer stays free of ``context.abort`` calls.
"""

from __future__ import annotations

import hmac
import json
import threading
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from famos.errors import BundleError, Cancelled, DiskFull, InvalidField, OverLimit, UserError
from famos.render_server import errors

if TYPE_CHECKING:
    from famos.render_server.metrics import ServerMetrics

log = logging.getLogger("famos.server")
calls_log = logging.getLogger("famos.server.calls")
MAX_MESSAGE = 1000  # characters of an error message sent to a client

# Most specific first: every class here is a UserError, the fallback of the table.
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (OverLimit, grpc.StatusCode.RESOURCE_EXHAUSTED),  # errors.ResourceExhausted included
    (DiskFull, grpc.StatusCode.RESOURCE_EXHAUSTED),  # the server's disk: "no space left ... writing ..."
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    # A served bundle is the server's, never the request's: a tampered or unusable one is a
    # precondition of the call that fails (ModelStore.bundle_errors words it without paths).
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    (Cancelled, grpc.StatusCode.CANCELLED),
    # Anything else the domain reports as the user's mistake (a region outside the canvas, an
    # undecodable content image) is about the request's arguments.
    (UserError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_of(err: BaseException) -> grpc.StatusCode:
    for kind, code in STATUS_OF:
        if isinstance(err, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, err: BaseException, method: str) -> None:
    code = status_of(err)
    if code is grpc.StatusCode.INTERNAL:
        # The traceback stays in the server log; the client learns only that it was not its fault.
        log.exception("%s failed", method)
        context.abort(code, "internal error (see the server log)")
    message = str(err)
    # one line, bounded: a status travels in metadata, which has a size limit
    message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."
    context.abort(code, message.replace("\n", " "))


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    def unary(behavior: Callable) -> Callable:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as err:  # noqa: BLE001 - mapped, never swallowed
                _abort(context, err, method)

        return call

    def streaming(behavior: Callable) -> Callable:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(request, context)
            except Exception as err:  # noqa: BLE001
                if context.is_active():
                    _abort(context, err, method)

        return call

    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=streaming(handler.unary_stream))
    return handler  # this service has no client-streaming methods


class ErrorMapping(grpc.ServerInterceptor):
    """Turns domain exceptions raised by any handler into the status codes of ``STATUS_OF``."""

    def __init__(self, service_prefix: str):
        self._prefix = service_prefix  # e.g. "/famos.render.v1.RenderService/"

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        # Only our service: health and reflection report their own statuses.
        if handler is None or not handler_call_details.method.startswith(self._prefix):
            return handler
        return _wrap(handler, handler_call_details.method)


class CallBudget(grpc.ServerInterceptor):
    """At most ``limit`` of the service's calls other than ``Render`` at once (watches, downloads,
    lists, submits): the service refuses the next one itself, RESOURCE_EXHAUSTED with its reason.
    Render has its own budget (render slots); gRPC's own concurrency limit sits above both, so it is
    never what answers first."""

    def __init__(self, service_prefix: str, *, limit: int, exempt: tuple[str, ...] = ("Render",)):
        self._prefix = service_prefix
        self._exempt = {service_prefix + name for name in exempt}
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._prefix) or method in self._exempt:
            return handler
        return self._budgeted(handler)

    def _refuse(self, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"server busy: {self.limit} calls other than renders in progress (the limit)")

    def _budgeted(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        def unary(behavior: Callable) -> Callable:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                if not self._free.acquire(blocking=False):
                    self._refuse(context)
                try:
                    return behavior(request, context)
                finally:
                    self._free.release()

            return call

        def streaming(behavior: Callable) -> Callable:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                if not self._free.acquire(blocking=False):
                    self._refuse(context)
                try:
                    yield from behavior(request, context)
                finally:
                    self._free.release()

            return call

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        return handler


class BearerToken(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>``; health checks stay open so that
    load balancers and orchestrators can probe without the secret."""

    OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(self.OPEN_PREFIXES):
            return continuation(handler_call_details)
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        # constant time, so the comparison leaks nothing about the token
        if hmac.compare_digest(sent.encode(), self._expected):
            return continuation(handler_call_details)
        message = "missing bearer token" if not sent else "wrong bearer token"
        return _refusal(continuation(handler_call_details), message)


def _refusal(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    def deny(request_or_iterator: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:  # unknown method: refuse before revealing that it does not exist
        return grpc.unary_unary_rpc_method_handler(deny)
    # The refusal must have the method's shape (and deserializer), or gRPC cannot answer with it.
    deserialize = handler.request_deserializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, request_deserializer=deserialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, request_deserializer=deserialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, request_deserializer=deserialize)
    return grpc.unary_unary_rpc_method_handler(deny, request_deserializer=deserialize)


class CallLog(grpc.ServerInterceptor):
    """One JSON line per call on ``famos.server.calls`` (INFO), and the call counted in ``metrics``.
    Outermost, so that it sees what the token check and the budgets refuse too. Each call gets a
    request id, sent back as the ``x-request-id`` trailing metadata::

        {"request_id": "3f2c...", "method": "/famos.render.v1.RenderService/Render",
         "peer": "ipv4:127.0.0.1:40512", "seconds": 0.0812, "pixels": 15360, "code": "OK", "error": ""}

    ``pixels``: what a Render streamed, the pixels a SubmitJob queued, else 0."""

    def __init__(self, service_prefix: str, *, metrics: ServerMetrics | None = None):
        self._render = service_prefix + "Render"
        self._submit = service_prefix + "SubmitJob"
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:  # an unknown method without a token check: grpcio answers UNIMPLEMENTED
            return None
        method = handler_call_details.method

        def unary(behavior: Callable) -> Callable:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                record = _Call(method, context)
                try:
                    response = behavior(request, context)
                except BaseException as err:
                    self._finish(record, context, err)
                    raise
                if method == self._submit:
                    record.pixels = response.pixels_total
                self._finish(record, context, None)
                return response

            return call

        def streaming(behavior: Callable) -> Callable:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                record = _Call(method, context)
                try:
                    for response in behavior(request, context):
                        if method == self._render and response.HasField("progress"):
                            record.pixels = response.progress.pixels_done
                        yield response
                except GeneratorExit:  # grpcio stopped reading: the client went away
                    record.gone = True
                    self._finish(record, context, None)
                    raise
                except BaseException as err:
                    self._finish(record, context, err)
                    raise
                self._finish(record, context, None)

            return call

        shapes = ("unary_unary", unary), ("stream_unary", unary), ("unary_stream", streaming), ("stream_stream", streaming)
        for field, wrap in shapes:
            behavior = getattr(handler, field)
            if behavior is not None:
                return handler._replace(**{field: wrap(behavior)})
        return handler

    def _finish(self, record: _Call, context: grpc.ServicerContext, err: BaseException | None) -> None:
        code, error = _outcome(context, err, gone=record.gone)
        if self._metrics is not None:
            self._metrics.call(record.method, code.name)
        if calls_log.isEnabledFor(logging.INFO):
            calls_log.info("%s", json.dumps({
                "request_id": record.id, "method": record.method, "peer": record.peer,
                "seconds": round(time.perf_counter() - record.start, 6), "pixels": record.pixels,
                "code": code.name, "error": error,
            }))


class _Call:
    def __init__(self, method: str, context: grpc.ServicerContext):
        self.id = uuid.uuid4().hex
        self.method = method
        self.peer = context.peer()
        self.start = time.perf_counter()
        self.pixels = 0
        self.gone = False  # grpcio stopped the call's responses (the client cancelled or left)
        context.set_trailing_metadata((("x-request-id", self.id),))


def _outcome(context: grpc.ServicerContext, err: BaseException | None, *, gone: bool) -> tuple[grpc.StatusCode, str]:
    """The status code the client gets, and the message of a failure ("" for OK)."""
    code = context.code()  # set by an abort (the error mapping, the budgets, the token check)
    if code is not None:
        details = context.details() or b""
        return code, details.decode(errors="replace") if isinstance(details, bytes) else str(details)
    if err is not None:  # raised past the error mapping: grpcio answers UNKNOWN
        return grpc.StatusCode.UNKNOWN, str(err) or type(err).__name__
    if gone or not context.is_active():  # nothing more reaches the client
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED, "the client's deadline passed"
        return grpc.StatusCode.CANCELLED, "ended before its answer was complete (cancelled, disconnected or stopped)"
    return grpc.StatusCode.OK, ""
