"""Rendering on a real local Ray cluster (two CPU slots, shared by these tests): the same file as a
local render, byte for byte; workers killed mid-render; cancel and interrupt; the server on a cluster."""

from __future__ import annotations

import json
import os
import pathlib
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
    with pytest.raises(UserError, match="room for 0 such workers"):  # no node has that resource
        WorkerPool(ClusterOptions(address=cluster, resources=(("worker_node", 1.0),)))


def test_workers_are_counted_node_by_node():
    from famos.cluster import _slots

    nodes = [{"CPU": 3.0, "render": 1.0}, {"CPU": 3.0}]
    assert sum(_slots(node, {"CPU": 2}) for node in nodes) == 2  # not 6 CPUs // 2: a third would wait forever
    assert sum(_slots(node, {"CPU": 1, "render": 0.3}) for node in nodes) == 3


@pytest.mark.parametrize("given", ["CPU", "=2", "render=0", "render=x", "render=inf"])
def test_a_worker_resource_is_checked_where_it_is_given(given):
    import argparse

    from famos.cluster import add_cluster_arguments, cluster_options
    from famos.errors import InvalidField

    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    options = cluster_options(parser.parse_args(["--ray", "auto", "--ray-resource", "render=2",
                                                 "--ray-resource", "gpu_a100"]))
    assert options.resources == (("render", 2.0), ("gpu_a100", 1.0))
    with pytest.raises(InvalidField, match="^ray-resource: "):
        cluster_options(parser.parse_args(["--ray", "auto", "--ray-resource", given]))


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
    """Workers remove a bundle's unpacked files once its runner is open, so they keep none while they
    live; one killed while unpacking leaves its folder to the next process that starts one (its pid
    is in the name)."""
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
        assert set(root.glob("famos-worker-*")) <= before  # the live workers hold nothing on disk
    finally:
        pool.close()
    assert set(root.glob("famos-worker-*")) <= before


# --- two nodes, as a cluster really runs --------------------------------------------------------

# Run inside a live cluster as a driver of its own: which nodes there are, where the StripWorker
# actors of past drivers ran (Ray's actor table, a debugging API: the actors are gone by then), and
# the folder and temp folder a process of the worker node runs in.
_CLUSTER_PROBE = """
import json, os, sys, tempfile, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0, resources={"worker_node": 0.01})
def folders():
    return os.getcwd(), tempfile.gettempdir()

nodes = {node["NodeID"]: sorted(set(node["Resources"]) & {"head", "worker_node"}) for node in ray.nodes()}
workers = [(a["Address"]["NodeID"], a["State"], a["NumRestarts"])
           for a in ray._private.state.actors().values() if a["ActorClassName"] == "StripWorker"]
print(json.dumps({"nodes": nodes, "workers": workers, "folders": ray.get(folders.remote())}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(tmp_path):
    """A Ray cluster of two nodes (two raylets) on this machine, each a `ray start --block` of its
    own, as an operator starts them: a head with 1 CPU and {"head": 1}, and a worker node with 2 CPUs
    and {"worker_node": 2} that runs in an empty folder of its own with a temp folder (TMPDIR) of its
    own. Yields (address, env for its drivers, {"head" | "head-tmp" | "node" | "node-tmp": folder});
    both are stopped (SIGTERM: Ray's own shutdown of a node) on the way out, whatever the test did."""
    import shutil
    import subprocess
    import sys
    import tempfile
    import uuid

    # Ray's session folder is short-named in /tmp: its Unix socket paths must stay under 108 bytes
    ray_temp = pathlib.Path(tempfile.mkdtemp(prefix="famos-ray-"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           # token authentication, Ray's default for `ray start --head`: one token for every process
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2}
    env.pop("RAY_ADDRESS", None)  # this cluster, not one the test process may be connected to
    folders = {name: tmp_path / name for name in ("head", "head-tmp", "node", "node-tmp")}
    for folder in folders.values():
        folder.mkdir()
    address = f"127.0.0.1:{_free_port()}"
    nodes = []

    def start(name: str, *options: str) -> None:
        log = tmp_path / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--node-ip-address=127.0.0.1",
                 "--object-store-memory=100000000", "--disable-usage-stats", *options],
                cwd=folders[name], env={**env, "TMPDIR": str(folders[f"{name}-tmp"])},
                stdout=out, stderr=subprocess.STDOUT,
            )
        nodes.append(process)
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start ({name}) did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    try:
        start("head", "--head", f"--port={address.rsplit(':', 1)[1]}", "--num-cpus=1", '--resources={"head": 1}',
              "--include-dashboard=false", f"--temp-dir={ray_temp}")
        start("node", f"--address={address}", "--num-cpus=2", '--resources={"worker_node": 2}')
        yield address, env, folders
    finally:
        for process in reversed(nodes):  # the worker node first, then the head
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()  # its Ray processes share its fate (Ray's reaper)
                process.wait()
        shutil.rmtree(ray_temp, ignore_errors=True)


def test_famos_render_on_two_nodes_workers_on_the_node_without_the_bundle(two_nodes, models, tmp_path):
    """`famos render --ray HEAD:PORT` as users run it, against a head and a worker node: the workers go
    only to the node that --ray-resource names (not to the head, which has a CPU free), whose folder
    holds no bundle; they render from the bytes shipped to them, not from the driver's path (which
    this machine could read); the file is the local render's, and no worker temp folder is left."""
    import json
    import shutil
    import subprocess
    import sys

    from famos.cli import main

    address, env, folders = two_nodes
    # what a worker killed while unpacking would leave (no process has that pid): the first worker
    # to unpack a bundle on a node removes it, so where it goes tells where bundles were unpacked
    for temp in ("head-tmp", "node-tmp"):
        (folders[temp] / "famos-worker-999999999-killed").mkdir()
    driver = tmp_path / "driver"
    shutil.copytree(models / SERVER_MODEL, driver / SERVER_MODEL)
    size = ["--size", "480x288", "--seed", "4", "--chunk", "48", "--tile", "32", "--pyramid", "--dpi", "150"]
    assert main(["render", str(driver / SERVER_MODEL), "--out", str(tmp_path / "local.tif"), "--quiet", *size]) == 0

    rendered = subprocess.run(
        [sys.executable, "-m", "famos.cli", "render", str(driver / SERVER_MODEL), "--out", "ray.tif", "--quiet",
         "--ray", address, "--ray-resource", "worker_node", *size],
        cwd=driver, env=env, capture_output=True, text=True, timeout=180,
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert json.loads(rendered.stdout.strip().splitlines()[-1])["chunks"] == 60
    assert np.array_equal(tifffile.imread(driver / "ray.tif"), tifffile.imread(tmp_path / "local.tif"))
    assert (driver / "ray.tif").read_bytes() == (tmp_path / "local.tif").read_bytes()

    probe = subprocess.run([sys.executable, "-c", _CLUSTER_PROBE, address], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    (worker_node,) = [node for node, names in seen["nodes"].items() if names == ["worker_node"]]
    assert len(seen["nodes"]) == 2
    # one worker per slot of the worker node (2 CPUs, 2 worker_node), none on the head; all closed
    assert seen["workers"] == [[worker_node, "DEAD", 0]] * 2
    # that node's processes run in its own folder, which holds no bundle, and use its temp folder
    assert seen["folders"] == [str(folders["node"]), str(folders["node-tmp"])]
    assert list(folders["node"].iterdir()) == [] and list(folders["head"].iterdir()) == []
    # the workers unpacked the bundle there (the planted folder went) and removed it: nothing is
    # left; nothing was unpacked on the head
    assert list(folders["node-tmp"].iterdir()) == []
    assert [p.name for p in folders["head-tmp"].iterdir()] == ["famos-worker-999999999-killed"]
