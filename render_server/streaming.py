"""A render request turned into checked domain objects, and a streamed render as events.

Shared by streamed renders and jobs: ``prepare`` validates a ``RenderSpec`` against the model and
the server limits (naming the offending field), ``stream_render`` yields ``Started``, then each
strip as ``Piece``s of bounded size and a ``Progress``.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Iterator

import numpy as np

from famos.planning import ChunkPlan, Rect
from famos.rendering import Progress
from render_server.errors import InvalidArgument, ResourceExhausted
from render_server.models import ModelStore
from render_server.render import RenderSettings

MIN_CHUNK = 16


@dataclasses.dataclass(frozen=True)
class Limits:
    max_pixels: int  # of a rendered region
    max_content_pixels: int  # of a decoded content image
    default_chunk: int
    piece_bytes: int = 1 << 20  # pixel payload of one streamed message


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    """What a client asks to render; ``content_image`` is an encoded PNG/JPEG (empty: default)."""

    model: str
    seed: int = 0
    region: Rect | None = None
    chunk: int = 0  # 0: the server's default
    content_image: bytes = b""


@dataclasses.dataclass(frozen=True)
class PreparedRender:
    renderer: object  # render_server.render.Renderer
    settings: RenderSettings
    content: np.ndarray | None  # uint8 (H, W, 3)
    plan: ChunkPlan

    def description(self) -> dict:
        return self.renderer.provenance(self.settings, self.content)


@dataclasses.dataclass(frozen=True)
class Started:
    region: Rect
    chunks_total: int
    strips_total: int
    description: dict


@dataclasses.dataclass(frozen=True)
class Piece:
    """Pixels at (y, x) relative to the region: uint8 (height, width, 3)."""

    y: int
    x: int
    pixels: np.ndarray


def prepare(models: ModelStore, spec: RenderSpec, limits: Limits) -> PreparedRender:
    renderer = models.renderer(spec.model)
    chunk = spec.chunk or limits.default_chunk
    if chunk < MIN_CHUNK:
        raise InvalidArgument("chunk", f"{chunk} is below the minimum of {MIN_CHUNK} pixels")
    canvas_height, canvas_width = renderer.canvas_size
    region = spec.region or Rect(0, 0, canvas_height, canvas_width)
    if region.height < 1 or region.width < 1 or not Rect(0, 0, canvas_height, canvas_width).contains(region):
        raise InvalidArgument(
            "region",
            f"x={region.x} y={region.y} width={region.width} height={region.height} is empty or "
            f"outside the canvas {canvas_width}x{canvas_height}",
        )
    if region.pixels > limits.max_pixels:
        raise ResourceExhausted(
            f"region: {region.width}x{region.height} = {region.pixels} pixels, over the server's "
            f"limit of {limits.max_pixels}"
        )
    content = decode_content(spec.content_image, max_pixels=limits.max_content_pixels) if spec.content_image else None
    settings = RenderSettings(seed=spec.seed, chunk=chunk, region=spec.region)
    return PreparedRender(renderer, settings, content, renderer.plan(settings))


def decode_content(data: bytes, *, max_pixels: int) -> np.ndarray:
    """PNG or JPEG bytes as uint8 RGB (H, W, 3), decoded exactly as ``famos.canvas.load_rgb`` decodes
    a file, so that a streamed render equals a local one. Pillow only; never pickle."""
    from PIL import Image, UnidentifiedImageError

    from famos.canvas import image_to_rgb

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            width, height = image.size
            # checked on the header, before the pixels are decoded (decompression bombs)
            if width * height > max_pixels:
                raise ResourceExhausted(
                    f"content_image: {width}x{height} pixels, over the server's limit of {max_pixels}"
                )
            return image_to_rgb(image)
    except Image.DecompressionBombError:
        raise ResourceExhausted(f"content_image: over the server's limit of {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InvalidArgument("content_image", f"not a readable PNG or JPEG image ({err})") from None


def stream_render(prepared: PreparedRender, *, cancel: threading.Event, piece_bytes: int) -> Iterator[object]:
    """``Started``, then per strip its ``Piece``s and the ``Progress`` after it. Stops within one
    chunk once ``cancel`` is set (the pipeline checks it between chunks)."""
    plan = prepared.plan
    yield Started(plan.region, len(plan.chunks), plan.n_rows, prepared.description())
    latest: list[Progress] = []
    strips = prepared.renderer.strips(
        prepared.settings, content=prepared.content, cancel=cancel, progress=latest.append
    )
    top = 0
    try:
        for strip in strips:
            yield from pieces(strip, top=top, max_bytes=piece_bytes)
            top += strip.shape[0]
            yield latest[-1]
            latest.clear()
    finally:
        strips.close()  # stops the device thread now, not when garbage is collected


def pieces(strip: np.ndarray, *, top: int, max_bytes: int) -> Iterator[Piece]:
    """A strip cut into row bands of at most ``max_bytes``; a single row wider than that is cut
    into column segments, so no message exceeds the bound whatever the region width."""
    height, width, _ = strip.shape
    row_bytes = width * 3
    if row_bytes <= max_bytes:
        rows = max_bytes // row_bytes
        for y in range(0, height, rows):
            yield Piece(top + y, 0, strip[y : y + rows])
        return
    columns = max(1, max_bytes // 3)
    for y in range(height):
        for x in range(0, width, columns):
            yield Piece(top + y, x, strip[y : y + 1, x : x + columns])
