"""Render a bundle's canvas (or a region of it) to a tiled TIFF, chunk by chunk, in constant memory.

``Renderer`` holds one loaded bundle on one backend/device and serves any number of renders
(the gRPC server keeps one per model); ``render_tiff`` streams its strips into the TIFF writer and
an optional downscaled preview.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from famos import __version__
from famos.canvas import to_unit_range
from famos.errors import UserError
from famos.planning import ChunkPlan, Rect
from famos.rendering import WindowInputs, plan_for
from famos.tiff import TiffOptions, TiffReport, write_tiled_tiff
from render_server.pipeline import ProgressCallback, pipelined_strips

# Output chunk side. With the default architecture's 80/64 px halo, 2048 computes 1.07x the
# delivered pixels at 4096² and 1.13x at 16384² (1024: 1.22x and 1.28x). A window then takes about
# 10 GB for the default architecture in float32: fine on a GPU; small CPU machines pass --chunk 1024.
DEFAULT_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    seed: int = 0
    chunk: int = DEFAULT_CHUNK
    region: Rect | None = None  # None: the whole delivered canvas
    prepare_workers: int = 2
    queue_chunks: int = 4

    def __post_init__(self) -> None:
        if self.chunk < 16:
            raise UserError(f"chunk = {self.chunk}: must be at least 16 pixels")


def parse_region(text: str) -> Rect:
    """``X,Y,W,H`` in canvas pixels."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"region {text!r}: expected X,Y,W,H (four integers)") from None
    return Rect(y=y, x=x, height=h, width=w)


class Renderer:
    """A bundle ready to render on one backend and device."""

    def __init__(self, bundle, *, backend=None, device: str = "cpu", fp16: bool = False):
        from export.bundle import Backend

        self.bundle = bundle
        self.backend = backend or Backend.ONNX
        self.device = device
        self.spec = bundle.spec
        self.run = bundle.runner(self.backend, device=device, fp16=fp16)
        self._default_content: np.ndarray | None = None

    @property
    def canvas_size(self) -> tuple[int, int]:
        return self.spec.canvas.height, self.spec.canvas.width

    def plan(self, settings: RenderSettings) -> ChunkPlan:
        canvas = self.spec.canvas
        region = settings.region or Rect(0, 0, canvas.height, canvas.width)
        inside = Rect(0, 0, canvas.height, canvas.width)
        if region.height < 1 or region.width < 1 or not inside.contains(region):
            raise UserError(
                f"region {region.x},{region.y},{region.width},{region.height} is empty or outside "
                f"the canvas {canvas.width}x{canvas.height}"
            )
        return plan_for(self.spec.generator, canvas, chunk_size=settings.chunk, region=region)

    def inputs(self, settings: RenderSettings, content: np.ndarray | None = None) -> WindowInputs:
        if content is None:
            if self._default_content is None:
                self._default_content = to_unit_range(self.bundle.default_content())
            unit = self._default_content
        else:
            unit = to_unit_range(content)
        return WindowInputs(config=self.spec.generator, canvas=self.spec.canvas, content=unit, seed=settings.seed)

    def strips(
        self,
        settings: RenderSettings,
        *,
        content: np.ndarray | None = None,
        first_row: int = 0,
        cancel: threading.Event | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        return pipelined_strips(
            self.plan(settings),
            self.inputs(settings, content),
            self.run,
            first_row=first_row,
            prepare_workers=settings.prepare_workers,
            queue_chunks=settings.queue_chunks,
            cancel=cancel,
            progress=progress,
        )

    def provenance(self, settings: RenderSettings, content: np.ndarray | None) -> dict[str, Any]:
        plan_region = self.plan(settings).region
        manifest = self.bundle.manifest
        return {
            "software": f"famos {__version__}",
            "model": self.bundle.path.name,
            "bundle_sha256": self.bundle.sha256,
            "seed": settings.seed,
            "canvas": {"width": self.spec.canvas.width, "height": self.spec.canvas.height},
            "region": dataclasses.asdict(plan_region),
            "content": "default" if content is None else hashlib.sha256(np.ascontiguousarray(content)).hexdigest(),
            "training_steps": (getattr(manifest, "provenance", None) or {}).get("steps"),
        }


@dataclasses.dataclass(frozen=True)
class RenderReport:
    tiff: TiffReport
    width: int
    height: int
    chunks: int
    seconds: float


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
    """Render ``settings.region`` to a tiled TIFF at ``path`` (atomically) and optionally a preview PNG."""
    import time

    plan = renderer.plan(settings)
    region = plan.region
    overview = Overview(height=region.height, width=region.width) if preview else None
    strips = renderer.strips(settings, content=content, cancel=cancel, progress=progress)
    if overview is not None:
        strips = map(overview.feed, strips)
    start = time.perf_counter()
    report = write_tiled_tiff(
        path,
        strips,
        height=region.height,
        width=region.width,
        options=options,
        description=renderer.provenance(settings, content),
    )
    if overview is not None:
        from PIL import Image

        _save_png_atomically(Image.fromarray(overview.image()), pathlib.Path(preview))
    return RenderReport(report, region.width, region.height, len(plan.chunks), time.perf_counter() - start)


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

    region = renderer.plan(settings).region
    if region.pixels > max_pixels:
        raise UserError(f"PNG output holds the image in memory: {region.pixels} pixels > {max_pixels}; use .tif")
    image = np.concatenate(list(renderer.strips(settings, content=content)))
    _save_png_atomically(Image.fromarray(image), pathlib.Path(path))


def _save_png_atomically(image, path: pathlib.Path) -> None:
    from famos.files import atomic_output

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
        }
    )
