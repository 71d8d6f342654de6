"""The render service's method handlers, built from the contract's descriptor, with each request
parsed inside the call rather than by grpcio.

grpcio answers a request whose bytes do not parse with INTERNAL ("Exception deserializing
request!") before any servicer or interceptor runs. Parsed here, the same bytes are the client's
mistake, INVALID_ARGUMENT through ``interceptors.ErrorMapping``, like any other bad field.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory

from famos.errors import InvalidField
from famos.protos.famos.render.v1 import render_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["RenderService"]


def parsed(kind: type, raw: bytes) -> Any:
    request = kind()
    try:
        request.ParseFromString(raw)
    except protobuf_message.DecodeError as err:
        raise InvalidField("request", f"not a {kind.DESCRIPTOR.name} message ({err})") from None
    return request


def render_service_handler(servicer: Any) -> grpc.GenericRpcHandler:
    """Every method of ``RenderService`` on ``servicer``; requests arrive as bytes and are parsed
    first thing in the call (the contract has no client-streaming methods)."""
    handlers = {}
    for method in SERVICE.methods:
        request_kind = message_factory.GetMessageClass(method.input_type)
        response_kind = message_factory.GetMessageClass(method.output_type)
        behaviour = getattr(servicer, method.name)

        def call(raw: bytes, context: grpc.ServicerContext, behaviour=behaviour, kind=request_kind) -> Any:
            return behaviour(parsed(kind, raw), context)

        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(call, request_deserializer=None, response_serializer=response_kind.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
