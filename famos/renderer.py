"""Render a bundle's canvas (or a region of it) to a tiled TIFF, chunk by chunk, in constant memory.

``Renderer`` holds one loaded bundle and serves any number of renders (the gRPC server keeps one
per model), in this process on one runner, or on the workers of a Ray cluster
(``famos.cluster.WorkerPool``). ``Renderer.task`` validates and plans a render once; ``strips``
runs it to raw row strips, ``encoded_strips`` to strips whose TIFF tiles are already compressed
(on the workers, for a cluster); ``render_tiff`` streams those into the TIFF writer and an
optional downscaled preview. What a request means on a model (size, region, chunk, resolution)
is resolved by ``famos.request.resolve``; the previews are ``famos.previews``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from famos import __version__
from famos.bundle import Bundle
from famos.canvas import to_unit_range
from famos.config import CanvasConfig
from famos.errors import BundleError
from famos.pipeline import ProgressCallback, pipelined_strips
from famos.memory import cpu_default_chunk
from famos.planning import ChunkPlan, Rect
from famos.chunk_loop import DEFAULT_CHUNK, RenderSettings, RenderTask, WindowInputs, plan_for
from famos.runners import RunnerOptions, open_runner
from famos.tiff_options import TiffOptions
from famos.tiff_writer import TiffReport, tile_format, write_encoded_tiff
from famos.tiles import EncodedStrip, TileCodec, encode_strips

if TYPE_CHECKING:
    from famos.cluster import WorkerPool

class Renderer:
    """A bundle ready to render on one backend and device, here or on a cluster's workers (which
    then run ``cluster.runner``'s backend and device; this process loads no runner)."""

    def __init__(self, bundle: Bundle, options: RunnerOptions = RunnerOptions(), *, cluster: WorkerPool | None = None):
        self.bundle = bundle
        self.cluster = cluster
        # resolved (a concrete backend and precision): every file it renders records them
        self.options = options.resolved() if cluster is None else cluster.runner
        self.spec = bundle.spec
        self.halo = bundle.manifest.halo  # the architecture's, checked against it when the bundle loaded
        self.run = open_runner(bundle, self.options) if cluster is None else None
        self._default_content: np.ndarray | None = None

    def canvas(self, size: tuple[int, int] | None) -> CanvasConfig:
        """The output canvas at ``size`` (height, width): the trained canvas with another extent.

        What makes another size look like the trained one (DESIGN.md, the paper): templates keep
        their style pixels per output pixel (style_scale, fold and offsets unchanged), the content
        is resampled onto the new canvas, ψ spans the new canvas, noise stays a function of global
        position. A format-1 bundle's graph has ψ for its trained canvas only."""
        trained = self.spec.canvas
        if size is None or size == (trained.height, trained.width):
            return trained
        if not self.bundle.manifest.takes_canvas():
            raise BundleError(
                f"{self.bundle.path}: a format-1 bundle renders only its trained canvas "
                f"({trained.width}x{trained.height}); export it again to render other sizes"
            )
        return dataclasses.replace(trained, height=size[0], width=size[1])

    def plan(self, settings: RenderSettings) -> ChunkPlan:
        """The chunks of ``settings`` on this model: geometry only, nothing decoded."""
        canvas = self.canvas(settings.size)
        region = (settings.region or Rect(0, 0, canvas.height, canvas.width)).check_inside(
            height=canvas.height, width=canvas.width
        )
        return plan_for(self.spec.generator, canvas, chunk_size=settings.chunk, region=region, halo=self.halo)

    def task(self, settings: RenderSettings, content: np.ndarray | None = None) -> RenderTask:
        """``settings`` on this model, with ``content`` (uint8 RGB; None: the bundle's own)."""
        canvas = self.canvas(settings.size)
        plan = self.plan(settings)
        inputs = self._inputs(canvas, content, seed=settings.seed)
        return RenderTask(settings, plan, inputs, self._provenance(settings, canvas, plan.region, content))

    def default_chunk(self, size: tuple[int, int] | None) -> int:
        """The chunk side at output ``size`` when none is asked for: on a GPU (torch backends)
        the largest whose window fits in half the free device memory (measured on a small window of
        the model's own inputs: it follows the architecture); on the CPU the largest whose window
        fits in half the available memory by the model's estimate, at most 1536
        (``famos.memory.cpu_default_chunk``); else ``DEFAULT_CHUNK``."""
        margin = self.halo.top + self.halo.bottom
        suggest = getattr(self.run, "suggest_chunk", None)
        measured = suggest(self._inputs(self.canvas(size), None, seed=0), margin=margin) if suggest else None
        if measured:
            return measured
        if self.options.device == "cpu":
            return cpu_default_chunk(self.spec.generator, margin)
        return DEFAULT_CHUNK

    def _inputs(self, canvas: CanvasConfig, content: np.ndarray | None, *, seed: int) -> WindowInputs:
        if content is None:
            if self._default_content is None:
                self._default_content = to_unit_range(self.bundle.default_content())
            unit = self._default_content
        else:
            unit = to_unit_range(content)
        return WindowInputs(config=self.spec.generator, canvas=canvas, content=unit, seed=seed)

    def strips(
        self,
        task: RenderTask,
        *,
        first_row: int = 0,
        cancel: threading.Event | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        """Raw row strips (uint8 (h, region width, 3)) of ``task`` from strip ``first_row`` on."""
        if self.cluster is not None:
            return self.cluster.strips(self.bundle, task, first_row=first_row, cancel=cancel, progress=progress)
        return pipelined_strips(
            task.plan,
            task.inputs,
            self.run,
            first_row=first_row,
            prepare_workers=task.settings.prepare_workers,
            queue_chunks=task.settings.queue_chunks,
            bits=task.settings.bits,
            cancel=cancel,
            progress=progress,
        )

    def encoded_strips(
        self,
        task: RenderTask,
        codec: TileCodec,
        *,
        first_row: int = 0,
        cancel: threading.Event | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[EncodedStrip]:
        """``task``'s strips from ``first_row`` on with their tiles encoded for ``codec``: by ``codec``'s
        threads here, by the workers on a cluster (the same bytes either way)."""
        if self.cluster is not None:
            return self.cluster.encoded_strips(
                self.bundle, task, codec.format, first_row=first_row, cancel=cancel, progress=progress
            )
        strips = self.strips(task, first_row=first_row, cancel=cancel, progress=progress)
        return encode_strips(strips, top=task.plan.row_top(first_row), height=task.region.height, codec=codec)

    def _provenance(
        self, settings: RenderSettings, canvas: CanvasConfig, region: Rect, content: np.ndarray | None
    ) -> dict[str, Any]:
        trained = self.spec.canvas
        return {
            "software": f"famos {__version__}",
            "model": self.bundle.path.name,
            "bundle_sha256": self.bundle.sha256,
            "seed": settings.seed,
            "canvas": {"width": canvas.width, "height": canvas.height},
            "trained_canvas": {"width": trained.width, "height": trained.height},
            "region": dataclasses.asdict(region),
            "content": "default" if content is None else hashlib.sha256(np.ascontiguousarray(content)).hexdigest(),
            "training_steps": self.bundle.manifest.provenance.get("steps"),
            # backends agree to float tolerance, not bit for bit: the file says which one made it
            # (not where: a cluster render is the same file as a local one)
            "backend": self.options.backend.value,
            "precision": self.options.precision.value,
        }


@dataclasses.dataclass(frozen=True)
class RenderReport:
    tiff: TiffReport
    width: int
    height: int
    chunks: int
    seconds: float
    # where the seconds went, as the writer's thread saw them: waiting for pixels (the device, or
    # input preparation), encoding tiles, writing; and the device's own busy time where known
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


class _Clock:
    """An iterator that adds up the seconds spent in its source's ``next``; ``close`` closes the source."""

    def __init__(self, source):
        self.source = source
        self._iterator = iter(source)
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self._iterator)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def render_tiff(
    renderer: Renderer,
    path: str | pathlib.Path,
    *,
    settings: RenderSettings = RenderSettings(),
    options: TiffOptions = TiffOptions(),
    content: np.ndarray | None = None,
    preview: str | pathlib.Path | None = None,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> RenderReport:
    """Render ``settings`` (with ``content``, uint8 RGB; None: the bundle's own) to a tiled TIFF at
    ``path``: ``render_tiff_task`` of the task, for callers that hold settings rather than a request."""
    task = renderer.task(dataclasses.replace(settings, bits=options.bits), content)
    return render_tiff_task(renderer, path, task, options, preview=preview, cancel=cancel, progress=progress)


def render_tiff_task(
    renderer: Renderer,
    path: str | pathlib.Path,
    task: RenderTask,
    options: TiffOptions,
    *,
    preview: str | pathlib.Path | None = None,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> RenderReport:
    """``task`` to a tiled TIFF at ``path`` (atomically) and optionally a preview PNG; the pixels
    have the file's bit depth (``options.bits``, which the task's settings carry)."""
    from famos.previews import overview_of_tiff, save_png

    region = task.region
    start = time.perf_counter()
    busy_before = getattr(renderer.run, "busy_seconds", None)
    with TileCodec(tile_format(options), encode_workers=options.encode_workers) as codec:
        if renderer.cluster is None:  # timed stage by stage (a cluster's stages run on its workers)
            pixels = _Clock(renderer.strips(task, cancel=cancel, progress=progress))
            tiles = _Clock(encode_strips(pixels, top=task.plan.row_top(0), height=region.height, codec=codec))
        else:
            pixels = None
            tiles = _Clock(renderer.encoded_strips(task, codec, cancel=cancel, progress=progress))
        try:
            report = write_encoded_tiff(
                path, tiles, height=region.height, width=region.width, options=options,
                description=task.description, codec=codec,
            )
        finally:
            # Stop the pipeline here, in this thread, whatever happened: a generator left to the
            # garbage collector would be finalized in whichever thread collects it, one of the
            # pipeline's own included, which would then wait for itself.
            tiles.close()
    seconds = time.perf_counter() - start
    if pixels is not None:
        timings = {"waiting_for_pixels": pixels.seconds, "encoding": tiles.seconds - pixels.seconds}
    else:  # the workers render and encode; this process waits for their strips, then writes them
        timings = {"waiting_for_workers": tiles.seconds}
    timings["writing"] = seconds - tiles.seconds
    if busy_before is not None:
        timings["device_busy"] = renderer.run.busy_seconds - busy_before
    if preview is not None:
        save_png(pathlib.Path(preview), overview_of_tiff(report.path))
    return RenderReport(report, region.width, region.height, len(task.plan.chunks), seconds,
                        {k: round(v, 3) for k, v in timings.items() if v is not None})
