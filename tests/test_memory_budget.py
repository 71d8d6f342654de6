"""The memory budget holds against the attacks that once exhausted the machine, measured on a real
`famos serve` process (its peak resident memory, VmHWM), through real gRPC on loopback."""

from __future__ import annotations

import io
import pathlib
import re
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest
from PIL import Image

from conftest import SERVER_MODEL

BUDGET = 1536 * 2**20


def peak_rss(pid: int) -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", pathlib.Path(f"/proc/{pid}/status").read_text())[1]) * 1024


@pytest.fixture
def serve(models, tmp_path):
    if not pathlib.Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's peak memory")
    process = subprocess.Popen(
        [sys.executable, "-m", "famos.cli", "serve", "--models", str(models), "--output", str(tmp_path),
         "--port", "0", "--workers", "8", "--max-memory", f"{BUDGET >> 20}M"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = process.stdout.readline()
    address = line.rsplit(" ", 1)[-1].strip()
    assert line.startswith("famos serve: listening on"), line
    yield process, address
    process.terminate()
    process.wait(30)


def test_eight_huge_content_images_at_once_stay_within_the_budget(serve):
    """8 concurrent 8192² PNGs of zeros (196 KB each) once took the server to 12.4 GB: each needs
    about 1.2 GB decoded, so the budget admits one at a time and refuses the others at once."""
    from famos.clients.convert import ServerError
    from famos.clients.render_client import RenderClient

    process, address = serve
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8192, 8192, 3), np.uint8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    before = peak_rss(process.pid)
    outcomes: list[str] = []

    def render() -> None:
        with RenderClient(address) as client:
            try:
                list(client.render(SERVER_MODEL, content=png, chunk=64))
                outcomes.append("ok")
            except ServerError as err:
                outcomes.append(err.code.name)

    threads = [threading.Thread(target=render) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert "ok" in outcomes and set(outcomes) <= {"ok", grpc.StatusCode.RESOURCE_EXHAUSTED.name}, outcomes
    assert outcomes.count("RESOURCE_EXHAUSTED") >= 1
    assert peak_rss(process.pid) < before + BUDGET + 256 * 2**20, (before, peak_rss(process.pid))


def test_a_render_that_could_never_fit_is_refused_with_the_budget_named(serve):
    from famos.clients.convert import ServerError
    from famos.clients.render_client import RenderClient

    _, address = serve
    with RenderClient(address) as client:
        with pytest.raises(ServerError) as err:
            client.submit(SERVER_MODEL, size=(96, 100_000), chunk=2048)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-memory" in err.value.details


def test_the_cpu_default_chunk_follows_available_memory():
    """Half the available memory holds the window by the render estimate; at most 1536 (the fastest
    measured), in steps of 256 (a little more or less free memory keeps the plan), at least 256."""
    from famos.config import GeneratorConfig
    from famos.memory import CPU_MAX_CHUNK, cpu_default_chunk, window_bytes_per_pixel

    paper = GeneratorConfig()
    assert cpu_default_chunk(paper, 144, available=64 << 30) == CPU_MAX_CHUNK
    four_gb = cpu_default_chunk(paper, 144, available=4 << 30)
    assert four_gb % 256 == 0 and four_gb < CPU_MAX_CHUNK
    assert (four_gb + 144) ** 2 * window_bytes_per_pixel(paper) <= 2 << 30
    assert (four_gb + 256 + 144) ** 2 * window_bytes_per_pixel(paper) > 2 << 30
    assert cpu_default_chunk(paper, 144, available=4 << 30) == cpu_default_chunk(paper, 144, available=(4 << 30) + (50 << 20))
    assert cpu_default_chunk(paper, 144, available=1 << 20) == 256


def test_a_cpu_render_takes_the_memory_chunk(tmp_path):
    from conftest import make_bundle
    from famos.bundle import load_bundle
    from famos.config import CanvasConfig, GeneratorConfig
    from famos.renderer import Renderer
    from famos.memory import cpu_default_chunk

    config = GeneratorConfig(depth=2, width=4, n_templates=2)
    renderer = Renderer(load_bundle(make_bundle(tmp_path, config, CanvasConfig(64, 64))))
    halo = renderer.halo
    assert renderer.default_chunk(None) == cpu_default_chunk(config, halo.top + halo.bottom)


def test_a_stream_waiting_for_a_worker_holds_no_memory(models, start_render_server):
    """One worker busy with a slow render: a second stream waits for it without reserving its
    memory (which a job could use meanwhile), reserves once it runs, and both finish."""
    import time

    from famos.clients.render_client import RenderClient
    from test_server import slow_down

    server = start_render_server(models, workers=1, max_queue=1)
    slow_down(server, 0.3)
    held: list[int] = []

    def render() -> None:
        with RenderClient(f"127.0.0.1:{server.port}") as client:
            list(client.render(SERVER_MODEL, chunk=32))

    first = threading.Thread(target=render)
    first.start()
    while not server.budget.held:
        time.sleep(0.01)
    one = server.budget.held
    second = threading.Thread(target=render)
    second.start()
    while not server.slots.waiting:
        time.sleep(0.01)
    held.append(server.budget.held)  # the second is waiting now
    first.join()
    second.join()
    assert held == [one], "a waiting stream reserved memory"
    assert server.budget.held == 0


def test_a_job_submission_decodes_its_content_within_the_budget(models, start_render_server):
    """SubmitJob checks its content image by decoding it, inside a reservation of what decoding
    holds: with the budget full, the submission is told to retry instead of decoding beside it."""
    from famos.clients.convert import ServerError
    from famos.clients.render_client import RenderClient
    from famos.request import Estimate

    server = start_render_server(models)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(buffer, format="PNG")
    with server.budget.holding(wait=False) as everything:
        everything.take(Estimate(1, 1, 1, 0, server.budget.total))
        with RenderClient(f"127.0.0.1:{server.port}") as client, pytest.raises(ServerError) as err:
            client.submit(SERVER_MODEL, output_name="busy.tif", content=buffer.getvalue())
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in err.value.details, err.value
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ServerError) as err:
            client.submit(SERVER_MODEL, output_name="broken.tif", content=buffer.getvalue()[:-200])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value  # still refused at submission
        job = client.submit(SERVER_MODEL, output_name="fine.tif", content=buffer.getvalue())
        assert client.wait(job.id).state.value == "succeeded"


def test_the_servers_viewer_draws_from_the_render_budget_with_its_own_limits(models, start_render_server):
    """`famos serve --http` with --viewer-max-size: info.json states the limit, and an image answer
    reserves its memory from the renders' budget (503 while renders hold it all)."""
    import json
    import urllib.error
    import urllib.request

    from famos.clients.render_client import RenderClient
    from famos.request import Estimate
    from famos.viewer.iiif import OutputLimits

    server = start_render_server(models, http_port=0, viewer_limits={
        "limits": OutputLimits(max_width=64, max_height=64, max_area=64 * 64), "max_connections": 4, "read_timeout": 5.0})
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        job = client.submit(SERVER_MODEL, output_name="seen.tif")
        client.wait(job.id)
    base = f"{server.viewer.url}iiif/3/{job.id}"
    info = json.loads(urllib.request.urlopen(f"{base}/info.json", timeout=10).read())
    assert (info["maxWidth"], info["maxArea"]) == (64, 64 * 64)
    tile = f"{base}/0,0,32,32/32,/0/default.png"
    with server.budget.holding(wait=False) as everything:
        everything.take(Estimate(1, 1, 1, 0, server.budget.total))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(tile, timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert "server busy" in refused.value.read().decode()
    assert urllib.request.urlopen(tile, timeout=10).status == 200
    assert server.budget.held == 0


@pytest.mark.parametrize("option, value, needle", [
    ("--viewer-max-size", "0", "--viewer-max-size: must be a whole number of pixels from 1"),
    ("--viewer-max-connections", "0", "--viewer-max-connections: must be at least 1"),
    ("--viewer-read-timeout", "nan", "--viewer-read-timeout: must be above 0"),
])
def test_the_viewer_limits_of_famos_serve_are_checked_in_one_line(tmp_path, capsys, option, value, needle):
    from famos.cli import main

    assert main(["serve", "--models", str(tmp_path), "--output", str(tmp_path / "out"), "--port", "0",
                 "--http", "0", option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
