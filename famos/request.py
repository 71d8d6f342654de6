"""A render request, whichever door it comes through, and the one step that resolves it.

Every door builds a ``RenderRequest``: `famos render` and `famos client` from their command lines
(``request_from_args``), the server from a gRPC message and a job from its stored JSON
(``famos.render_server.convert``, ``famos.render_server.job_store``), the batch from a jobs-file row, the
Python client from keywords. What the request means on one model and one device is decided here
and nowhere else:

- ``output_canvas``: the output size (pixels, a scale of the trained canvas, or a print size at a DPI);
- ``file_resolution``: the DPI policy (an exact DPI for a print size; the model's trained print
  resolution when no DPI is asked for);
- ``admission``: the region (default: the whole output canvas), the device-aware chunk and input
  threads, and the cost estimate checked against the limits from the content image's header,
  before anything is decoded or planned; ``Admission.resolved`` then decodes and builds the task
  once (``resolve`` does both, with a door's reservation between them).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from famos.canvas import decode_rgb, image_size
from famos.config import from_dict, to_dict
from famos.chunk_loop import RenderSettings, RenderTask
from famos.errors import InvalidField, OverLimit
from famos.memory import WINDOW_BYTES_PER_PIXEL, window_bytes_per_pixel
from famos.planning import ChunkPlan, Rect
from famos.tiff_options import ResolutionUnit, TiffOptions
from famos.tiff_size import expected_bytes
from famos.units import dpi_for_print_size, is_metric, output_size, parse_print_size
from famos.values import Resolution

if TYPE_CHECKING:
    import numpy as np

    from famos.bundle import Bundle
    from famos.renderer import Renderer

# A 10-gigapixel mural is a real order; a 100-gigapixel one is more likely a typo in --size.
MAX_PIXELS = 2**34
# A plan holds one object per chunk: 2^18 chunks is 2^30 px at chunk 64, planned in under a second.
MAX_CHUNKS = 1 << 18


@dataclasses.dataclass(frozen=True)
class RenderRequest:
    """What someone asks to render. At most one of ``size``, ``scale`` and ``print_size``; a print
    size is measured at ``tiff.dpi``. ``content`` is an encoded image (PNG or JPEG bytes; empty:
    the model's own), ``content_name`` what error messages call it."""

    model: str = ""
    seed: int = 0
    region: Rect | None = None  # a part of the output canvas; None: all of it
    size: tuple[int, int] | None = None  # (height, width) of the output canvas in pixels
    scale: float | None = None  # the model's canvas times this
    print_size: str | None = None  # e.g. "60x40cm"; the pixels are print size x tiff.dpi
    chunk: int = 0  # output chunk side; 0: the device's default
    content: bytes = b""
    content_name: str = "content_image"
    tiff: TiffOptions = TiffOptions()

    def __post_init__(self) -> None:
        # checked here, where every door builds a request: a 65-bit seed never reaches a protobuf field
        if not -(2**63) <= self.seed < 2**63:
            raise InvalidField("seed", f"{self.seed}: must fit in 64 bits (what the noise and the API carry)")
        if self.chunk < 0:
            raise InvalidField("chunk", f"{self.chunk}: must be 0 (the default) or a side in pixels")
        given = [name for name in ("size", "scale", "print_size") if getattr(self, name) is not None]
        if len(given) > 1:
            raise InvalidField(given[1], f"give one output size: {' or '.join(given)}, not both")

    def to_json(self) -> dict[str, Any]:
        """The request as JSON values, content left out (it is stored beside, as a file)."""
        return {**to_dict(self, leave_out=("content", "content_name", "tiff")), "tiff": self.tiff.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, content: bytes = b"", encode_workers: int = 0) -> RenderRequest:
        tiff = TiffOptions.from_json(data["tiff"], encode_workers=encode_workers)
        return from_dict(cls, {**{k: v for k, v in data.items() if k != "tiff"}, "tiff": tiff, "content": content})


def output_canvas(request: RenderRequest, trained: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (height, width) of the output canvas; None: the trained canvas. A client that does not
    know the trained canvas passes None: a print size is multiplied out, pixels pass as they are
    and a scale is left to the server, which checks both against the model."""
    if request.size is not None:
        if trained is None:
            return request.size
        return output_size(canvas=trained, size=f"{request.size[1]}x{request.size[0]}")
    return output_size(canvas=trained, scale=request.scale, print_size=request.print_size, dpi=request.tiff.dpi)


def trained_resolution(bundle: Bundle) -> Resolution | None:
    """The resolution of the print size the model was trained for, if it was trained for one: at
    that resolution the textures keep their physical size on paper (an output 2x the canvas prints
    2x as large). None for a model without one, or with a record this code cannot read."""
    trained = bundle.manifest.provenance.get("print")
    if not isinstance(trained, dict) or not trained.get("size"):
        return None
    canvas = bundle.spec.canvas
    text = str(trained["size"])
    try:
        dpi = dpi_for_print_size(width_px=canvas.width, height_px=canvas.height, print_size=parse_print_size(text))
    except ValueError:  # UnitError included: the documented default applies
        return None
    return Resolution(dpi, ResolutionUnit.CM if is_metric(text) else ResolutionUnit.INCH)


def file_resolution(request: RenderRequest, canvas: tuple[int, int] | None, trained: Resolution | None) -> TiffOptions:
    """``request.tiff`` with the resolution the file is tagged with. A print size tags exactly the
    size asked for (to the pixel), not the rounded DPI's; no DPI asked for takes the model's
    trained print resolution (``trained``, with its unit) where it has one; else what was asked."""
    tiff = request.tiff
    if request.print_size and canvas is not None:
        height, width = canvas
        exact = dpi_for_print_size(width_px=width, height_px=height, print_size=parse_print_size(request.print_size))
        return dataclasses.replace(tiff, dpi=exact)
    if tiff.dpi is None and trained is not None:
        return dataclasses.replace(tiff, dpi=trained.dpi, unit=trained.unit)
    return tiff


@dataclasses.dataclass(frozen=True)
class AdmissionLimits:
    """What a door admits; ``hint`` says how to raise the pixel limit (a CLI flag, or nothing)."""

    max_pixels: int = MAX_PIXELS  # of a rendered region
    max_chunks: int = MAX_CHUNKS
    # of a chunk the request names (a window's memory grows with its square); None: any. A door's
    # own default or measured chunk is its choice, not the request's
    max_chunk: int | None = None
    max_content_pixels: int | None = None  # of a decoded content image; None: Pillow's bomb limit
    hint: str = ""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a render will cost, known before it starts."""

    width: int
    height: int
    chunks: int
    tiff_bytes: int  # the expected file, with its compression
    memory_bytes: int = 0  # host memory while it renders (``render_memory``): what a budget reserves

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def check_disk(self, out: pathlib.Path) -> int:
        """The free bytes at ``out``'s folder; a file that cannot fit is refused now, not after hours."""
        free = shutil.disk_usage(out.parent).free
        if self.tiff_bytes > free:
            raise OverLimit(f"--out {out}: the file needs about {self.tiff_bytes / 1e6:,.0f} MB, "
                            f"{free / 1e6:,.0f} MB are free there")
        return free


@dataclasses.dataclass(frozen=True)
class ResolvedRender:
    """A request resolved on one model and device: its task (planned once), the file's options
    with their resolution, and the estimate it was admitted on."""

    request: RenderRequest
    task: RenderTask
    tiff: TiffOptions
    estimate: Estimate
    trained: Resolution | None  # the model's trained print resolution (streams send it to clients)


# A decoded content image passes through Pillow's RGB conversion and its uint8 copy, then is held
# as float32 in [-1, 1]: 3 + 3 + 12 bytes per pixel at the peak.
CONTENT_BYTES_PER_PIXEL = 18


def render_memory(renderer: Renderer, settings: RenderSettings, *, region: Rect, content_pixels: int) -> int:
    """The host memory a render holds at its peak, estimated before anything is allocated: one
    window on the runner (the largest, chunk plus halo), the queued inputs and strips of the
    pipeline, and the decoded content. A GPU's own memory is the runner's (``default_chunk``)."""
    halo = renderer.halo
    window = (settings.chunk + halo.top + halo.bottom) * (settings.chunk + halo.left + halo.right)
    per_pixel = window_bytes_per_pixel(renderer.spec.generator)
    strips = (settings.queue_chunks + 1) * settings.chunk * region.width * 3 * (settings.bits // 8)
    inputs = settings.queue_chunks * window * WINDOW_BYTES_PER_PIXEL
    return window * per_pixel + inputs + strips + content_pixels * CONTENT_BYTES_PER_PIXEL


def default_prepare_workers(device: str) -> int:
    """Threads preparing chunk inputs: a GPU renders faster than one thread resamples."""
    return max(2, (os.cpu_count() or 1) // 4) if device.startswith("cuda") else 2


@dataclasses.dataclass(frozen=True)
class Admission:
    """A request checked on one model and device and its cost estimated, nothing decoded or
    allocated yet: a server reserves ``estimate`` (or waits for a worker) before ``resolved()``
    decodes the content and builds the task."""

    request: RenderRequest
    renderer: Renderer
    settings: RenderSettings
    tiff: TiffOptions
    estimate: Estimate
    trained: Resolution | None
    max_content_pixels: int | None
    content_pixels: int  # from the content image's header; 0 without one

    @property
    def plan(self) -> ChunkPlan:
        return self.renderer.plan(self.settings)

    @property
    def content_bytes(self) -> int:
        """What decoding the content holds at its peak (part of ``estimate.memory_bytes``)."""
        return self.content_pixels * CONTENT_BYTES_PER_PIXEL

    def decoded_content(self) -> np.ndarray | None:
        if not self.request.content:
            return None
        return decode_rgb(self.request.content, name=self.request.content_name, max_pixels=self.max_content_pixels)

    def resolved(self, content: np.ndarray | None = None) -> ResolvedRender:
        """The task, with ``content`` the request's content image already decoded (a mural's panels
        share one decode) or decoded now."""
        task = self.renderer.task(self.settings, content if content is not None else self.decoded_content())
        return ResolvedRender(self.request, task, self.tiff, self.estimate, self.trained)


def admission(
    request: RenderRequest, renderer: Renderer, *, limits: AdmissionLimits = AdmissionLimits(),
    prepare_workers: int | None = None, default_chunk: int | None = None,
) -> Admission:
    """``request`` on ``renderer``'s model and device, checked against ``limits`` from the content
    image's header alone. ``default_chunk`` (a server's setting) stands in for a chunk the request
    does not name; without either, the device's (``Renderer.default_chunk``)."""
    trained = renderer.spec.canvas
    size = output_canvas(request, (trained.height, trained.width))
    canvas = renderer.canvas(size)
    region = (request.region or Rect(0, 0, canvas.height, canvas.width)).check_inside(
        height=canvas.height, width=canvas.width
    )
    if request.chunk and limits.max_chunk is not None and request.chunk > limits.max_chunk:
        raise OverLimit(f"chunk {request.chunk}: over the limit of {limits.max_chunk} px a side{limits.hint}")
    chunk = request.chunk or default_chunk or renderer.default_chunk(size)
    trained_print = trained_resolution(renderer.bundle)
    tiff = file_resolution(request, size, trained_print)
    settings = RenderSettings(
        seed=request.seed, chunk=chunk, region=region, size=size, bits=tiff.bits,
        prepare_workers=prepare_workers or default_prepare_workers(renderer.options.device),
    )
    chunks = -(-region.height // chunk) * -(-region.width // chunk)
    if region.pixels > limits.max_pixels or chunks > limits.max_chunks:
        raise OverLimit(
            f"region {region.width}x{region.height} = {region.pixels / 1e6:,.1f} MP in {chunks} chunks: over the "
            f"limit of {limits.max_pixels / 1e6:,.0f} MP or {limits.max_chunks} chunks{limits.hint}"
        )
    content_pixels = 0
    if request.content:  # its header: the pixels are decoded only once the render is admitted
        width, height = image_size(request.content, name=request.content_name, max_pixels=limits.max_content_pixels)
        content_pixels = width * height
    estimate = Estimate(region.width, region.height, chunks, expected_bytes(region.height, region.width, tiff),
                        render_memory(renderer, settings, region=region, content_pixels=content_pixels))
    return Admission(request, renderer, settings, tiff, estimate, trained_print, limits.max_content_pixels,
                     content_pixels)


def resolve(
    request: RenderRequest, renderer: Renderer, *, limits: AdmissionLimits = AdmissionLimits(),
    prepare_workers: int | None = None, default_chunk: int | None = None,
    admit: Callable[[Estimate], None] | None = None,
) -> ResolvedRender:
    """``admission``, then ``admit`` sees the estimate (a door's own reservation or refusal), then
    the content is decoded and the task planned once."""
    admitted = admission(request, renderer, limits=limits, prepare_workers=prepare_workers, default_chunk=default_chunk)
    if admit is not None:
        admit(admitted.estimate)
    return admitted.resolved()
