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
