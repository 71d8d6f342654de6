"""Server interceptors: the one place where domain errors become gRPC status codes, and the
bearer-token check.

Both wrap the method handlers, so every RPC (unary or streaming) gets the same treatment and the
servicer stays free of ``context.abort`` calls.
"""

from __future__ import annotations

import hmac
import threading
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from famos.errors import BundleError, Cancelled, DiskFull, InvalidField, OverLimit, UserError
from render_server import errors

log = logging.getLogger("famos.server")
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
