"""Engines: what renders a batch's outputs, in this process or through a render server.

Both write with the same TIFF writer and options, so a print is the same file either way.
"""

from __future__ import annotations

import pathlib
from typing import Protocol

import numpy as np

from clients.batch.jobs_file import Canvases, Job, ModelRef, Output
from famos.bundle import Bundle, load_bundle
from famos.canvas import load_rgb
from famos.errors import UserError
from famos.renderer import Renderer, render_tiff
from famos.rendering import DEFAULT_CHUNK, RenderSettings
from famos.runners import RunnerOptions
from famos.tiff import TiffOptions
from famos.values import ModelInfo


class Engine(Canvases, Protocol):
    """What the batch needs from a renderer: canvases to validate against, and TIFFs."""

    def fingerprint(self, model: ModelRef) -> str:
        """Identifies the model's weights, so a re-exported bundle re-renders its outputs."""

    def render(self, job: Job, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        """Write ``output`` of ``job`` to ``path`` atomically (no file at ``path`` on failure)."""


class LocalEngine:
    """Renders in this process: one bundle load and one Renderer per distinct bundle. The ONNX
    runner needs no torch; the torch backends import it when asked for."""

    def __init__(self, *, runner: RunnerOptions = RunnerOptions(), chunk: int = DEFAULT_CHUNK, prepare_workers: int = 2):
        self.runner = runner
        self.chunk = chunk
        self.prepare_workers = prepare_workers
        self._bundles: dict[pathlib.Path, Bundle] = {}
        self._renderers: dict[pathlib.Path, Renderer] = {}
        self._contents: dict[pathlib.Path, np.ndarray] = {}

    def close(self) -> None:
        pass

    def bundle(self, model: ModelRef) -> Bundle:
        key = model.path.resolve()
        if key not in self._bundles:
            self._bundles[key] = load_bundle(key)
        return self._bundles[key]

    def renderer(self, model: ModelRef) -> Renderer:
        key = model.path.resolve()
        if key not in self._renderers:
            self._renderers[key] = Renderer(self.bundle(model), self.runner)
        return self._renderers[key]

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        canvas = self.bundle(model).spec.canvas
        return canvas.height, canvas.width

    def renders_any_size(self, model: ModelRef) -> bool:
        return self.bundle(model).manifest.takes_canvas()

    def fingerprint(self, model: ModelRef) -> str:
        return self.bundle(model).sha256

    def render(self, job: Job, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        settings = RenderSettings(
            seed=job.seed, chunk=self.chunk, region=output.region, size=(job.height, job.width),
            prepare_workers=self.prepare_workers,
        )
        render_tiff(self.renderer(job.model), path, settings=settings, options=options, content=self._content(job))

    def _content(self, job: Job) -> np.ndarray | None:
        if job.content is None:
            return None
        # panels of one job share the decoded image; only the last job's image is kept
        if job.content not in self._contents:
            self._contents = {job.content: load_rgb(job.content)}
        return self._contents[job.content]


class ServerEngine:
    """Renders through a render server with ``clients.render_client.RenderClient``: the model
    column's name is the server's model name, content images travel as their encoded bytes, and
    the TIFF is assembled here from the streamed chunks (so the same print conventions apply)."""

    def __init__(self, target: str, *, token: str | None = None, root_certificates: bytes | None = None):
        from clients.render_client import RenderClient  # grpc: only for batches through a server

        self.client = RenderClient(target, token=token, root_certificates=root_certificates)
        self._models: dict[str, ModelInfo] | None = None

    def close(self) -> None:
        self.client.close()

    def _model(self, model: ModelRef) -> ModelInfo:
        if self._models is None:
            self._models = {m.name: m for m in self.client.models()}
        if model.name not in self._models:
            served = ", ".join(sorted(self._models)) or "none"
            raise UserError(f"model {model.name!r} is not served (served: {served})")
        return self._models[model.name]

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        info = self._model(model)
        return info.canvas_height, info.canvas_width

    def renders_any_size(self, model: ModelRef) -> bool:
        return True  # ModelInfo does not say; the server refuses a format-1 model's other sizes in one line

    def fingerprint(self, model: ModelRef) -> str:
        return self._model(model).bundle_sha256

    def render(self, job: Job, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        self.client.render_to_tiff(
            job.model.name,
            path,
            seed=job.seed,
            region=output.region,
            size=(job.height, job.width),
            content=job.content.read_bytes() if job.content is not None else b"",
            options=options,
        )
