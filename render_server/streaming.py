"""A render request resolved on a served model, and a streamed render as events.

Shared by streamed renders and jobs: ``admitted`` checks a ``famos.request.RenderRequest`` on the
model it names, within the server's limits (``famos.request.admission``: the same resolution,
checks and defaults as `famos render`), and estimates its cost before anything is decoded;
``prepared`` then decodes it, within the memory the door reserved between the two;
``stream_render`` yields ``Started``, then each strip as ``Piece``s of bounded size and a
``Progress``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator

import numpy as np

from famos.errors import InvalidField, quoted
from famos.pipeline import ProgressCallback
from famos.renderer import Renderer
from famos.request import Admission, AdmissionLimits, RenderRequest, ResolvedRender, admission
from famos.values import Piece, Progress, Started
from famos.render_server.errors import FailedPrecondition
from famos.render_server.models import ModelStore


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    admission: AdmissionLimits  # pixels, chunks and content pixels of one render
    default_chunk: int | None = None  # None: the device's (famos.request.resolve)
    piece_bytes: int = 1 << 20  # pixel payload of one streamed message
    # a progress callback for each render, seeing every chunk (the server's metrics); None: none
    meter: Callable[[], ProgressCallback] | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class PreparedRender:
    renderer: Renderer
    render: ResolvedRender
    meter: ProgressCallback | None = None  # this render's own (ServerLimits.meter)


def admitted(models: ModelStore, request: RenderRequest, limits: ServerLimits) -> Admission:
    """``request`` checked on its model within the server's limits, its cost estimated from the
    content image's header: nothing decoded yet."""
    if not request.model:
        raise InvalidField("model", "is empty")
    renderer = models.renderer(request.model)
    with models.bundle_errors(request.model):  # e.g. a format-1 bundle asked for another size
        return admission(request, renderer, limits=limits.admission, default_chunk=limits.default_chunk)


def prepared(checked: Admission, limits: ServerLimits) -> PreparedRender:
    """The admitted request with its content decoded and its task planned: call it holding the
    memory ``checked.estimate`` names."""
    return PreparedRender(checked.renderer, checked.resolved(), limits.meter() if limits.meter is not None else None)


def stream_render(prepared: PreparedRender, *, cancel: threading.Event, piece_bytes: int) -> Iterator[object]:
    """``Started``, then per strip its ``Piece``s and the ``Progress`` after it. Stops within one
    chunk once ``cancel`` is set (the pipeline checks it between chunks).

    Each strip is checked against the plan before it is sent, and the strips against the region
    at the end: a graph that returns fewer pixels than asked (replaced and re-hashed) fails the
    call instead of answering OK with tiles that leave most of the region uncovered."""
    task = prepared.render.task
    plan, model = task.plan, prepared.render.request.model
    yield Started(task.region, len(plan.chunks), plan.n_rows, task.description, prepared.render.trained)
    latest: list[Progress] = []

    def progress(done: Progress) -> None:
        latest.append(done)
        if prepared.meter is not None:
            prepared.meter(done)

    strips = prepared.renderer.strips(task, cancel=cancel, progress=progress)
    top = row = 0
    try:
        for strip in strips:
            expected = (plan.row_top(row + 1) - top, task.region.width, 3)
            if strip.shape != expected:
                raise FailedPrecondition(
                    f"model {quoted(model)} produced {_pixels(strip.shape)} for strip {row} (region row {top}), "
                    f"expected {_pixels(expected)}: its graph does not render what its manifest describes"
                )
            yield from pieces(strip, top=top, max_bytes=piece_bytes)
            top += strip.shape[0]
            row += 1
            yield latest[-1]
            latest.clear()
    finally:
        strips.close()  # stops the device thread now, not when garbage is collected
    if top != task.region.height:
        raise FailedPrecondition(f"model {quoted(model)} produced {top} of the region's {task.region.height} rows")


def _pixels(shape: tuple[int, ...]) -> str:
    """A strip's shape as a person reads it: "1600x32 px of 3 channels"."""
    if len(shape) != 3:
        return f"an array of shape {shape}"
    height, width, channels = shape
    return f"{width}x{height} px of {channels} channels"


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
