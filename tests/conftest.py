"""Shared fixtures: tiny models with random weights and randomized BatchNorm statistics."""

from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_configure(config):
    # Files carry a DateTime tag; a fixed one (the reproducible-builds convention famos honours)
    # lets the tests compare renders made at different moments byte for byte.
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01 00:00:00 UTC


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run where torch sees a CUDA device (bench/gpu_check.py runs them there)."""
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU machine: bench/gpu_check.py)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


torch = pytest.importorskip("torch")

from famos.canvas import to_unit_range  # noqa: E402
from famos.config import CanvasConfig, GeneratorConfig  # noqa: E402


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Eval-mode BatchNorm with non-trivial running statistics, so exactness tests can fail."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


def random_styles(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (48, 72, 3), dtype=np.uint8),
        rng.integers(0, 256, (37, 29, 3), dtype=np.uint8),
    ]


def random_content(seed: int = 1, shape=(90, 130)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return to_unit_range(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))


def tiny_model(config: GeneratorConfig, canvas: CanvasConfig, seed: int = 0):
    from famos.generator import build_generator

    torch.manual_seed(seed)
    model = build_generator(config, canvas, random_styles(seed))
    randomize_batchnorm(model, seed)
    return model.eval()


def write_checkpoint(path, model, *, content: np.ndarray | None = None, step: int = 0, provenance: dict | None = None) -> None:
    """A checkpoint as `famos train` writes it, for a (random-weight) generator."""
    from famos.checkpoint import save_generator

    if content is None:
        rng = np.random.default_rng(5)
        content = rng.integers(0, 256, (model.canvas.height // 2 + 3, model.canvas.width // 2 + 5, 3), dtype=np.uint8)
    sizes = [tuple(s.shape[:2]) for s in random_styles(0)]
    save_generator(path, model, style_sizes=sizes, content=content, step=step, provenance=provenance)


def make_bundle(folder, config: GeneratorConfig, canvas: CanvasConfig, *, seed: int = 0, provenance: dict | None = None):
    """Export a tiny random-weight model to a bundle folder with `famos export`; returns its path."""
    import pathlib

    from famos.cli import main

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "model.safetensors"
    write_checkpoint(ckpt, tiny_model(config, canvas, seed), provenance=provenance)
    bundle = folder / "bundle"
    assert main(["export", str(ckpt), "--out", str(bundle)]) == 0
    return bundle


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 20000 x 10000 pixels: Pillow refuses it as a decompression bomb."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", 20000, 10000)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return bytes(data)


@pytest.fixture
def certificate(tmp_path):
    """A self-signed PEM certificate and key for localhost / 127.0.0.1 (openssl command)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


SERVER_MODEL = "tiny"


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """A `famos serve --models` folder with one tiny bundle named SERVER_MODEL (canvas 160x96),
    built once for every server, client and batch-through-server test."""
    import shutil

    from famos.config import Fold, NoiseConfig

    folder = tmp_path_factory.mktemp("models")
    config = GeneratorConfig(depth=2, width=4, n_templates=2, noise=NoiseConfig(n_local=1, n_periodic=1))
    bundle = make_bundle(folder / "export", config, CanvasConfig(96, 160, fold=Fold.MIRROR, template_seed=2))
    shutil.move(bundle, folder / SERVER_MODEL)
    shutil.rmtree(folder / "export")
    return folder


@pytest.fixture
def serve_viewer():
    """Starts viewers over ``images`` (identifier -> image source) on free loopback ports; stops
    them and closes their images after the test."""
    from famos.viewer.cli import FileCatalog
    from famos.viewer.server import ViewerConfig, ViewerServer

    started = []

    def start(images: dict, **config):
        server = ViewerServer(FileCatalog(images), ViewerConfig(host="127.0.0.1", port=0, **config))
        server.start()
        started.append((server, images))
        return server

    yield start
    for server, images in started:
        server.stop()
        for image in images.values():
            image.close()


@pytest.fixture
def start_render_server(tmp_path):
    """Starts in-process render servers (each with an output store of its own) on free loopback
    ports; stops them after the test."""
    from famos.render_server.server import RenderServer, ServerConfig

    servers = []

    def start(models, **overrides):
        output = tmp_path / f"store{len(servers)}"
        output.mkdir()
        server = RenderServer(ServerConfig(models=models, output=output, port=0, **overrides))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0)
