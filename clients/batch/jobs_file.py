"""The jobs file: parsed, checked against each model's canvas, and planned into ``Job``s.

The jobs file is CSV (a header row, then one row per print), TOML (``[[job]]`` tables) or JSON (a
list of objects, or ``{"jobs": [...]}``), with these fields:

    model          bundle folder written by ``famos export``, relative to the jobs file's folder.
                   With ``--bundles DIR`` only its last component, the bundle's name, counts and is
                   looked up in DIR, so one jobs file serves any bundle store; with ``--server``
                   that name is the server's model name.
    output         file name inside ``--out`` (``.tif``/``.tiff``, ``.tif`` added when missing);
                   no folders, no ``..``, no absolute paths.
    content        optional image, relative to the jobs file's folder; empty: the bundle's default
                   content. It is resampled onto the output canvas.
    size, scale    optional output pixels ``WxH`` (``6000x4000``), or a scale of the model's canvas
                   (``2.5``); at most one. Empty: the model's canvas, or print_size x dpi.
    dpi            Pixels, print size and DPI: any two fix the third. ``print_size = 60x40cm``
    print_size     with ``dpi = 150`` renders 3543x2362 px; a dpi alone prints the output pixels
                   at that DPI; a print size alone gives the DPI (its proportions must match the
                   pixels within 1 %). ``--dpi`` is the default dpi of rows that need one. A DPI
                   under the floor (``--min-dpi``, default 100) is rejected. One model renders
                   every size: the style keeps its trained pixel scale.
    seed           optional integer noise seed (default 0).
    compression    optional: deflate, lzw, none, zstd or jpeg (default ``--compression``, deflate:
                   deflate and LZW are what print RIPs read).
    panels         optional ``COLSxROWS`` (``3x2``): a mural split into equal panels, each its own
                   file ``NAME_r1c2.tif`` (row 1, column 2, counted from the top left).
    panel_overlap  optional overlap of neighbouring panels: ``10mm``, ``1cm``, ``0.5in`` or
                   ``32px`` (default 0). Every pair of neighbours overlaps by at least this much.
    artist         optional Artist and Copyright tags of the file (printable ASCII; default
    copyright      ``--artist`` / ``--copyright``).
    output_profile optional ICC profile (RGB or CMYK) of the shop, relative to the jobs file's
    intent         folder, and the rendering intent of the conversion: perceptual, relative,
                   saturation or absolute (defaults: ``--output-profile``, ``--intent``).

Rows are numbered as a spreadsheet shows them (CSV: the header is row 1, the first job row 2;
TOML/JSON: the first job is row 1). Every row is validated, and every bad field reported with its
row, before anything renders. Outputs are written by ``write_tiled_tiff`` (8-bit RGB, sRGB ICC
profile, DPI tags, classic TIFF unless the file could pass 4 GiB, atomic rename), and each finished
output is recorded in ``OUT/batch-manifest.json`` (size, sha256 and a fingerprint of what produced
it). A re-run skips outputs whose file still matches its manifest entry and renders the rest. One
failing job does not stop the others; ``OUT/batch-report.csv`` and ``.json`` say what happened.

Geometry, parsing and planning are pure; torch and the render engine load only in ``LocalEngine``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from famos.errors import UserError
from famos.planning import Rect
from famos.icc import check_output_profile
from famos.tiff import Compression, Intent, ResolutionUnit, TiffOptions, check_dpi, check_tag_text
from famos.units import (
    Length, LengthUnit, dpi_for_print_size, is_metric, panel_grid, parse_canvas, parse_grid, parse_length, parse_print_size,
    pixels_at_dpi, scaled_canvas,
)

DEFAULT_MIN_DPI = 100.0
FIELDS = (
    "model", "output", "content", "size", "scale", "dpi", "print_size", "seed", "compression", "panels", "artist", "copyright",
    "output_profile", "intent",
    "panel_overlap",
)
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    out: pathlib.Path
    tiff: TiffOptions = TiffOptions()  # base options; each job sets its compression and DPI
    min_dpi: float = DEFAULT_MIN_DPI
    bundles: pathlib.Path | None = None  # resolve the model column by name in this folder


@dataclasses.dataclass(frozen=True)
class FieldError:
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, {self.field}: {self.message}"


class JobsFileError(UserError):
    """The jobs file has bad rows; lists every one of them, and nothing was rendered."""

    def __init__(self, path: pathlib.Path, errors: Sequence[FieldError]):
        self.path = path
        self.errors = tuple(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        noun = "error" if len(self.errors) == 1 else "errors"
        super().__init__(f"{path}: {len(self.errors)} {noun}, nothing rendered:\n{lines}")


def check_output_name(text: str) -> str:
    """A bare TIFF file name inside the output folder; ``.tif`` added when there is no suffix."""
    name = text.strip()
    if not name:
        raise ValueError("is empty")
    if any(sep in name for sep in ("/", "\\", ":", "\0")) or name in (".", ".."):
        raise ValueError(f"{text!r}: must be a bare file name (no folders, drive or '..')")
    if name.startswith("."):
        # hidden names are the writer's partial files
        raise ValueError(f"{text!r}: must not start with '.'")
    suffix = pathlib.PurePath(name).suffix.lower()
    if not suffix:
        return name + ".tif"
    if suffix not in _TIFF_SUFFIXES:
        raise ValueError(f"{text!r}: must be a .tif or .tiff file")
    return name


@dataclasses.dataclass(frozen=True)
class ModelRef:
    name: str  # the bundle folder's name: the server's model name
    path: pathlib.Path  # the local bundle folder


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One row of the jobs file, parsed but not yet tied to a model's canvas."""

    row: int
    model: ModelRef
    output: str
    content: pathlib.Path | None
    size: tuple[int, int] | None  # (width, height) pixels
    scale: float | None
    dpi: float | None
    print_size: tuple[float, float] | None  # inches
    seed: int
    compression: Compression | None  # None: the batch default
    panels: tuple[int, int] | None  # (cols, rows)
    panel_overlap: Length
    artist: str | None = None  # None: the batch default
    copyright: str | None = None
    output_profile: pathlib.Path | None = None  # None: the batch default
    intent: Intent | None = None
    metric: bool = False  # the print size was given in cm or mm: resolution tags in cm


@dataclasses.dataclass(frozen=True)
class Output:
    name: str  # file name inside the output folder
    region: Rect | None  # None: the whole canvas

    def pixels(self, job: Job) -> int:
        return self.region.pixels if self.region else job.width * job.height


@dataclasses.dataclass(frozen=True)
class Job:
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


def read_rows(path: pathlib.Path) -> tuple[list[tuple[int, dict[str, str]]], list[FieldError]]:
    """Rows of a CSV/TOML/JSON jobs file as (row number, field -> text); unknown fields are errors."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets like to prepend a BOM
    except FileNotFoundError:
        raise UserError(f"{path}: no such jobs file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the jobs file ({err})") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        header = [h.strip() for h in reader.fieldnames or []]
        errors = [FieldError(1, h or "(empty)", "unknown column") for h in header if h not in FIELDS]
        rows = []
        for record in reader:
            # line_num is the physical line of the row's end; quoted fields may span lines
            values = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
            if record.get(None):
                errors.append(FieldError(reader.line_num, "(row)", "more values than columns"))
            if any(values.values()):
                rows.append((reader.line_num, values))
        return rows, errors
    if suffix == ".toml":
        import tomllib

        try:
            records = tomllib.loads(text).get("job", [])
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{path}: not valid TOML ({err})") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        records = data.get("jobs", []) if isinstance(data, dict) else data
    else:
        raise UserError(f"{path}: jobs file must be .csv, .toml or .json")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: expected a list of jobs ([[job]] tables in TOML, a list of objects in JSON)")
    rows, errors = [], []
    for number, record in enumerate(records, start=1):
        values = {}
        for key, value in record.items():
            if key not in FIELDS:
                errors.append(FieldError(number, key, "unknown field"))
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                errors.append(FieldError(number, key, f"{value!r}: expected text or a number"))
            else:
                values[key] = str(value).strip()
        rows.append((number, values))
    return rows, errors


def parse_request(
    row: int, values: Mapping[str, str], *, base: pathlib.Path, bundles: pathlib.Path | None
) -> JobRequest | list[FieldError]:
    """One row -> JobRequest, or every field error of the row. Touches no file."""
    errors: list[FieldError] = []

    def field(name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
        text = values.get(name, "")
        if not text:
            return default
        try:
            return parse(text)
        except ValueError as err:
            errors.append(FieldError(row, name, str(err)))
            return default

    def model_ref(text: str) -> ModelRef:
        path = pathlib.PurePath(text)
        if not path.name or path.name in (".", ".."):
            raise ValueError(f"{text!r}: expected a bundle folder")
        local = bundles / path.name if bundles is not None else base / text
        return ModelRef(name=path.name, path=pathlib.Path(local))

    def positive(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r}: must be a positive number") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{text!r}: must be a positive number")
        return value

    def print_dpi(text: str) -> float:  # the range the TIFF writer takes, checked before anything renders
        return check_dpi(positive(text))

    def seed_value(text: str) -> int:
        value = integer(text)
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{text!r}: must fit in 64 bits")
        return value

    def integer(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r}: must be an integer") from None

    def icc_file(text: str) -> pathlib.Path:
        path = base / text
        try:
            check_output_profile(path.read_bytes(), name=text)
        except OSError as err:
            raise ValueError(f"{text}: {err.strerror}") from None
        return path

    def rendering_intent(text: str) -> Intent:
        try:
            return Intent(text.lower())
        except ValueError:
            raise ValueError(f"{text!r}: expected one of {', '.join(i.value for i in Intent)}") from None

    def compression(text: str) -> Compression:
        try:
            return Compression(text.lower())
        except ValueError:
            choices = ", ".join(c.value for c in Compression)
            raise ValueError(f"{text!r}: expected one of {choices}") from None

    for required in ("model", "output"):
        if not values.get(required):
            errors.append(FieldError(row, required, "is required"))
    model = field("model", model_ref)
    output = field("output", check_output_name)
    content = field("content", lambda t: base / t)
    size = field("size", parse_canvas)
    scale = field("scale", positive)
    dpi = field("dpi", print_dpi)
    print_size = field("print_size", parse_print_size)
    if size is not None and scale is not None:
        errors.append(FieldError(row, "scale", "give a size or a scale, not both"))
    if (size is not None or scale is not None) and dpi is not None and print_size is not None:
        errors.append(FieldError(row, "print_size", "pixels, print size and dpi: give two of them, not three"))
    seed = field("seed", seed_value, 0)
    codec = field("compression", compression)
    panels = field("panels", parse_grid)
    overlap = field("panel_overlap", parse_length, Length(0, LengthUnit.PIXEL))
    artist = field("artist", check_tag_text)
    copyright_ = field("copyright", check_tag_text)
    output_profile = field("output_profile", icc_file)
    intent = field("intent", rendering_intent)
    if errors:
        return errors
    return JobRequest(
        row=row, model=model, output=output, content=content, size=size, scale=scale, dpi=dpi, print_size=print_size,
        seed=seed, compression=codec, panels=panels, panel_overlap=overlap, artist=artist, copyright=copyright_,
        output_profile=output_profile, intent=intent,
        metric=is_metric(values.get("print_size")),
    )


def plan_job(
    request: JobRequest,
    *,
    canvas: tuple[int, int],
    min_dpi: float,
    default_dpi: float | None,
    default_compression: Compression,
) -> Job | list[FieldError]:
    """A request for a model whose canvas is (height, width): the output pixels, the DPI, the
    floor, the panels' regions."""
    row = request.row
    height, width = canvas
    if request.size is not None:
        width, height = request.size
    elif request.scale is not None:
        try:
            width, height = scaled_canvas(width, height, scale=request.scale)
        except UserError as err:
            return [FieldError(row, "scale", str(err))]
    elif request.print_size is not None and request.dpi is not None:
        try:
            width, height = pixels_at_dpi(request.print_size, dpi=request.dpi)
        except UserError as err:
            return [FieldError(row, "print_size", str(err))]
    if request.print_size is not None and request.dpi is not None:
        # the DPI that prints exactly the size asked for (the pixels are whole)
        dpi, source = dpi_for_print_size(width_px=width, height_px=height, print_size=request.print_size), "dpi"
    elif request.print_size is not None:
        try:
            dpi = dpi_for_print_size(width_px=width, height_px=height, print_size=request.print_size)
        except ValueError as err:
            return [FieldError(row, "print_size", str(err))]
        source = "print_size"
    elif request.dpi is not None or default_dpi is not None:
        dpi = request.dpi if request.dpi is not None else default_dpi
        source = "dpi"
    else:
        return [FieldError(row, "dpi", "give a dpi or a print_size (or --dpi for rows with neither)")]
    # the floor applies to the DPI asked for (the exact one differs by a rounded pixel at most)
    if (request.dpi if request.dpi is not None else dpi) < min_dpi:
        w_cm, h_cm = width / dpi * 2.54, height / dpi * 2.54
        return [FieldError(
            row, source,
            f"{dpi:.1f} dpi ({width}x{height} px printed at {w_cm:.1f}x{h_cm:.1f} cm) is below the floor "
            f"of {min_dpi:g} dpi (--min-dpi); give more pixels (size, scale, or print_size with a dpi)",
        )]
    outputs: tuple[Output, ...] = (Output(request.output, None),)
    if request.panels is not None:
        cols, rows = request.panels
        overlap = request.panel_overlap.pixels(dpi=dpi)
        try:
            grid = panel_grid(height=height, width=width, cols=cols, rows=rows, overlap=overlap)
        except ValueError as err:
            field = "panels" if cols > width or rows > height else "panel_overlap"
            return [FieldError(row, field, f"{err} (canvas {width}x{height} px)")]
        stem, suffix = os.path.splitext(request.output)
        outputs = tuple(Output(f"{stem}_r{p.row}c{p.col}{suffix}", p.rect) for p in grid)
    return Job(
        row=row, model=request.model, name=request.output, content=request.content, seed=request.seed,
        compression=request.compression or default_compression, dpi=dpi, width=width, height=height,
        outputs=outputs, artist=request.artist, copyright=request.copyright,
        output_profile=request.output_profile, intent=request.intent,
        unit=ResolutionUnit.CM if request.metric else ResolutionUnit.INCH,
    )


def duplicate_outputs(jobs: Iterable[Job]) -> list[FieldError]:
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


class Canvases(Protocol):
    def canvas(self, model: ModelRef) -> tuple[int, int]:
        """(height, width) of the model's canvas; UserError when the model cannot be used."""

    def renders_any_size(self, model: ModelRef) -> bool:
        """False for a bundle that renders only its trained canvas (format 1)."""


def load_jobs(
    jobs_file: pathlib.Path, *, engine: Canvases, settings: BatchSettings
) -> list[Job]:
    """Parse and validate the whole jobs file; JobsFileError lists every bad field of every row."""
    rows, errors = read_rows(jobs_file)
    base = jobs_file.resolve().parent
    requests = []
    for row, values in rows:
        parsed = parse_request(row, values, base=base, bundles=settings.bundles)
        if isinstance(parsed, list):
            errors += parsed
        else:
            requests.append(parsed)
    if not rows and not errors:
        errors.append(FieldError(1, "(file)", "no jobs"))
    canvases: dict[ModelRef, tuple[int, int] | str] = {}
    jobs = []
    for request in requests:
        if request.model not in canvases:
            try:
                canvases[request.model] = engine.canvas(request.model)
            except UserError as err:
                canvases[request.model] = str(err)
        canvas = canvases[request.model]
        if isinstance(canvas, str):
            errors.append(FieldError(request.row, "model", canvas))
            continue
        problem = _unreadable_image(request.content) if request.content is not None else ""
        if problem:
            errors.append(FieldError(request.row, "content", problem))
        planned = plan_job(
            request, canvas=canvas, min_dpi=settings.min_dpi, default_dpi=settings.tiff.dpi,
            default_compression=settings.tiff.compression,
        )
        if isinstance(planned, list):
            errors += planned
        elif (planned.height, planned.width) != canvas and not engine.renders_any_size(request.model):
            errors.append(FieldError(
                request.row, "size", f"{request.model.name} renders only its canvas {canvas[1]}x{canvas[0]} "
                f"(a format-1 bundle), not {planned.width}x{planned.height}: export it again",
            ))
        elif not problem:
            jobs.append(planned)
    errors += duplicate_outputs(jobs)
    if errors:
        raise JobsFileError(jobs_file, sorted(errors, key=lambda e: e.row))
    return jobs


def _unreadable_image(path: pathlib.Path) -> str:
    """Why ``path`` is not a usable image ("" when it is); reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the header parse is the check
    except FileNotFoundError:
        return f"{path}: no such image file"
    except Image.DecompressionBombError as err:
        return f"{path}: too large to load ({err})"
    except (UnidentifiedImageError, OSError) as err:
        return f"{path}: not a readable image ({err})"
    return ""
