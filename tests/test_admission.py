"""A request is admitted on its estimate before any work: pixels, chunks, the chunk it names."""

from __future__ import annotations

import grpc
import pytest

from conftest import SERVER_MODEL


@pytest.fixture
def server(models, tmp_path):
    from famos.render_server.server import RenderServer, ServerConfig

    running = RenderServer(ServerConfig(models=models, output=tmp_path, port=0, max_chunk=256))
    running.start()
    yield f"127.0.0.1:{running.port}"
    running.stop(0)


def test_a_named_chunk_over_the_servers_bound_is_refused_before_planning(server):
    """chunk 4096 on a 4096² render once took 7 GB; a window's memory grows with the chunk's square."""
    from famos.clients.convert import ServerError
    from famos.clients.render_client import RenderClient

    with RenderClient(server) as client:
        with pytest.raises(ServerError) as err:
            list(client.render(SERVER_MODEL, chunk=4096, size=(4096, 4096)))
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "chunk 4096" in err.value.details
        with pytest.raises(ServerError) as err:
            client.submit(SERVER_MODEL, chunk=257)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        events = list(client.render(SERVER_MODEL, chunk=256))  # at the bound: rendered
        assert events


def test_famos_serve_takes_the_bound(capsys):
    from famos.cli import main

    assert main(["serve", "--models", ".", "--output", ".", "--max-chunk", "0"]) == 2
    assert "--max-chunk = 0" in capsys.readouterr().err


@pytest.mark.parametrize("method, streaming", [("Render", True), ("SubmitJob", False), ("GetModel", False)])
def test_bytes_that_are_no_message_are_invalid_argument_not_internal(server, method, streaming):
    """grpcio answers INTERNAL when it cannot parse a request; the service parses its own."""
    channel = grpc.insecure_channel(server)
    path = f"/famos.render.v1.RenderService/{method}"
    call = (channel.unary_stream if streaming else channel.unary_unary)(path, request_serializer=None,
                                                                         response_deserializer=None)
    for garbage in (b"\xff\xff\xff", b"\x0a\xff\x01", b"\x12\x05abc"):
        with pytest.raises(grpc.RpcError) as err:
            result = call(garbage, timeout=10)
            if streaming:
                list(result)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (garbage, err.value.details())
        assert "not a" in err.value.details()
    channel.close()
