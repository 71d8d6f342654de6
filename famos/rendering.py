"""The chunk loop: window inputs from the canvas, a backend that runs one window, strips out.

Backend-neutral and torch-free: a backend is any callable ``run(content, origin, noise) -> image``
on numpy arrays (eager PyTorch, TorchScript, onnxruntime). The render server's pipeline adds
threads and queues around the same pieces; this sequential loop is the reference it must equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Optional

import numpy as np

from famos.canvas import content_window, noise_window, to_uint8
from famos.config import CanvasConfig, GeneratorConfig
from famos.planning import ChunkPlan, Rect, halo_for, noise_level, plan_chunks

@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a render is: what the pipeline reports, the server streams and clients display."""

    chunks_done: int
    chunks_total: int
    pixels_done: int  # delivered pixels
    pixels_total: int
    seconds: float

    @property
    def fraction(self) -> float:
        return self.pixels_done / self.pixels_total if self.pixels_total else 1.0

    @property
    def megapixels_per_second(self) -> float:
        return self.pixels_done / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float:
        rate = self.pixels_done / self.seconds if self.seconds > 0 else 0.0
        return (self.pixels_total - self.pixels_done) / rate if rate > 0 else float("inf")


WindowRunner = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray]], np.ndarray]


class WindowInputs:
    """Computes the generator inputs for any window of the canvas (content, origin, noise)."""

    def __init__(self, *, config: GeneratorConfig, canvas: CanvasConfig, content: np.ndarray, seed: int):
        self.config = config
        self.canvas = canvas
        self.content = content  # float32 (Hc, Wc, 3) in [-1, 1]: any size, resampled per window
        self.seed = seed

    def __call__(self, window: Rect) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        content = content_window(
            self.content, canvas_height=self.canvas.height, canvas_width=self.canvas.width, window=window
        )
        origin = np.array([[window.y, window.x]], dtype=np.int64)
        noise = None
        if self.config.noise.channels:
            cell = 2 ** noise_level(self.config)
            noise = noise_window(
                self.config.noise,
                seed=self.seed,
                cell_y=window.y // cell,
                cell_x=window.x // cell,
                height=window.height // cell,
                width=window.width // cell,
            )[None]
        return content[None], origin, noise


def plan_for(
    config: GeneratorConfig, canvas: CanvasConfig, *, chunk_size: int, region: Rect | None = None
) -> ChunkPlan:
    """The chunk plan of a model's canvas (default region: the whole delivered canvas)."""
    height, width = canvas.aligned(config.alignment)
    return plan_chunks(
        canvas_height=height,
        canvas_width=width,
        region=region or Rect(0, 0, canvas.height, canvas.width),
        chunk_size=chunk_size,
        halo=halo_for(config),
        alignment=config.alignment,
    )


def render_chunks(plan: ChunkPlan, inputs: WindowInputs, run: WindowRunner) -> Iterator[tuple[Rect, np.ndarray]]:
    """Each chunk's output rectangle and its float32 (3, h, w) pixels, in row-major order."""
    for chunk in plan.chunks:
        image = run(*inputs(chunk.window))[0]
        crop = chunk.crop
        yield chunk.output, image[:, crop.y : crop.bottom, crop.x : crop.right]


def render_strips(plan: ChunkPlan, inputs: WindowInputs, run: WindowRunner) -> Iterator[np.ndarray]:
    """Row strips of the region as uint8 (h, region width, 3), top to bottom."""
    strip: list[np.ndarray] = []
    for rect, pixels in render_chunks(plan, inputs, run):
        strip.append(to_uint8(pixels).transpose(1, 2, 0))
        if rect.right == plan.region.right:
            yield np.concatenate(strip, axis=1)
            strip = []
