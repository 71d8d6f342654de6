"""The chunk loop: window inputs from the canvas, a runner for one window, row strips out.

Backend-neutral and torch-free: a runner is any ``famos.window.WindowRunner``. The pieces here
(``WindowInputs``, ``plan_for``, ``chunk_pixels``, ``StripAssembler``) are shared by the sequential
reference ``render_strips`` and its threaded twin ``famos.pipeline.pipelined_strips``, so the two
compute the same windows and assemble the same strips by construction. ``RenderSettings`` and
``RenderTask`` (a render validated and planned once) live here too: what a worker on another
machine needs to run strips of a render, without the renderer that planned it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from famos.canvas import content_window, to_pixels, window_noise
from famos.config import CanvasConfig, GeneratorConfig
from famos.errors import InvalidField
from famos.planning import Chunk, ChunkPlan, Halo, Rect, halo_for, plan_chunks
from famos.units import MAX_SIDE
from famos.window import WindowRunner


# Output chunk side. With the default architecture's 80/64 px halo, 2048 computes 1.07x the
# delivered pixels at 4096² and 1.13x at 16384² (1024: 1.22x and 1.28x). A window then takes about
# 10 GB for the default architecture in float32: fine on a GPU; small CPU machines pass --chunk 1024.
DEFAULT_CHUNK = 2048
MIN_CHUNK = 16


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    seed: int = 0
    chunk: int = DEFAULT_CHUNK
    region: Rect | None = None  # None: the whole output canvas
    size: tuple[int, int] | None = None  # (height, width) of the output canvas; None: the model's
    prepare_workers: int = 2
    queue_chunks: int = 4
    bits: int = 8  # of the delivered pixels: 8 (uint8) or 16 (uint16)

    def __post_init__(self) -> None:
        if self.size is not None and not (1 <= self.size[0] <= MAX_SIDE and 1 <= self.size[1] <= MAX_SIDE):
            raise InvalidField("size", f"{self.size[1]}x{self.size[0]} px: each side must be 1 to {MAX_SIDE}")
        if self.chunk < MIN_CHUNK:
            raise InvalidField("chunk", f"{self.chunk} is below the minimum of {MIN_CHUNK} pixels")
        if not -(2**63) <= self.seed < 2**63:
            raise InvalidField("seed", f"{self.seed}: must fit in 64 bits (what the noise and the API carry)")
        if self.bits not in (8, 16):
            raise InvalidField("bits", f"{self.bits}: use 8 or 16")
        if self.prepare_workers < 1:
            raise InvalidField("workers", f"{self.prepare_workers}: must be at least 1")


@dataclasses.dataclass(frozen=True)
class RenderTask:
    """One render, validated and planned once: what its strips, its TIFF and its progress share."""

    settings: RenderSettings
    plan: ChunkPlan
    inputs: WindowInputs
    description: dict[str, Any]  # provenance, written into the TIFF

    @property
    def region(self) -> Rect:
        return self.plan.region


class WindowInputs:
    """Computes the generator inputs for any window of the canvas (content, origin, noise)."""

    def __init__(self, *, config: GeneratorConfig, canvas: CanvasConfig, content: np.ndarray, seed: int):
        self.config = config
        self.canvas = canvas
        self.content = content  # float32 (Hc, Wc, 3) in [-1, 1]: any size, resampled per window
        self.seed = seed

    def __call__(self, window: Rect) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray]:
        """(content, origin, noise, canvas): the arguments of a ``WindowRunner`` for ``window``."""
        content = content_window(
            self.content, canvas_height=self.canvas.height, canvas_width=self.canvas.width, window=window
        )
        origin = np.array([[window.y, window.x]], dtype=np.int64)
        noise = window_noise(self.config, seed=self.seed, window=window)
        canvas = np.array([self.canvas.aligned(self.config.alignment)], dtype=np.int64)
        return content[None], origin, None if noise is None else noise[None], canvas


def plan_for(
    config: GeneratorConfig, canvas: CanvasConfig, *, chunk_size: int, region: Rect | None = None,
    halo: Halo | None = None,
) -> ChunkPlan:
    """The chunk plan of a model's canvas (default region: the whole delivered canvas); ``halo``
    is the architecture's (a bundle's manifest holds it, checked at load), derived when not given."""
    height, width = canvas.aligned(config.alignment)
    return plan_chunks(
        canvas_height=height,
        canvas_width=width,
        region=region or Rect(0, 0, canvas.height, canvas.width),
        chunk_size=chunk_size,
        halo=halo or halo_for(config),
        alignment=config.alignment,
    )


def chunk_output(chunk: Chunk, image: np.ndarray) -> np.ndarray:
    """The chunk's delivered float32 pixels (3, h, w): its window's output, halo cropped off."""
    crop = chunk.crop
    return image[0, :, crop.y : crop.bottom, crop.x : crop.right]


def chunk_pixels(chunk: Chunk, image: np.ndarray, *, bits: int = 8) -> np.ndarray:
    """The chunk's delivered pixels as (h, w, 3) of ``bits`` bits."""
    return to_pixels(chunk_output(chunk, image), bits=bits).transpose(1, 2, 0)


class StripAssembler:
    """Collects a plan's chunks (row-major) into row strips of the region."""

    def __init__(self, plan: ChunkPlan):
        self.last_col = plan.n_cols - 1
        self._row: list[np.ndarray] = []

    def add(self, chunk: Chunk, pixels: np.ndarray) -> np.ndarray | None:
        """The finished strip, uint8 (h, region width, 3), when ``chunk`` ends a row; else None."""
        self._row.append(pixels)
        if chunk.col != self.last_col:
            return None
        strip = np.concatenate(self._row, axis=1) if len(self._row) > 1 else self._row[0]
        self._row = []
        return strip


def render_chunks(plan: ChunkPlan, inputs: WindowInputs, run: WindowRunner) -> Iterator[tuple[Rect, np.ndarray]]:
    """Each chunk's output rectangle and its float32 (3, h, w) pixels, in row-major order."""
    for chunk in plan.chunks:
        yield chunk.output, chunk_output(chunk, run(*inputs(chunk.window)))


def render_strips(plan: ChunkPlan, inputs: WindowInputs, run: WindowRunner, *, bits: int = 8) -> Iterator[np.ndarray]:
    """Row strips of the region as (h, region width, 3) of ``bits`` bits, top to bottom: the reference."""
    strips = StripAssembler(plan)
    for chunk in plan.chunks:
        strip = strips.add(chunk, chunk_pixels(chunk, run(*inputs(chunk.window)), bits=bits))
        if strip is not None:
            yield strip
