"""A render request turned into a checked render task, and a streamed render as events.

Shared by streamed renders and jobs: ``prepare`` checks a ``RenderSpec`` against the model and
the server limits (each field through the same checks the command lines use), ``stream_render``
yields ``Started``, then each strip as ``Piece``s of bounded size and a ``Progress``.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Iterator

import numpy as np

from famos.canvas import image_to_rgb
from famos.errors import InvalidField
from famos.planning import Rect
from famos.renderer import Renderer
from famos.rendering import RenderSettings, RenderTask
from famos.units import output_size
from famos.values import Piece, Progress, Started
from render_server.errors import ResourceExhausted
from render_server.models import ModelStore


MAX_CHUNKS = 1 << 18  # per render: 2^30 px at chunk 64; planning stays under a second and ~100 MB


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
    size: tuple[int, int] | None = None  # (height, width) of the output canvas; None: scale or the model's
    scale: float | None = None  # the model's canvas times this


@dataclasses.dataclass(frozen=True)
class PreparedRender:
    renderer: Renderer
    task: RenderTask


def prepare(models: ModelStore, spec: RenderSpec, limits: Limits) -> PreparedRender:
    if not spec.model:
        raise InvalidField("model", "is empty")
    renderer = models.renderer(spec.model)
    trained = renderer.spec.canvas
    size = spec.size
    if size is None and spec.scale is not None:
        size = output_size(canvas=(trained.height, trained.width), scale=spec.scale)
    settings = RenderSettings(seed=spec.seed, chunk=spec.chunk or limits.default_chunk, region=spec.region, size=size)
    # the limit before any planning: a plan holds one object per chunk
    height, width = size or (trained.height, trained.width)
    region = spec.region or Rect(0, 0, height, width)
    chunks = -(-region.height // settings.chunk) * -(-region.width // settings.chunk)
    if region.pixels > limits.max_pixels or chunks > MAX_CHUNKS:
        raise ResourceExhausted(
            f"region: {region.width}x{region.height} = {region.pixels} pixels in {chunks} chunks, over the "
            f"server's limit of {limits.max_pixels} pixels or {MAX_CHUNKS} chunks"
        )
    content = decode_content(spec.content_image, max_pixels=limits.max_content_pixels) if spec.content_image else None
    task = renderer.task(settings, content)
    return PreparedRender(renderer, task)


def decode_content(data: bytes, *, max_pixels: int) -> np.ndarray:
    """PNG or JPEG bytes as uint8 RGB (H, W, 3), decoded exactly as ``famos.canvas.load_rgb`` decodes
    a file, so that a streamed render equals a local one. Pillow only; never pickle."""
    from PIL import Image, UnidentifiedImageError

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
        raise InvalidField("content_image", f"not a readable PNG or JPEG image ({err})") from None


def stream_render(prepared: PreparedRender, *, cancel: threading.Event, piece_bytes: int) -> Iterator[object]:
    """``Started``, then per strip its ``Piece``s and the ``Progress`` after it. Stops within one
    chunk once ``cancel`` is set (the pipeline checks it between chunks)."""
    task = prepared.task
    yield Started(task.region, len(task.plan.chunks), task.plan.n_rows, task.description)
    latest: list[Progress] = []
    strips = prepared.renderer.strips(task, cancel=cancel, progress=latest.append)
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
