"""Engines: what renders a batch's outputs, in this process or through a render server.

Both write with the same TIFF writer and options, so a print is the same file either way.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Protocol

import numpy as np

from famos.clients.batch.fields import ModelRef
from famos.clients.batch.planning import Canvases, Output, PrintJob
from famos.bundle import Bundle, load_bundle
from famos.errors import UserError
from famos.renderer import Renderer, render_tiff_task
from famos.request import Admission, admission
from famos.runners import RunnerOptions
from famos.tiff_options import TiffOptions
from famos.values import ModelInfo


class Engine(Canvases, Protocol):
    """What the batch needs from a renderer: canvases to validate against, and TIFFs."""

    def fingerprint(self, model: ModelRef) -> str:
        """Identifies the model's weights, so a re-exported bundle re-renders its outputs."""

    def noise_channels(self, model: ModelRef) -> int:
        """Seeded noise channels the model takes (0: its seed changes nothing)."""

    def render(self, job: PrintJob, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        """Write ``output`` of ``job`` to ``path`` atomically (no file at ``path`` on failure)."""


class LocalEngine:
    """Renders in this process: one bundle load and one Renderer per distinct bundle. The ONNX
    runner needs no torch; the torch backends import it when asked for."""

    def __init__(self, *, runner: RunnerOptions = RunnerOptions(), chunk: int | None = None,
                 prepare_workers: int | None = None):
        """``chunk`` and ``prepare_workers`` None: the device's defaults (``famos.request.admission``)."""
        self.runner = runner
        self.chunk = chunk
        self.prepare_workers = prepare_workers
        self._bundles: dict[pathlib.Path, Bundle] = {}
        self._renderers: dict[pathlib.Path, Renderer] = {}
        self._content: tuple[bytes, np.ndarray] | None = None  # (digest, decoded): see _decoded

    def close(self) -> None:
        self._content = None

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

    def noise_channels(self, model: ModelRef) -> int:
        return self.bundle(model).spec.generator.noise.channels

    def render(self, job: PrintJob, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        renderer = self.renderer(job.model)
        admitted = admission(job.request(output, options), renderer, prepare_workers=self.prepare_workers,
                             default_chunk=self.chunk)
        render = admitted.resolved(self._decoded(admitted))
        render_tiff_task(renderer, path, render.task, render.tiff)

    def _decoded(self, admitted: Admission) -> np.ndarray | None:
        """The request's content image, decoded once for the rows and panels in a row that share it
        (a mural's panels are one content image): the last one is kept, keyed by its bytes' digest."""
        data = admitted.request.content
        if not data:
            return None
        key = hashlib.sha256(data).digest()
        if self._content is None or self._content[0] != key:
            self._content = None  # the old image is let go before the new one is decoded
            self._content = (key, admitted.decoded_content())
        return self._content[1]


class ServerEngine:
    """Renders through a render server with ``famos.clients.render_client.RenderClient``: the model
    column's name is the server's model name, content images travel as their encoded bytes, and
    the TIFF is assembled here from the streamed chunks (so the same print conventions apply)."""

    def __init__(self, target: str, *, token: str | None = None, root_certificates: bytes | None = None):
        from famos.clients.render_client import RenderClient  # grpc: only for batches through a server

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

    def noise_channels(self, model: ModelRef) -> int:
        return self._model(model).noise_channels

    def render(self, job: PrintJob, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        self.client.render_to_tiff(job.request(output, options), path)
