"""The gRPC render server against real clients on a loopback port: streamed renders equal local
`famos render` output, concurrency, cancellation, jobs, errors, auth, TLS, health, reflection."""

from __future__ import annotations

import concurrent.futures
import io
import pathlib
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tifffile

grpc = pytest.importorskip("grpc")

from famos.clients.render_client import RenderClient, ServerError  # noqa: E402
from famos.planning import Rect  # noqa: E402
from famos.values import JobState  # noqa: E402
from conftest import SERVER_MODEL, bomb_png  # noqa: E402
from famos.render_server.server import RenderServer, ServerConfig  # noqa: E402
from famos.render_server.streaming import pieces  # noqa: E402
from famos.tiff_options import Compression, TiffOptions  # noqa: E402

MODEL = SERVER_MODEL  # the bundle in the `models` fixture (conftest), shared by the server tests
REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def start(models, start_render_server):
    """Starts in-process servers on free loopback ports; stops them after the test."""
    return lambda **overrides: start_render_server(models, **overrides)


def client_of(server: RenderServer, **kw) -> RenderClient:
    return RenderClient(f"127.0.0.1:{server.port}", **kw)


def local_render(models: pathlib.Path, out: pathlib.Path, *args: str) -> np.ndarray:
    from famos.render_server.cli import main  # `famos render`

    assert main([str(models / MODEL), "--out", str(out), "--quiet", *args]) == 0
    return tifffile.imread(out)


def slow_down(server: RenderServer, seconds: float) -> list[int]:
    """Makes every chunk of MODEL take at least ``seconds``; returns the live count of chunks run."""
    renderer = server.models.renderer(MODEL)
    run, count = renderer.run, [0]

    def slow(*inputs):
        count[0] += 1
        time.sleep(seconds)
        return run(*inputs)

    renderer.run = slow
    return count


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# models


def test_models_list_and_metadata(start, models):
    from famos.bundle import load_bundle

    server = start()
    with client_of(server) as client:
        (model,) = client.models()
        assert model == client.model(MODEL)
    bundle = load_bundle(models / MODEL)
    assert (model.name, model.canvas_height, model.canvas_width) == (MODEL, 96, 160)
    assert model.halo == tuple(getattr(bundle.manifest.halo, k) for k in ("top", "left", "bottom", "right"))
    assert model.n_templates == 2 and model.alignment == 4
    # the server's `auto` as it resolved on this machine, never "auto" itself
    from famos.runners import RunnerOptions

    assert (model.backend, model.device, model.bundle_sha256) == (RunnerOptions().resolved().backend.value, "cpu", bundle.sha256)
    assert model.backend != "auto"


# streamed renders


@pytest.mark.parametrize("region, compression", [(None, "deflate"), ("8,4,130,70", "zstd")])
def test_streamed_render_equals_local_render(start, models, tmp_path, region, compression):
    server = start()
    options = ["--seed", "5", "--chunk", "32", "--tile", "32", "--compression", compression]
    if region:
        options += ["--region", region]
    local = local_render(models, tmp_path / "local.tif", *options)
    streamed = tmp_path / "streamed.tif"
    with client_of(server) as client:
        result = client.render_to_tiff(
            MODEL, streamed, seed=5, chunk=32, region=Rect.parse(region) if region else None,
            tiff=TiffOptions(tile=32, compression=Compression(compression)),
        )
    assert np.array_equal(tifffile.imread(streamed), local)
    # same pixels, options and provenance description: the very same file
    assert streamed.read_bytes() == (tmp_path / "local.tif").read_bytes()
    assert result.description["bundle_sha256"] == client_of(server).model(MODEL).bundle_sha256


def test_other_output_sizes_stream_and_run_as_jobs_like_local_renders(start, models, tmp_path):
    """One served model, any size: pixels or a scale of its canvas, streamed or as a job; the
    same file as `famos render --size/--scale`, and a job resumes with its size (JobSpec)."""
    server = start()
    local = local_render(models, tmp_path / "local.tif", "--seed", "2", "--chunk", "32", "--size", "250x130")
    with client_of(server) as client:
        client.render_to_tiff(MODEL, tmp_path / "streamed.tif", seed=2, chunk=32, size=(130, 250))
        job = client.wait(client.submit(MODEL, output_name="scaled.tif", seed=2, chunk=32, scale=1.5).id)
        assert job.state is JobState.SUCCEEDED, job.error
        client.download(job.id, tmp_path / "job.tif")
        with pytest.raises(ServerError) as err:
            list(client.render(MODEL, size=(0, 10)))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "size" in err.value.details
    assert (tmp_path / "streamed.tif").read_bytes() == (tmp_path / "local.tif").read_bytes()
    assert local.shape == (130, 250, 3)
    scaled = local_render(models, tmp_path / "scaled.tif", "--seed", "2", "--chunk", "32", "--scale", "1.5")
    assert scaled.shape == (144, 240, 3)  # 96x160 x 1.5
    assert (tmp_path / "job.tif").read_bytes() == (tmp_path / "scaled.tif").read_bytes()


def test_absurd_output_sizes_are_refused_before_any_planning(start):
    """A scale of 1e300 once planned a terapixel canvas before the pixel limit and got the server
    OOM-killed; now the limit comes first, and an empty or double size is INVALID_ARGUMENT."""
    from famos.protos.famos.render.v1 import render_pb2 as pb

    server = start()
    with client_of(server) as client:
        for kwargs, code in (
            (dict(scale=1e300), grpc.StatusCode.INVALID_ARGUMENT),  # a side over MAX_SIDE
            (dict(scale=1e308), grpc.StatusCode.INVALID_ARGUMENT),  # x canvas overflows to inf
            (dict(size=(2**31 - 1, 2**31 - 1)), grpc.StatusCode.INVALID_ARGUMENT),  # over MAX_SIDE
            (dict(size=(96, 2**20), chunk=16), grpc.StatusCode.RESOURCE_EXHAUSTED),  # 393216 chunks
        ):
            with pytest.raises(ServerError) as err:
                list(client.render(MODEL, **kwargs))
            assert err.value.code == code, (kwargs, err.value)
        stub = client._stub
        for size in (pb.OutputSize(), pb.OutputSize(width=10, height=10, scale=2)):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Render(pb.RenderRequest(model=MODEL, size=size)))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "size" in err.value.details()
        assert [m.name for m in client.models()] == [MODEL]  # still serving


def test_new_content_image_equals_local_render(start, models, tmp_path):
    server = start()
    content = np.random.default_rng(3).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    (tmp_path / "content.png").write_bytes(png_bytes(content))
    local = local_render(models, tmp_path / "local.tif", "--seed", "1", "--content", str(tmp_path / "content.png"))
    with client_of(server) as client:
        client.render_to_tiff(MODEL, tmp_path / "s.tif", seed=1, content=png_bytes(content))
    assert np.array_equal(tifffile.imread(tmp_path / "s.tif"), local)


def test_stream_messages_are_bounded_and_partition_the_strip():
    strip = np.random.default_rng(0).integers(0, 256, (7, 50, 3), dtype=np.uint8)
    for max_bytes in (50 * 3 * 7, 50 * 3 * 2 + 1, 100, 3):
        covered = np.zeros(strip.shape[:2], int)
        for piece in pieces(strip, top=10, max_bytes=max_bytes):
            h, w, _ = piece.pixels.shape
            assert piece.pixels.nbytes <= max_bytes
            assert np.array_equal(piece.pixels, strip[piece.y - 10 : piece.y - 10 + h, piece.x : piece.x + w])
            covered[piece.y - 10 : piece.y - 10 + h, piece.x : piece.x + w] += 1
        assert (covered == 1).all()


def test_eight_clients_at_once(start, models, tmp_path):
    server = start(workers=2, max_queue=8)
    references = {seed: local_render(models, tmp_path / f"ref{seed}.tif", "--seed", str(seed)) for seed in (0, 1)}

    def render(i: int) -> bool:
        out = tmp_path / f"client{i}.tif"
        with client_of(server) as client:
            client.render_to_tiff(MODEL, out, seed=i % 2, chunk=32)
        return np.array_equal(tifffile.imread(out), references[i % 2])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(render, range(8)))


def test_cancel_mid_stream_stops_the_work_and_frees_the_worker(start, tmp_path):
    server = start(workers=1, max_queue=0)
    chunks_run = slow_down(server, 0.02)
    total = 6 * 10  # 96x160 in chunks of 16
    with client_of(server) as client:
        stream = client.render(MODEL, chunk=16)
        events = iter(stream)
        next(events)  # started
        next(events)  # first tile
        stream.cancel()
        with pytest.raises(ServerError) as err:
            list(events)
        assert err.value.code == grpc.StatusCode.CANCELLED
        deadline = time.monotonic() + 5
        while server.slots.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.slots.active == 0
        stopped_at = chunks_run[0]
        time.sleep(0.2)
        assert chunks_run[0] == stopped_at < total  # stopped, long before the end
        # the only worker is free again
        client.render_to_tiff(MODEL, tmp_path / "after.tif", chunk=48)


def test_client_disconnect_stops_the_work(start):
    server = start(workers=1)
    chunks_run = slow_down(server, 0.02)
    client = client_of(server)
    events = iter(client.render(MODEL, chunk=16))
    next(events)
    client.close()  # the whole channel goes away
    deadline = time.monotonic() + 5
    while server.slots.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.slots.active == 0 and chunks_run[0] < 60


def test_client_render_imports_no_torch(start, tmp_path):
    server = start()
    out = tmp_path / "sub.tif"
    code = (
        "import sys\n"
        "from famos.cli import main\n"
        f"rc = main(['client', '--server', '127.0.0.1:{server.port}', 'render', '{MODEL}', '--out', r'{out}', '--quiet'])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'export', 'training', 'render_server') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
    assert tifffile.imread(out).shape == (96, 160, 3)


# errors and limits


@pytest.mark.parametrize(
    "kwargs, code, field",
    [
        (dict(model="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        (dict(model="../tiny"), grpc.StatusCode.INVALID_ARGUMENT, "model"),
        (dict(model="/etc"), grpc.StatusCode.INVALID_ARGUMENT, "model"),
        (dict(model=MODEL, chunk=8), grpc.StatusCode.INVALID_ARGUMENT, "chunk"),
        (dict(model=MODEL, region=Rect(y=0, x=100, height=10, width=100)), grpc.StatusCode.INVALID_ARGUMENT, "region"),
        (dict(model=MODEL, region=Rect(y=0, x=0, height=10, width=0)), grpc.StatusCode.INVALID_ARGUMENT, "region"),
        (dict(model=MODEL, content=b"not an image"), grpc.StatusCode.INVALID_ARGUMENT, "content_image"),
        # a pickle is just bytes that are not an image: never unpickled
        (dict(model=MODEL, content=pickle.dumps(np.zeros((4, 4, 3)))), grpc.StatusCode.INVALID_ARGUMENT, "content_image"),
        (dict(model=MODEL, content=None), grpc.StatusCode.RESOURCE_EXHAUSTED, "content_image"),
        (dict(model=MODEL, content=bomb_png()), grpc.StatusCode.RESOURCE_EXHAUSTED, "content_image"),
        (dict(model=MODEL, region=Rect(y=0, x=0, height=96, width=160)), grpc.StatusCode.RESOURCE_EXHAUSTED, "region"),
    ],
)
def test_bad_requests_get_clear_status_codes(start, kwargs, code, field):
    server = start(max_pixels=96 * 100, max_content_pixels=100 * 100)
    kwargs = dict(kwargs)
    if "content" in kwargs and kwargs["content"] is None:
        kwargs["content"] = png_bytes(np.zeros((101, 100, 3), np.uint8))
    kwargs.setdefault("region", Rect(y=0, x=0, height=96, width=100))
    with client_of(server) as client:
        with pytest.raises(ServerError) as err:
            list(client.render(kwargs.pop("model"), **kwargs))
    assert err.value.code == code
    assert field in err.value.details


def test_second_server_on_a_busy_port_fails_to_start(start, models, tmp_path):
    from famos.errors import UserError

    first = start()
    with pytest.raises(UserError, match="in use"):
        RenderServer(ServerConfig(models=models, output=tmp_path, host="127.0.0.1", port=first.port))
    with pytest.raises(UserError, match="chunk"):
        ServerConfig(models=models, output=tmp_path, chunk=8)


def test_full_queue_is_resource_exhausted(start):
    server = start(workers=1, max_queue=0)
    with server.slots.slot(cancel=threading.Event()):  # the only worker is busy
        with client_of(server) as client, pytest.raises(ServerError) as err:
            list(client.render(MODEL))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in err.value.details


def test_token_is_required(start, tmp_path):
    server = start(token="s3cret")
    for kw in ({}, {"token": "wrong"}):
        with client_of(server, **kw) as client:
            for call in (client.models, lambda: list(client.render(MODEL)), client.jobs):
                with pytest.raises(ServerError) as err:
                    call()
                assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    with client_of(server, token="s3cret") as client:
        assert [m.name for m in client.models()] == [MODEL]
        client.render_to_tiff(MODEL, tmp_path / "ok.tif")
    # health checks need no token: probes do not hold secrets
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_with_self_signed_certificate_and_token(start, certificate, tmp_path):
    cert, key = certificate
    server = start(tls_cert=cert, tls_key=key, token="t")
    with client_of(server, root_certificates=cert.read_bytes(), token="t") as client:
        assert [m.name for m in client.models()] == [MODEL]
        client.render_to_tiff(MODEL, tmp_path / "tls.tif")
    with client_of(server, token="t", timeout=3) as plaintext, pytest.raises(ServerError) as err:
        plaintext.models()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_health_and_reflection(start):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    server = start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="famos.render.v1.RenderService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "famos.render.v1.RenderService" in services and "grpc.health.v1.Health" in services
        service = DescriptorPool(database).FindServiceByName("famos.render.v1.RenderService")
        render = service.FindMethodByName("Render")
        assert render.output_type.full_name == "famos.render.v1.RenderResponse"
    server.stop(0)
    assert server.health._server_status["famos.render.v1.RenderService"] == health_pb2.HealthCheckResponse.NOT_SERVING


# jobs


def test_job_renders_into_the_store_and_downloads(start, models, tmp_path):
    server = start()
    local = tmp_path / "local.tif"
    local_render(models, local, "--seed", "2", "--chunk", "32", "--compression", "lzw", "--dpi", "300")
    with client_of(server) as client:
        job = client.submit(MODEL, output_name="print.tif", seed=2, chunk=32,
                            tiff=TiffOptions(compression=Compression.LZW, dpi=300))
        assert job.state in (JobState.QUEUED, JobState.RUNNING) and job.strips_total == 3
        states = list(client.watch(job.id))
        final = states[-1]
        assert final.state is JobState.SUCCEEDED, final.error
        assert final.strips_done == final.strips_rendered == 3 and final.attempts == 1
        assert [s.strips_done for s in states] == sorted(s.strips_done for s in states)
        client.download(job.id, tmp_path / "downloaded.tif")
        assert [j.id for j in client.jobs()] == [job.id]
    assert (tmp_path / "downloaded.tif").read_bytes() == local.read_bytes()
    assert (server.config.output / "print.tif").read_bytes() == local.read_bytes()
    assert not any((server.config.output / ".spool").iterdir())  # spool removed


def test_job_errors(start):
    server = start(max_jobs=1)
    slow_down(server, 0.05)
    with client_of(server) as client:
        for name, code in (("../escape.tif", "INVALID_ARGUMENT"), ("sub/dir.tif", "INVALID_ARGUMENT"),
                           ("notiff.png", "INVALID_ARGUMENT")):
            with pytest.raises(ServerError) as err:
                client.submit(MODEL, output_name=name)
            assert err.value.code.name == code and "output_name" in err.value.details
        job = client.submit(MODEL, output_name="a.tif", chunk=16)
        with pytest.raises(ServerError) as err:
            client.submit(MODEL, output_name="b.tif")
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(ServerError) as err:
            client.download(job.id, server.config.output / "x.tif")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        for bad_id in ("f" * 32, "../../etc/passwd"):
            with pytest.raises(ServerError) as err:
                client.cancel(bad_id)
            assert err.value.code == grpc.StatusCode.NOT_FOUND
        cancelled = client.cancel(job.id)
        assert cancelled.state is JobState.CANCELLED
        assert client.wait(job.id).state is JobState.CANCELLED
        deadline = time.monotonic() + 5
        while (server.config.output / ".spool" / job.id).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (server.config.output / ".spool" / job.id).exists()
        assert not (server.config.output / "a.tif").exists()
        # the name is free again once its job was cancelled
        again = client.submit(MODEL, output_name="a.tif", chunk=48)
        assert client.wait(again.id).state is JobState.SUCCEEDED
        with pytest.raises(ServerError) as err:
            client.submit(MODEL, output_name="a.tif")
        assert err.value.code == grpc.StatusCode.ALREADY_EXISTS


def test_stop_pauses_a_running_job_and_the_next_start_resumes_it(models, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    config = ServerConfig(models=models, output=store, port=0)
    first = RenderServer(config)
    first.start()
    slow_down(first, 0.02)
    with client_of(first) as client:
        job = client.submit(MODEL, output_name="paused.tif", chunk=16)
        for state in client.watch(job.id):
            if state.strips_done >= 1:
                break
    first.stop(0)  # as on SIGTERM: the job is paused between chunks, not failed
    second = RenderServer(config)
    second.start()
    try:
        with client_of(second) as client:
            done = client.wait(job.id)
    finally:
        second.stop(0)
    assert done.state is JobState.SUCCEEDED and done.attempts == 2
    assert done.strips_rendered == done.strips_total == 6


def test_an_ipv6_host_is_bracketed_in_the_address(models, tmp_path):
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = RenderServer(ServerConfig(models=models, output=tmp_path, host="::1", port=0))
    try:
        server.start()
        with RenderClient(f"[::1]:{server.port}") as client:
            assert [m.name for m in client.models()] == [MODEL]
    finally:
        server.stop(0)
