"""Rendering on a real local Ray cluster (two CPU slots, shared by these tests): the same file as a
local render, byte for byte; workers killed mid-render; cancel and interrupt; the server on a cluster."""

from __future__ import annotations

import json

import os
import signal
import threading
import time

import numpy as np
import pytest
import tifffile

from conftest import SERVER_MODEL
from famos.bundle import load_bundle
from famos.errors import Cancelled
from famos.planning import Rect
from famos.renderer import Renderer, render_tiff
from famos.chunk_loop import RenderSettings
from famos.tiff_options import Compression, TiffOptions

ray = pytest.importorskip("ray")

from famos.cluster import ClusterOptions, WorkerPool  # noqa: E402

# 480x288 in strips of 48 rows (6 strips), tiles of 32: strips cut tile rows, so the driver joins
# raw rows between strips as well as the workers' encoded tiles
SETTINGS = RenderSettings(seed=4, chunk=48, size=(288, 480))
OPTIONS = TiffOptions(tile=32, compression=Compression.DEFLATE, pyramid=True, dpi=150)


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture
def pool(cluster):
    pools = []

    def start(**options) -> WorkerPool:
        pools.append(WorkerPool(ClusterOptions(address=cluster, **options)))
        return pools[-1]

    yield start
    for p in pools:
        p.close()


@pytest.fixture(scope="module")
def bundle(models):
    return load_bundle(models / SERVER_MODEL)


@pytest.fixture(scope="module")
def local_file(bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "local.tif"
    render_tiff(Renderer(bundle), path, settings=SETTINGS, options=OPTIONS)
    return path.read_bytes()


def test_cluster_render_is_the_local_file_byte_for_byte(pool, bundle, local_file, tmp_path):
    workers = pool()
    assert len(workers.workers) == 2  # one per CPU slot
    renderer = Renderer(bundle, cluster=workers)
    assert renderer.run is None  # the driver loads no runner
    report = render_tiff(renderer, tmp_path / "ray.tif", settings=SETTINGS, options=OPTIONS, preview=tmp_path / "p.png")
    assert (tmp_path / "ray.tif").read_bytes() == local_file
    assert report.chunks == 60
    # raw strips (what a streamed render sends) equal the local pipeline's, region and all
    task = renderer.task(RenderSettings(seed=4, chunk=48, size=(288, 480), region=Rect(10, 7, 200, 300)))
    assert np.array_equal(np.concatenate(list(renderer.strips(task))), np.concatenate(list(Renderer(bundle).strips(task))))


@pytest.mark.parametrize("restarts", [2, 0])  # Ray restarts the worker / the driver replaces it
def test_a_worker_killed_mid_render_costs_time_not_the_file(pool, bundle, local_file, tmp_path, restarts):
    workers = pool(max_restarts=restarts)
    renderer = Renderer(bundle, cluster=workers)
    victim = workers.pids()[0]
    killed = []

    def kill_once(progress):
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(progress.chunks_done)

    render_tiff(renderer, tmp_path / "ray.tif", settings=SETTINGS, options=OPTIONS, progress=kill_once)
    assert killed and victim not in workers.pids()
    assert (tmp_path / "ray.tif").read_bytes() == local_file


@pytest.mark.parametrize("stop", [Cancelled, KeyboardInterrupt])
def test_cancel_and_interrupt_stop_the_workers_and_leave_no_file(pool, bundle, local_file, tmp_path, stop):
    workers = pool()
    renderer = Renderer(bundle, cluster=workers)
    cancel = threading.Event()
    # 6 strips of 150 chunks each; without a stop the workers would run all 900
    wide = RenderSettings(seed=4, chunk=16, size=(96, 1600))

    def stop_after_first_strip(progress):
        if stop is Cancelled:
            cancel.set()  # a job cancel or a client that left: seen between strips
        else:
            raise KeyboardInterrupt  # Ctrl-C in `famos render`

    with pytest.raises(stop):
        render_tiff(renderer, tmp_path / "ray.tif", settings=wide, options=OPTIONS,
                    cancel=cancel, progress=stop_after_first_strip)
    assert list(tmp_path.iterdir()) == []  # no file, no partial, no pyramid spool
    time.sleep(1.0)  # let anything that did not stop run on
    chunks = sum(s.chunks for s in workers.stats())
    # strips the workers had begun stop within a chunk, queued ones never start: far from all 900
    # (about 200-300 here: the first strip and part of the next one or two)
    assert chunks < 4 * 150, chunks
    # the workers dropped the cancelled render and take the next one at once
    render_tiff(renderer, tmp_path / "next.tif", settings=SETTINGS, options=OPTIONS)
    assert (tmp_path / "next.tif").read_bytes() == local_file


def test_famos_render_and_serve_on_the_cluster(cluster, models, local_file, tmp_path, capsys):
    from famos.clients.render_client import RenderClient
    from famos.cli import main
    from famos.values import JobState
    from famos.render_server.server import RenderServer, ServerConfig

    size = ["--size", "480x288", "--seed", "4", "--chunk", "48", "--tile", "32", "--pyramid", "--dpi", "150"]
    capsys.readouterr()
    assert main(["render", str(models / SERVER_MODEL), "--out", str(tmp_path / "cli.tif"), "--quiet",
                 "--ray", cluster, "--ray-workers", "2", *size]) == 0
    assert (tmp_path / "cli.tif").read_bytes() == local_file
    # the driver waits for the workers' strips (their rendering and encoding), then writes them
    timings = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["timings"]
    assert set(timings) == {"waiting_for_workers", "writing"} and timings["waiting_for_workers"] > 0

    store = tmp_path / "store"
    store.mkdir()
    server = RenderServer(ServerConfig(models=models, output=store, port=0, cluster=ClusterOptions(address=cluster)))
    server.start()
    try:
        with RenderClient(f"127.0.0.1:{server.port}") as client:
            job = client.wait(client.submit(SERVER_MODEL, output_name="job.tif", seed=4, chunk=48,
                                            size=(288, 480), tiff=OPTIONS).id)
            assert job.state is JobState.SUCCEEDED, job.error
            client.render_to_tiff(SERVER_MODEL, tmp_path / "streamed.tif", seed=4, chunk=48, size=(288, 480),
                                  tiff=OPTIONS)
    finally:
        server.stop(0)
    assert (store / "job.tif").read_bytes() == local_file
    assert np.array_equal(tifffile.imread(tmp_path / "streamed.tif"), tifffile.imread(tmp_path / "cli.tif"))


def test_a_pool_the_cluster_cannot_hold_is_refused_at_once(cluster):
    from famos.errors import BackendUnavailable, UserError
    from famos.runners import RunnerOptions

    with pytest.raises(UserError, match="the cluster has 2 CPUs"):
        WorkerPool(ClusterOptions(address=cluster, workers=3))  # would wait forever for a third slot
    with pytest.raises(BackendUnavailable, match="the cluster has no GPU"):
        WorkerPool(ClusterOptions(address=cluster), RunnerOptions(device="cuda"))


def test_a_cluster_server_stopped_mid_job_resumes_it_from_the_spool(cluster, models, tmp_path):
    from famos.clients.render_client import RenderClient
    from famos.values import JobState
    from famos.render_server.server import RenderServer, ServerConfig

    store = tmp_path / "store"
    store.mkdir()
    config = ServerConfig(models=models, output=store, port=0, cluster=ClusterOptions(address=cluster))
    settings = RenderSettings(seed=1, chunk=16, size=(480, 1600))  # 30 strips of 100 chunks
    first = RenderServer(config)
    first.start()
    with RenderClient(f"127.0.0.1:{first.port}") as client:
        job = client.submit(SERVER_MODEL, output_name="resumed.tif", seed=1, chunk=16, size=(480, 1600))
        for state in client.watch(job.id):
            if state.strips_done >= 2:
                break
    first.stop(0)  # as on SIGTERM: paused between chunks, its workers released
    second = RenderServer(config)
    second.start()
    try:
        with RenderClient(f"127.0.0.1:{second.port}") as client:
            done = client.wait(job.id)
    finally:
        second.stop(0)
    assert done.state is JobState.SUCCEEDED and done.attempts == 2, done
    assert done.strips_rendered == done.strips_total == 30  # no spooled strip rendered twice
    render_tiff(Renderer(load_bundle(models / SERVER_MODEL)), tmp_path / "local.tif", settings=settings)
    assert (store / "resumed.tif").read_bytes() == (tmp_path / "local.tif").read_bytes()


def test_workers_leave_no_temporary_folder(models, tmp_path):
    """A closed pool's workers remove the bundles they unpacked; a killed worker's folder is removed
    by the next process that starts one (its pid is in the name)."""
    import pathlib
    import tempfile

    from famos.files import scratch_folder
    from famos.runners import RunnerOptions

    root = pathlib.Path(tempfile.gettempdir())
    dead = root / "famos-worker-999999999-leftover"  # no such process
    dead.mkdir(exist_ok=True)
    mine = scratch_folder("worker")
    assert not dead.exists() and mine.name.startswith(f"famos-worker-{os.getpid()}-")
    mine.rmdir()
    before = set(root.glob("famos-worker-*"))
    pool = WorkerPool(ClusterOptions(workers=2), RunnerOptions())
    try:
        render_tiff(Renderer(load_bundle(models / SERVER_MODEL), cluster=pool), tmp_path / "r.tif",
                    settings=RenderSettings(chunk=48))
    finally:
        pool.close()
    assert set(root.glob("famos-worker-*")) <= before
