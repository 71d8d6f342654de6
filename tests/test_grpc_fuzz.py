"""The gRPC surface under generated requests (hypothesis over every request message's fields,
bounded in count and time, loopback only): every answer is a documented status, never INTERNAL or
UNKNOWN; the server stays healthy; nothing is read or written outside its folders."""

from __future__ import annotations

import os
import pathlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SERVER_MODEL
from famos.protos.famos.render.v1 import render_pb2 as pb
from famos.protos.famos.render.v1 import render_pb2_grpc
from famos.render_server.server import RenderServer, ServerConfig

DOCUMENTED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED,
}
EXAMPLES = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

names = st.one_of(st.just(SERVER_MODEL), st.text(max_size=40), st.text(max_size=3000),
                  st.sampled_from(["../tiny", "/etc/passwd", "tiny/../../x", "..", ".", "tiny\x00", "%2e%2e"]))
ints32 = st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from([0, 1, 16, 64, 100000]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-300, 1e300, 1e308, 0.5, 2.0]))
sizes = st.builds(pb.OutputSize, width=ints32, height=ints32, scale=floats)
regions = st.builds(pb.Region, x=ints32, y=ints32, width=ints32, height=ints32)
renders = st.builds(
    pb.RenderRequest, model=names, seed=st.integers(-2**63, 2**63 - 1), chunk=ints32,
    content_image=st.one_of(st.just(b""), st.binary(max_size=200), st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)),
    size=st.one_of(st.none(), sizes), region=st.one_of(st.none(), regions),
)
tiffs = st.builds(
    pb.TiffSettings, compression=st.integers(-3, 9), quality=ints32, tile=ints32, dpi=floats, pyramid=st.booleans(),
    bigtiff=st.integers(-3, 6), no_predictor=st.booleans(), no_icc=st.booleans(), artist=st.text(max_size=50),
    copyright=st.text(max_size=50), jpeg_subsampling=st.sampled_from(["", "4:2:0", "4:4:4", "9:9:9"]),
    resolution_unit=st.sampled_from(["", "inch", "cm", "furlong"]),
)
output_names = st.one_of(st.just(""), st.text(max_size=40), st.sampled_from(
    ["../escape.tif", "/tmp/abs.tif", "a/b.tif", "ok.tif", ".spool", ".famos-jobs.sqlite3", "x.tif\x00"]))


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz-store")
    server = RenderServer(ServerConfig(models=models, output=store, port=0, max_pixels=2**20, max_jobs=1000,
                                       max_content_pixels=2**16))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, render_pb2_grpc.RenderServiceStub(channel), channel, store
    channel.close()
    server.stop(0)


def status_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() in DOCUMENTED, (err.code(), err.details())
        assert err.code() is not grpc.StatusCode.INVALID_ARGUMENT or err.details(), "an error names its field"
        return err.code()
    return grpc.StatusCode.OK


def first_event(stub, request):
    stream = stub.Render(request, timeout=30)
    next(stream, None)  # started (or the refusal); the rest is not needed
    stream.cancel()


@settings(**EXAMPLES)
@given(request=renders)
def test_render_requests(served, request):
    _, stub, _, _ = served
    status_of(lambda: first_event(stub, request))


@settings(**EXAMPLES)
@given(render=renders, tiff=tiffs, name=output_names)
def test_submit_requests(served, render, tiff, name):
    _, stub, _, _ = served
    status_of(lambda: stub.SubmitJob(pb.SubmitJobRequest(render=render, tiff=tiff, output_name=name), timeout=30))


@settings(**EXAMPLES)
@given(job_id=names, limit=ints32)
def test_job_requests(served, job_id, limit):
    _, stub, _, _ = served
    status_of(lambda: next(stub.WatchJob(pb.JobRequest(id=job_id), timeout=10), None))
    status_of(lambda: stub.CancelJob(pb.JobRequest(id=job_id), timeout=10))
    status_of(lambda: next(stub.DownloadJob(pb.JobRequest(id=job_id), timeout=10), None))
    status_of(lambda: stub.ListJobs(pb.ListJobsRequest(limit=limit), timeout=10))
    status_of(lambda: stub.GetModel(pb.GetModelRequest(name=job_id), timeout=10))


def test_after_the_fuzz_the_server_is_healthy_and_kept_to_its_folders(served, models):
    server, stub, channel, store = served
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models] == [SERVER_MODEL]
    for job in stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs:
        status_of(lambda: stub.CancelJob(pb.JobRequest(id=job.id), timeout=10))
    # everything the server wrote is inside its store; the models folder is as it was
    assert sorted(p.name for p in models.iterdir()) == [SERVER_MODEL]
    for path in store.rglob("*"):
        assert pathlib.Path(os.path.realpath(path)).is_relative_to(store.resolve()), path
    assert not pathlib.Path("/tmp/abs.tif").exists() and not (store.parent / "escape.tif").exists()


def test_huge_inputs_get_their_documented_answer_in_a_short_message(models, tmp_path):
    server = RenderServer(ServerConfig(models=models, output=tmp_path, port=0, token="s3cret"))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = render_pb2_grpc.RenderServiceStub(channel)
    try:
        with pytest.raises(grpc.RpcError) as huge_token:
            stub.ListModels(pb.ListModelsRequest(), metadata=(("authorization", "Bearer " + "x" * 100_000),), timeout=10)
        assert huge_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", "Bearer s3cret"),)
        with pytest.raises(grpc.RpcError) as long_name:
            stub.GetModel(pb.GetModelRequest(name="m" * 10_000), metadata=auth, timeout=10)
        assert long_name.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # names are at most 128 characters
        assert len(long_name.value.details()) < 200 and "(10000 characters)" in long_name.value.details()
        for dpi in (float("inf"), 1e300, 1e-300):
            with pytest.raises(grpc.RpcError) as bad_dpi:
                stub.SubmitJob(pb.SubmitJobRequest(render=pb.RenderRequest(model=SERVER_MODEL),
                                                   tiff=pb.TiffSettings(dpi=dpi)), metadata=auth, timeout=10)
            assert bad_dpi.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "dpi" in bad_dpi.value.details()
    finally:
        channel.close()
        server.stop(0)
