"""Operating a server: Prometheus metrics (`famos serve --metrics-port`), the JSON call log, the
viewer's access log and the `famos client jobs` table, against a real server on a loopback port."""

from __future__ import annotations

import json
import logging
import pathlib
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("prometheus_client")

from famos.clients.render_client import RenderClient, ServerError  # noqa: E402
from conftest import SERVER_MODEL  # noqa: E402
from famos.errors import UserError  # noqa: E402
from famos.values import JobState, Progress, Started  # noqa: E402

MODEL = SERVER_MODEL
SERVICE = "famos.render.v1.RenderService"
PIXELS = 96 * 160  # the model's canvas


@pytest.fixture
def start(models, start_render_server):
    return lambda **overrides: start_render_server(models, **overrides)


def client_of(server) -> RenderClient:
    return RenderClient(f"127.0.0.1:{server.port}")


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's /metrics, parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def requests(metrics, method: str, code: str) -> float:
    return metrics.get(("famos_requests_total", (("code", code), ("method", method), ("service", SERVICE))), 0.0)


def call_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "famos.server.calls"]


def busy_port() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_metrics_count_calls_pixels_chunks_and_jobs(start, caplog):
    server = start(metrics_port=0, job_workers=1)
    other = start(metrics_port=0)  # a second server in the same process: metrics of its own
    assert server.metrics_port and other.metrics_port != server.metrics_port
    with caplog.at_level(logging.INFO, "famos.server.calls"), client_of(server) as client:
        events = list(client.render(MODEL, chunk=48))
        chunks = events[0].chunks_total
        assert isinstance(events[0], Started) and chunks > 1
        with pytest.raises(ServerError) as failed:
            list(client.render("nope"))
        assert failed.value.code == grpc.StatusCode.NOT_FOUND
        job = client.submit(MODEL, chunk=48)
        assert client.wait(job.id).state is JobState.SUCCEEDED

    metrics = scrape(server)
    assert requests(metrics, "Render", "OK") == 1
    assert requests(metrics, "Render", "NOT_FOUND") == 1
    assert requests(metrics, "SubmitJob", "OK") == 1
    assert requests(metrics, "WatchJob", "OK") == 1
    # the stream's and the job's pixels and chunks, through the pipeline's progress callbacks
    assert metrics[("famos_rendered_pixels_total", ())] == 2 * PIXELS
    assert metrics[("famos_chunk_seconds_count", ())] == 2 * chunks
    assert metrics[("famos_chunk_seconds_bucket", (("le", "+Inf"),))] == 2 * chunks
    assert 0 < metrics[("famos_chunk_seconds_sum", ())] < 60
    assert metrics[("famos_render_megapixels_per_second", ())] > 0
    # read at the scrape: the job store, the render slots, the memory budget
    assert metrics[("famos_jobs", (("state", "succeeded"),))] == 1
    assert all(metrics[("famos_jobs", (("state", s.value),))] == 0 for s in JobState if s is not JobState.SUCCEEDED)
    assert metrics[("famos_queue_depth", ())] == 0
    assert metrics[("famos_renders_running", ())] == metrics[("famos_renders_waiting", ())] == 0
    assert metrics[("famos_memory_budget_held_bytes", ())] == 0
    assert metrics[("famos_memory_budget_bytes", ())] == server.budget.total
    if pathlib.Path("/proc/self/stat").exists():  # prometheus_client reads the process from /proc
        assert metrics[("famos_process_resident_memory_bytes", ())] > 1e6
    runner = server.config.runner
    device = {(k, v) for (name, labels), _ in metrics.items() if name == "famos_device_info" for k, v in labels}
    assert device == {("backend", runner.backend.value), ("precision", runner.precision.value), ("device", runner.device)}

    untouched = scrape(other)
    assert not any(name == "famos_requests_total" for name, _ in untouched)
    assert untouched[("famos_rendered_pixels_total", ())] == 0

    lines = call_lines(caplog)
    by_method = {(line["method"].rpartition("/")[2], line["code"]): line for line in lines}
    streamed = by_method["Render", "OK"]
    assert streamed["pixels"] == PIXELS and streamed["error"] == "" and streamed["seconds"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", streamed["request_id"]) and streamed["peer"].startswith("ipv4:127.0.0.1:")
    refused = by_method["Render", "NOT_FOUND"]
    assert "nope" in refused["error"] and refused["pixels"] == 0
    assert by_method["SubmitJob", "OK"]["pixels"] == PIXELS
    assert len({line["request_id"] for line in lines}) == len(lines)
    assert all(set(line) == {"request_id", "method", "peer", "seconds", "pixels", "code", "error"} for line in lines)


def test_request_id_travels_back_in_the_trailing_metadata(start, caplog):
    from famos.protos.famos.render.v1 import render_pb2 as pb
    from famos.protos.famos.render.v1 import render_pb2_grpc

    server = start(token="s3cret")  # without metrics: calls are logged all the same
    assert server.metrics_port is None
    with caplog.at_level(logging.INFO, "famos.server.calls"), grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        _, call = stub.ListModels.with_call(pb.ListModelsRequest(), metadata=(("authorization", "Bearer s3cret"),))
        with pytest.raises(grpc.RpcError) as refused:  # refused by the token check, logged all the same
            stub.ListModels(pb.ListModelsRequest())
    answered = dict(call.trailing_metadata())["x-request-id"]
    unauthenticated = dict(refused.value.trailing_metadata())["x-request-id"]
    lines = {line["request_id"]: line for line in call_lines(caplog)}
    assert lines[answered]["code"] == "OK"
    assert lines[unauthenticated]["code"] == "UNAUTHENTICATED" and "bearer token" in lines[unauthenticated]["error"]


def test_a_cancelled_stream_is_logged_and_counted(start, caplog):
    server = start(metrics_port=0, workers=1)
    renderer = server.models.renderer(MODEL)
    run = renderer.run

    def slow(*inputs):
        time.sleep(0.02)
        return run(*inputs)

    renderer.run = slow
    with caplog.at_level(logging.INFO, "famos.server.calls"), client_of(server) as client:
        stream = client.render(MODEL, chunk=16)
        events = iter(stream)
        while not isinstance(next(events), Progress):  # started, the first strip's tiles, its progress
            pass
        stream.cancel()
        with pytest.raises(ServerError):
            list(events)
        deadline = time.monotonic() + 5
        while not call_lines(caplog) and time.monotonic() < deadline:
            time.sleep(0.01)
    (line,) = call_lines(caplog)
    assert line["code"] == "CANCELLED" and line["error"] and 0 < line["pixels"] < PIXELS
    assert requests(scrape(server), "Render", "CANCELLED") == 1


def test_a_metrics_port_in_use_is_named(start, models, tmp_path, capsys):
    from famos.cli import main
    from famos.render_server.server import ServerConfig

    with busy_port() as listener:
        port = listener.getsockname()[1]
        with pytest.raises(UserError, match=f"--metrics-port {port}: 127.0.0.1:{port} is in use"):
            start(metrics_port=port)
        capsys.readouterr()
        rc = main(["serve", "--models", str(models), "--output", str(tmp_path / "store"), "--port", "0",
                   "--metrics-port", str(port)])
        err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"--metrics-port {port}" in err and "in use" in err
    with pytest.raises(UserError, match="the same port as --port"):
        ServerConfig(models=models, output=tmp_path, port=50123, metrics_port=50123)
    with pytest.raises(UserError, match="0 to 65535"):
        ServerConfig(models=models, output=tmp_path, metrics_port=70000)


def test_jobs_table_and_json(start, capsys):
    from famos.cli import main

    server = start()
    with client_of(server) as client:
        job = client.wait(client.submit(MODEL, output_name="table.tif", chunk=48).id)
    address = f"127.0.0.1:{server.port}"
    capsys.readouterr()
    assert main(["client", "--server", address, "jobs"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "name", "state", "done", "pixels", "MB", "submitted", "finished"]
    cells = row.split()
    assert cells[:4] == [job.id[:12], "table.tif", "succeeded", "100%"]
    assert cells[4:7] == [f"{PIXELS / 1e6:.2f}", "MP", f"{job.size_bytes / 1e6:.2f}"]
    local_iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert re.fullmatch(local_iso, cells[7]) and re.fullmatch(local_iso, cells[8])
    assert main(["client", "--server", address, "jobs", "--json"]) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["id"] == job.id and listed["state"] == "succeeded" and listed["created_at"] == job.created_at


def test_the_viewer_logs_one_line_per_request(start, caplog):
    server = start(http_port=0)
    base = f"http://127.0.0.1:{server.viewer.port}"
    with caplog.at_level(logging.INFO, "famos.viewer.access"):
        with urllib.request.urlopen(f"{base}/api/images.json?token=s3cret&x=1", timeout=5) as answer:
            body = answer.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nope", timeout=5)
        missing.value.close()
        with socket.create_connection(("127.0.0.1", server.viewer.port), timeout=5) as raw:
            raw.sendall(b"GET /x?token=s3cret HTTX/1.1\r\n\r\n")  # no such protocol: 400, the error page alone
            assert b"400" in raw.recv(1000)
        deadline = time.monotonic() + 5
        while len(caplog.records) < 3 and time.monotonic() < deadline:  # the last is logged after its answer
            time.sleep(0.01)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "famos.viewer.access"]
    listed, missing_page, malformed = lines
    assert listed["method"] == "GET" and listed["path"] == "/api/images.json?x=1"  # the token is left out
    assert listed["status"] == 200 and listed["bytes"] == len(body) and listed["seconds"] >= 0
    assert listed["peer"] == "127.0.0.1"
    assert missing_page["path"] == "/nope" and missing_page["status"] == 404 and missing_page["bytes"] > 0
    assert malformed["status"] == 400 and malformed["path"] == "-"
