"""Planning: each parsed row, tied to its model's canvas, becomes a ``PrintJob`` (its pixels, DPI
and output files, one per panel); a row over a content folder becomes one per image, its output
pattern's ``{stem}`` the image's stem.

``output_resolution`` is the batch's one DPI policy: a row's pixels, print size and dpi (or the
batch's ``--dpi``) give the output's pixel size and the TIFF's resolution tags.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from famos.canvas import ImageError
from famos.clients.batch.fields import FieldError, JobRequest, ModelRef, check_output_name
from famos.errors import UserError
from famos.planning import Rect
from famos.request import RenderRequest
from famos.request_args import content_images, is_folder, unreadable_image
from famos.tiff_options import Compression, Intent, ResolutionUnit, TiffOptions
from famos.units import dpi_for_print_size, panel_grid, pixels_at_dpi, scaled_canvas

STEM = "{stem}"  # in a row's output: the stem of its content image (of each image, for a content folder)


@dataclasses.dataclass(frozen=True)
class Output:
    name: str  # file name inside the output folder
    region: Rect | None  # None: the whole canvas

    def pixels(self, job: PrintJob) -> int:
        return self.region.pixels if self.region else job.width * job.height


@dataclasses.dataclass(frozen=True)
class PrintJob:
    """A validated print: its output pixels (the model renders any size) at a DPI, and its files."""

    row: int
    model: ModelRef
    name: str  # the output column (panels derive their names from it)
    content: pathlib.Path | None
    seed: int
    compression: Compression
    dpi: float
    width: int  # output pixels
    height: int
    outputs: tuple[Output, ...]
    artist: str | None = None  # None: the batch default
    copyright: str | None = None
    output_profile: pathlib.Path | None = None
    intent: Intent | None = None
    unit: ResolutionUnit = ResolutionUnit.INCH  # of the resolution tags: cm for a print size in cm or mm

    @property
    def print_size_cm(self) -> tuple[float, float]:
        return self.width / self.dpi * 2.54, self.height / self.dpi * 2.54

    def request(self, output: Output, tiff: TiffOptions, *, chunk: int = 0) -> RenderRequest:
        """The render request of one of its files: its pixels, with the resolution already decided
        by the batch's policy (``tiff.dpi``), whichever engine renders it."""
        from famos.canvas import encoded_image

        return RenderRequest(
            model=self.model.name, seed=self.seed, region=output.region, size=(self.height, self.width),
            chunk=chunk, content=encoded_image(self.content) if self.content is not None else b"",
            content_name=str(self.content) if self.content is not None else "content_image", tiff=tiff,
        )


@dataclasses.dataclass(frozen=True)
class OutputResolution:
    """An output's pixel size and the resolution its TIFF tags record."""

    width: int
    height: int
    dpi: float
    unit: ResolutionUnit


class Canvases(Protocol):
    def canvas(self, model: ModelRef) -> tuple[int, int]:
        """(height, width) of the model's canvas; UserError when the model cannot be used."""

    def renders_any_size(self, model: ModelRef) -> bool:
        """False for a bundle that renders only its trained canvas (format 1)."""


def plan_jobs(
    requests: Sequence[JobRequest],
    *,
    engine: Canvases,
    min_dpi: float,
    default_dpi: float | None,
    default_compression: Compression,
) -> tuple[list[PrintJob], list[FieldError]]:
    """Every request planned against its model's canvas (asked for once per model), and every error:
    an unusable model or content image, a size a format-1 bundle cannot render, a file written twice.
    A row over a content folder is planned once and gives one job per image (``row_images``)."""
    canvases: dict[ModelRef, tuple[int, int] | str] = {}
    jobs, errors = [], []
    for request in requests:
        if request.model not in canvases:
            canvases[request.model] = _canvas_or_problem(engine, request.model)
        canvas = canvases[request.model]
        if isinstance(canvas, str):
            errors.append(FieldError(request.row, "model", canvas))
            continue
        images = row_images(request)
        if isinstance(images, FieldError):
            errors.append(images)
            continue
        problem = [FieldError(request.row, "content", p) for p in (unreadable_image(i) for i in images if i) if p]
        errors += problem
        planned = plan_job(
            request, canvas=canvas, min_dpi=min_dpi, default_dpi=default_dpi, default_compression=default_compression,
        )
        if isinstance(planned, list):
            errors += planned
        elif (planned.height, planned.width) != canvas and not engine.renders_any_size(request.model):
            errors.append(FieldError(
                request.row, "size", f"{request.model.name} renders only its canvas {canvas[1]}x{canvas[0]} "
                f"(a format-1 bundle), not {planned.width}x{planned.height}: export it again",
            ))
        elif not problem:
            jobs += [_for_image(planned, image) for image in images]
    errors += duplicate_outputs(jobs)
    return jobs, errors


def row_images(request: JobRequest) -> list[pathlib.Path | None] | FieldError:
    """The content images of a row: its image (None: the model's own), or every image of its content
    folder (``famos.request_args.content_images``), whose output names need a ``{stem}``."""
    row, pattern = request.row, request.output
    if request.content is None:
        if STEM in pattern:
            return FieldError(row, "output", f"{pattern}: {STEM} stands for the content image's stem; "
                              "this row has no content")
        return [None]
    if not is_folder(request.content):
        images = [request.content]
    elif STEM not in pattern:
        return FieldError(row, "output", f"{pattern}: the content is a folder of images: name each one's file with "
                          f"{STEM} (e.g. frame-{STEM}.tif)")
    else:
        try:
            images = content_images(request.content)
        except ImageError as err:
            return FieldError(row, "content", str(err))
    for image in images:
        try:
            check_output_name(pattern.replace(STEM, image.stem))
        except ValueError as err:
            return FieldError(row, "output", f"for {image.name}: {err}")
    return images


def _for_image(job: PrintJob, image: pathlib.Path | None) -> PrintJob:
    """``job`` of one image of its row: that image as content, its stem for ``{stem}`` in the file names."""
    if image is None:
        return job
    stem = image.stem
    outputs = tuple(dataclasses.replace(output, name=output.name.replace(STEM, stem)) for output in job.outputs)
    return dataclasses.replace(job, content=image, name=job.name.replace(STEM, stem), outputs=outputs)


def _canvas_or_problem(engine: Canvases, model: ModelRef) -> tuple[int, int] | str:
    """The model's (height, width) canvas, or why the model cannot be used."""
    try:
        return engine.canvas(model)
    except UserError as err:
        return str(err)


def plan_job(
    request: JobRequest,
    *,
    canvas: tuple[int, int],
    min_dpi: float,
    default_dpi: float | None,
    default_compression: Compression,
) -> PrintJob | list[FieldError]:
    """A request for a model whose canvas is (height, width): the output pixels, the DPI, the
    floor, the panels' regions."""
    resolution = output_resolution(request, canvas=canvas, min_dpi=min_dpi, default_dpi=default_dpi)
    if isinstance(resolution, FieldError):
        return [resolution]
    outputs = panel_outputs(request, resolution)
    if isinstance(outputs, FieldError):
        return [outputs]
    return PrintJob(
        row=request.row, model=request.model, name=request.output, content=request.content, seed=request.seed,
        compression=request.compression or default_compression, dpi=resolution.dpi, width=resolution.width,
        height=resolution.height, outputs=outputs, artist=request.artist, copyright=request.copyright,
        output_profile=request.output_profile, intent=request.intent, unit=resolution.unit,
    )


def output_resolution(
    request: JobRequest, *, canvas: tuple[int, int], min_dpi: float, default_dpi: float | None
) -> OutputResolution | FieldError:
    """The batch's DPI policy. Pixels: the row's size, or its scale of the model's canvas (height,
    width), or its print size at its dpi, else the canvas. DPI: what prints the pixels at the print
    size exactly, else the row's dpi, else ``default_dpi`` (``--dpi``); a row with neither is an
    error, and so is a DPI under ``min_dpi`` (the row's dpi when it gives one). Tags in cm for a
    print size in cm or mm, else in inches."""
    row = request.row
    height, width = canvas
    if request.size is not None:
        width, height = request.size
    elif request.scale is not None:
        try:
            width, height = scaled_canvas(width, height, scale=request.scale)
        except UserError as err:
            return FieldError(row, "scale", str(err))
    elif request.print_size is not None and request.dpi is not None:
        try:
            width, height = pixels_at_dpi(request.print_size, dpi=request.dpi)
        except UserError as err:
            return FieldError(row, "print_size", str(err))
    if request.print_size is not None and request.dpi is not None:
        # the DPI that prints exactly the size asked for (the pixels are whole)
        dpi, source = dpi_for_print_size(width_px=width, height_px=height, print_size=request.print_size), "dpi"
    elif request.print_size is not None:
        try:
            dpi = dpi_for_print_size(width_px=width, height_px=height, print_size=request.print_size)
        except ValueError as err:
            return FieldError(row, "print_size", str(err))
        source = "print_size"
    elif request.dpi is not None or default_dpi is not None:
        dpi = request.dpi if request.dpi is not None else default_dpi
        source = "dpi"
    else:
        return FieldError(row, "dpi", "give a dpi or a print_size (or --dpi for rows with neither)")
    # the floor applies to the DPI asked for (the exact one differs by a rounded pixel at most)
    if (request.dpi if request.dpi is not None else dpi) < min_dpi:
        w_cm, h_cm = width / dpi * 2.54, height / dpi * 2.54
        return FieldError(
            row, source,
            f"{dpi:.1f} dpi ({width}x{height} px printed at {w_cm:.1f}x{h_cm:.1f} cm) is below the floor "
            f"of {min_dpi:g} dpi (--min-dpi); give more pixels (size, scale, or print_size with a dpi)",
        )
    unit = ResolutionUnit.CM if request.metric else ResolutionUnit.INCH
    return OutputResolution(width=width, height=height, dpi=dpi, unit=unit)


def panel_outputs(request: JobRequest, resolution: OutputResolution) -> tuple[Output, ...] | FieldError:
    """The request's files: the whole canvas, or one ``NAME_rRcC`` file per panel."""
    if request.panels is None:
        return (Output(request.output, None),)
    cols, rows = request.panels
    width, height = resolution.width, resolution.height
    overlap = request.panel_overlap.pixels(dpi=resolution.dpi)
    try:
        grid = panel_grid(height=height, width=width, cols=cols, rows=rows, overlap=overlap)
    except ValueError as err:
        field = "panels" if cols > width or rows > height else "panel_overlap"
        return FieldError(request.row, field, f"{err} (canvas {width}x{height} px)")
    stem, suffix = os.path.splitext(request.output)
    return tuple(Output(f"{stem}_r{p.row}c{p.col}{suffix}", p.rect) for p in grid)


def unvaried_rows(jobs: Iterable[PrintJob], noise_channels: Callable[[ModelRef], int]) -> list[str]:
    """Notes on rows whose seed changes nothing, and on rows that will be the same pixels as an
    earlier row (same model, content, size, files' regions and colour conversion; the same seed
    too unless the model takes no noise)."""
    from famos.values import unseeded

    notes, first = [], {}
    for job in jobs:
        channels = noise_channels(job.model)
        unchanged = unseeded(job.seed, channels)
        if unchanged:
            notes.append(f"row {job.row}: {unchanged}")
        key = (job.model, job.content, job.width, job.height, tuple(o.region for o in job.outputs),
               job.output_profile, job.intent, job.seed if channels else None)
        if key in first:
            why = "" if channels else ", whatever their seeds"
            notes.append(f"row {job.row}: the same pixels as row {first[key]} (same model, content and size{why})")
        first.setdefault(key, job.row)
    return notes


def duplicate_outputs(jobs: Iterable[PrintJob]) -> list[FieldError]:
    """Two jobs (or panels) writing the same file; case-insensitive, as on macOS and Windows."""
    seen: dict[str, int] = {}
    errors = []
    for job in jobs:
        for output in job.outputs:
            key = output.name.lower()
            if key in seen and seen[key] != job.row:
                errors.append(FieldError(job.row, "output", f"{output.name} is also written by row {seen[key]}"))
            seen.setdefault(key, job.row)
    return errors
