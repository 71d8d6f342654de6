"""The server under faults, for real where this machine allows: a disk that fills (a small tmpfs
when the test may mount one, else ENOSPC injected at the writer), clients that stop reading,
cancel during assembly, killed clients, and SIGKILLs of the server under a load of jobs."""

from __future__ import annotations

import contextlib
import errno
import pathlib
import signal
import subprocess
import sys
import time

import grpc
import pytest

from famos.clients.render_client import RenderClient
from conftest import SERVER_MODEL
from famos.tiff_options import Compression, TiffOptions
from famos.values import JobState
from famos.protos.famos.render.v1 import render_pb2 as pb
from famos.protos.famos.render.v1 import render_pb2_grpc
from famos.render_server.server import RenderServer, ServerConfig

REPO = pathlib.Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def small_disk(folder: pathlib.Path, megabytes: int):
    """A tmpfs of ``megabytes`` at ``folder``; skips where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (the injected-ENOSPC tests cover the writer)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def serving(models, store, **config) -> RenderServer:
    server = RenderServer(ServerConfig(models=models, output=store, port=0, **config))
    server.start()
    return server


def one_line_cli(argv: list[str]) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "famos.cli", *argv], capture_output=True, text=True, timeout=120)
    return result.returncode, result.stderr.strip()


# a full disk


def test_a_local_render_too_big_for_the_disk_is_refused_before_it_starts(models, tmp_path):
    with small_disk(tmp_path / "disk", 1) as disk:
        rc, err = one_line_cli(["render", str(models / SERVER_MODEL), "--out", str(disk / "big.tif"), "--quiet",
                                "--size", "1200x800", "--compression", "none", "--chunk", "64"])
        assert rc == 2, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"--out {disk / 'big.tif'}: the file needs about 3 MB, 1 MB are free there" in err
        assert list(disk.iterdir()) == []


def test_injected_enospc_at_the_writer_is_the_same_error(models, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: the disk fills after 10 kB of the file."""
    import builtins

    import famos.tiff_writer
    from famos.bundle import load_bundle
    from famos.errors import DiskFull
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 10_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(famos.tiff_writer, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k)), raising=False)
    with pytest.raises(DiskFull, match=r"no space left on device writing .*out\.tif \(needs about [\d,]+ MB, [\d,]+ MB free\)"):
        render_tiff(Renderer(load_bundle(models / SERVER_MODEL)), tmp_path / "out.tif",
                    settings=RenderSettings(size=(400, 600), chunk=64), options=TiffOptions(compression=Compression.NONE))
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_during_a_job_fails_it_and_frees_everything(models, tmp_path):
    with small_disk(tmp_path / "store", 3) as store:
        server = serving(models, store)
        try:
            with RenderClient(f"127.0.0.1:{server.port}") as client:
                job = client.submit(SERVER_MODEL, output_name="huge.tif", chunk=64, size=(1000, 1600),
                                    tiff=TiffOptions(compression=Compression.NONE))
                final = list(client.watch(job.id))[-1]  # the watch ends: the job is terminal
                assert final.state is JobState.FAILED
                assert "no space left on device" in final.error, final.error
                assert not any((store / ".spool").iterdir())  # the spool went, the space is back
                # with the space back, the next job runs
                small = client.wait(client.submit(SERVER_MODEL, output_name="small.tif", chunk=64).id)
                assert small.state is JobState.SUCCEEDED, small.error
                # a disk that cannot take the job's first bytes: refused at submit, named
                filler = store / "filler"
                with open(filler, "wb") as fh:
                    with contextlib.suppress(OSError):
                        while True:
                            fh.write(b"\0" * 65536)
                with pytest.raises(Exception) as refused:
                    client.submit(SERVER_MODEL, output_name="late.tif", chunk=64, content=noise_png())
                assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "no space left on device" in refused.value.details
                filler.unlink()
        finally:
            server.stop(0)


def noise_png() -> bytes:
    """An incompressible 200 kB content image: the spool must store it before the job exists."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (260, 260, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# clients that stop reading


def stalled_render(server: RenderServer) -> tuple[grpc.Channel, object]:
    """A real channel whose Render stream is never read."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = render_pb2_grpc.RenderServiceStub(channel)
    request = pb.RenderRequest(model=SERVER_MODEL, chunk=64, size=pb.OutputSize(width=3000, height=2000))
    return channel, stub.Render(request)


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_streams_that_stop_reading_cannot_starve_jobs_and_are_cancelled(models, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    server = serving(models, store, workers=2, max_queue=0, stream_idle_timeout=1.5)
    stalled = [stalled_render(server) for _ in range(2)]
    try:
        assert wait_until(lambda: server.slots.active == 2, 10)  # both stream slots held by stalled clients
        with RenderClient(f"127.0.0.1:{server.port}") as client:
            # jobs have their own workers: a job runs while the streams stall
            job = client.wait(client.submit(SERVER_MODEL, output_name="meanwhile.tif", chunk=32).id)
            assert job.state is JobState.SUCCEEDED, job.error
        # past the idle limit the stalled streams are cancelled and their slots freed
        assert wait_until(lambda: server.slots.active == 0, 10), server.slots.active
        assert server.stalls.cancelled == 2
        for _, call in stalled:
            with pytest.raises(grpc.RpcError) as ended:
                for _ in call:
                    pass
            assert ended.value.code() is grpc.StatusCode.CANCELLED
    finally:
        for channel, _ in stalled:
            channel.close()
        server.stop(0)


def test_overload_is_answered_by_the_service_not_by_grpc(models, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    server = serving(models, store, workers=1, max_queue=0, max_other_calls=2, stream_idle_timeout=30)
    stalled = [stalled_render(server)]
    try:
        assert wait_until(lambda: server.slots.active == 1, 10)
        with RenderClient(f"127.0.0.1:{server.port}") as client:
            with pytest.raises(Exception) as busy:
                list(client.render(SERVER_MODEL, chunk=64))
            assert busy.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "server busy: 1 renders running and 0 waiting" in busy.value.details
            job = client.submit(SERVER_MODEL, output_name="watched.tif", chunk=32)
            watches = [client.watch(job.id) for _ in range(2)]
            for watch in watches:
                next(watch)  # two watches hold the two other-call places
            with pytest.raises(Exception) as refused:
                client.jobs()
            assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "calls other than renders in progress (the limit)" in refused.value.details
            for watch in watches:
                watch.close()
    finally:
        for channel, _ in stalled:
            channel.close()
        server.stop(0)


# cancel during assembly


def test_cancel_during_assembly_leaves_no_file_and_frees_the_name(models, tmp_path, monkeypatch):
    from famos.render_server import job_runner as jobs_module

    store = tmp_path / "store"
    store.mkdir()
    server = serving(models, store)
    assemble = jobs_module.assemble

    def cancelled_meanwhile(spool, path, **kwargs):
        server.jobs.cancel(spool.folder.name)  # the client's CancelJob arrives as assembly begins
        return assemble(spool, path, **kwargs)

    monkeypatch.setattr(jobs_module, "assemble", cancelled_meanwhile)
    try:
        with RenderClient(f"127.0.0.1:{server.port}") as client:
            job = client.submit(SERVER_MODEL, output_name="gone.tif", chunk=32, tiff=TiffOptions(pyramid=True))
            assert client.wait(job.id).state is JobState.CANCELLED
            assert wait_until(lambda: not any((store / ".spool").iterdir()), 5)
            assert not (store / "gone.tif").exists()
            monkeypatch.setattr(jobs_module, "assemble", assemble)
            again = client.wait(client.submit(SERVER_MODEL, output_name="gone.tif", chunk=32).id)
            assert again.state is JobState.SUCCEEDED  # the cancelled job no longer holds the name
    finally:
        server.stop(0)
    assert not [p for p in store.iterdir() if p.is_file() and p.name.endswith((".partial", ".spool"))]


# killed clients


def test_a_killed_client_leaves_no_partial_file(models, tmp_path):
    from test_server import slow_down

    store = tmp_path / "store"
    store.mkdir()
    server = serving(models, store)
    slow_down(server, 0.05)
    out = tmp_path / "out" / "client.tif"
    out.parent.mkdir()
    try:
        command = [sys.executable, "-m", "famos.cli", "client", "--server", f"127.0.0.1:{server.port}",
                   "render", SERVER_MODEL, "--out", str(out), "--chunk", "16"]
        for kill in (signal.SIGTERM, signal.SIGKILL):
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert wait_until(lambda: any(out.parent.iterdir()), 30), "the client never started writing"
            process.send_signal(kill)
            process.wait(timeout=30)
            if kill is signal.SIGTERM:  # cleaned up at once
                assert list(out.parent.iterdir()) == []
            else:  # nothing could run: the partial stays until the next write to that output
                assert [p.name.endswith(".partial") for p in out.parent.iterdir()] == [True]
        process = subprocess.run(command, capture_output=True, timeout=120)
        assert process.returncode == 0, process.stderr
        assert [p.name for p in out.parent.iterdir()] == ["client.tif"]  # the dead writer's partial is gone
    finally:
        server.stop(0)


# SIGKILL under load


def test_repeated_sigkills_under_a_load_of_jobs_lose_and_duplicate_nothing(models, tmp_path):
    from famos.bundle import load_bundle
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings

    store = tmp_path / "store"
    store.mkdir()
    command = [sys.executable, "-m", "famos.cli", "serve", "--models", str(models), "--output", str(store),
               "--port", "0", "--job-workers", "2", "--log-level", "WARNING"]

    def start() -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = process.stdout.readline()
        return process, line.strip().rsplit(" ", 1)[-1]

    process, address = start()
    sizes = [(480, 800), (400, 640), (320, 960), (560, 560)]
    with RenderClient(address) as client:
        jobs = [client.submit(SERVER_MODEL, output_name=f"job{k}.tif", seed=k, chunk=32, size=sizes[k % 4]).id
                for k in range(8)]
    for _ in range(3):
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process, address = start()
    try:
        with RenderClient(address) as client:
            finished = [client.wait(job_id) for job_id in jobs]
    finally:
        process.terminate()
        process.wait(timeout=30)
    renderer = Renderer(load_bundle(models / SERVER_MODEL))
    for k, job in enumerate(finished):
        assert job.state is JobState.SUCCEEDED, job.error
        # no strip rendered twice (a kill between spooling a strip and counting it leaves it uncounted)
        assert job.strips_rendered <= job.strips_total
        solo = tmp_path / f"solo{k}.tif"
        render_tiff(renderer, solo, settings=RenderSettings(seed=k, chunk=32, size=sizes[k % 4]))
        assert (store / f"job{k}.tif").read_bytes() == solo.read_bytes(), k
    assert max(job.attempts for job in finished) > 1  # the kills did land mid-work
    assert not any((store / ".spool").iterdir())
