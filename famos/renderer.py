"""Render a bundle's canvas (or a region of it) to a tiled TIFF, chunk by chunk, in constant memory.

``Renderer`` holds one loaded bundle and serves any number of renders (the gRPC server keeps one
per model), in this process on one runner, or on the workers of a Ray cluster
(``famos.cluster.WorkerPool``). ``Renderer.task`` validates and plans a render once; ``strips``
runs it to raw row strips, ``encoded_strips`` to strips whose TIFF tiles are already compressed
(on the workers, for a cluster); ``render_tiff`` streams those into the TIFF writer and an
optional downscaled preview.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from famos import __version__
from famos.bundle import Bundle
from famos.canvas import as_uint8, to_unit_range
from famos.config import CanvasConfig
from famos.errors import BundleError, UserError
from famos.files import atomic_output
from famos.icc import to_srgb
from famos.pipeline import ProgressCallback, pipelined_strips
from famos.planning import Rect, halo_for
from famos.rendering import DEFAULT_CHUNK, RenderSettings, RenderTask, WindowInputs, plan_for
from famos.runners import RunnerOptions, open_runner
from famos.tiff import TiffOptions, TiffReport, tile_format, write_encoded_tiff
from famos.tiles import EncodedStrip, TileCodec, encode_strips

if TYPE_CHECKING:
    from famos.cluster import WorkerPool

class Renderer:
    """A bundle ready to render on one backend and device, here or on a cluster's workers (which
    then run ``cluster.runner``'s backend and device; this process loads no runner)."""

    def __init__(self, bundle: Bundle, options: RunnerOptions = RunnerOptions(), *, cluster: WorkerPool | None = None):
        self.bundle = bundle
        self.cluster = cluster
        self.options = options if cluster is None else cluster.runner
        self.spec = bundle.spec
        self.run = open_runner(bundle, options) if cluster is None else None
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

    def task(self, settings: RenderSettings, content: np.ndarray | None = None) -> RenderTask:
        """``settings`` on this model, with ``content`` (uint8 RGB; None: the bundle's own)."""
        canvas = self.canvas(settings.size)
        region = (settings.region or Rect(0, 0, canvas.height, canvas.width)).check_inside(
            height=canvas.height, width=canvas.width
        )
        plan = plan_for(self.spec.generator, canvas, chunk_size=settings.chunk, region=region)
        if content is None:
            if self._default_content is None:
                self._default_content = to_unit_range(self.bundle.default_content())
            unit = self._default_content
        else:
            unit = to_unit_range(content)
        inputs = WindowInputs(config=self.spec.generator, canvas=canvas, content=unit, seed=settings.seed)
        return RenderTask(settings, plan, inputs, self._provenance(settings, canvas, region, content))

    def default_chunk(self, settings: RenderSettings) -> int:
        """The chunk side for ``settings`` when none is asked for: on a GPU the largest whose window
        fits in half the free device memory (measured on a small window: it follows the
        architecture), elsewhere ``DEFAULT_CHUNK``."""
        suggest = getattr(self.run, "suggest_chunk", None)
        if suggest is None:
            return DEFAULT_CHUNK
        halo = halo_for(self.spec.generator)
        return suggest(self.task(settings).inputs, margin=halo.top + halo.bottom) or DEFAULT_CHUNK

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


class Overview:
    """A downscaled preview built strip by strip (box filter), never holding the canvas."""

    def __init__(self, *, height: int, width: int, max_side: int = 1024):
        self.factor = max(1, math.ceil(max(height, width) / max_side))
        self.width = width
        self.rows: list[np.ndarray] = []
        self.pending = np.zeros((0, width, 3), dtype=np.uint8)

    def feed(self, strip: np.ndarray) -> np.ndarray:
        rows = np.concatenate([self.pending, strip]) if len(self.pending) else strip
        full = len(rows) - len(rows) % self.factor
        if full:
            self.rows.append(self._reduce(rows[:full]))
        self.pending = rows[full:].copy()
        return strip

    def image(self) -> np.ndarray:
        if len(self.pending):
            self.rows.append(self._reduce(self.pending))
            self.pending = self.pending[:0]
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 0, 3), np.uint8)

    def _reduce(self, rows: np.ndarray) -> np.ndarray:
        f = self.factor
        h, w = math.ceil(len(rows) / f), math.ceil(self.width / f)
        padded = np.pad(rows, ((0, h * f - len(rows)), (0, w * f - self.width), (0, 0)), mode="edge")
        return padded.reshape(h, f, w, f, 3).mean(axis=(1, 3)).round().astype(np.uint8)


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
    """Render ``settings.region`` to a tiled TIFF at ``path`` (atomically) and optionally a preview PNG;
    the pixels have the file's bit depth (``options.bits``)."""
    task = renderer.task(dataclasses.replace(settings, bits=options.bits), content)
    region = task.region
    start = time.perf_counter()
    busy_before = getattr(renderer.run, "busy_seconds", None)
    with TileCodec(tile_format(options), workers=options.workers) as codec:
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
    timings = {"waiting_for_pixels": pixels.seconds if pixels else None,
               "encoding": tiles.seconds - pixels.seconds if pixels else tiles.seconds,
               "writing": seconds - tiles.seconds}
    if busy_before is not None:
        timings["device_busy"] = renderer.run.busy_seconds - busy_before
    if preview is not None:
        from PIL import Image

        _save_png_atomically(Image.fromarray(overview_of_tiff(report.path)), pathlib.Path(preview))
    return RenderReport(report, region.width, region.height, len(task.plan.chunks), seconds,
                        {k: round(v, 3) for k, v in timings.items() if v is not None})


def trained_resolution(bundle: Bundle, options: TiffOptions) -> TiffOptions:
    """``options`` with the resolution of the print size the model was trained for, when it was
    trained for one and ``options`` ask for no DPI: the textures keep their physical size on paper
    (an output 2x the canvas prints 2x as large). Otherwise ``options`` unchanged."""
    trained = bundle.manifest.provenance.get("print")
    if options.dpi is not None or not isinstance(trained, dict) or not trained.get("size"):
        return options
    from famos.tiff import ResolutionUnit
    from famos.units import dpi_for_print_size, is_metric, parse_print_size

    canvas = bundle.spec.canvas
    text = str(trained["size"])
    try:
        dpi = dpi_for_print_size(width_px=canvas.width, height_px=canvas.height, print_size=parse_print_size(text))
    except (UserError, ValueError):
        return options  # a record this code cannot read: the documented default applies
    return dataclasses.replace(options, dpi=dpi, unit=ResolutionUnit.CM if is_metric(text) else options.unit)


def overview_of_tiff(path: pathlib.Path, *, max_side: int = 1024) -> np.ndarray:
    """A box-filtered overview of a tiled TIFF's full-resolution image, read a tile row at a time
    (the tiles may have been made on other machines: the file is what there is to look at)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        height, width = page.shape[:2]
        tile_height, tile_width = page.tilelength, page.tilewidth
        across = -(-width // tile_width)
        overview = Overview(height=height, width=width, max_side=max_side)
        band = np.empty((tile_height, across * tile_width, 3), np.uint8)
        # a file converted to a shop's profile is shown through it: a soft proof of the print
        proof = page.tags["InterColorProfile"].value if page.samplesperpixel == 4 else None
        for k, (tile, _, _) in enumerate(page.segments()):
            x = k % across * tile_width
            band[:, x : x + tile_width] = as_uint8(tile[0]) if proof is None else to_srgb(tile[0], bytes(proof))
            if k % across == across - 1:
                top = k // across * tile_height
                overview.feed(band[: min(tile_height, height - top), :width])
        return overview.image()


def render_png(
    renderer: Renderer,
    path: str | pathlib.Path,
    *,
    settings: RenderSettings = RenderSettings(),
    content: np.ndarray | None = None,
    max_pixels: int = 64 * 2**20,
) -> None:
    """Small canvases only: the whole image is held in memory for the PNG encoder."""
    from PIL import Image

    task = renderer.task(settings, content)
    if task.region.pixels > max_pixels:
        raise UserError(f"PNG output holds the image in memory: {task.region.pixels} pixels > {max_pixels}; use .tif")
    image = np.concatenate(list(renderer.strips(task)))
    _save_png_atomically(Image.fromarray(image), pathlib.Path(path))


def _save_png_atomically(image, path: pathlib.Path) -> None:
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")


def describe(report: RenderReport) -> str:
    mp = report.width * report.height / 1e6
    return json.dumps(
        {
            "path": str(report.tiff.path),
            "width": report.width,
            "height": report.height,
            "megapixels": round(mp, 3),
            "bytes": report.tiff.bytes_written,
            "bigtiff": report.tiff.bigtiff,
            "chunks": report.chunks,
            "seconds": round(report.seconds, 2),
            "timings": report.timings,
        }
    )
