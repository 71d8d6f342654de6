"""Print-shop batch: a jobs file, one row per print, rendered to print-ready TIFFs, resumably.

The jobs file is CSV (a header row, then one row per print), TOML (``[[job]]`` tables) or JSON (a
list of objects, or ``{"jobs": [...]}``), with these fields:

    model          bundle folder written by ``famos export``, relative to the jobs file's folder.
                   With ``--bundles DIR`` only its last component, the bundle's name, counts and is
                   looked up in DIR, so one jobs file serves any bundle store; with ``--server``
                   that name is the server's model name.
    output         file name inside ``--out`` (``.tif``/``.tiff``, ``.tif`` added when missing);
                   no folders, no ``..``, no absolute paths.
    content        optional image, relative to the jobs file's folder; empty: the bundle's default
                   content. It is resampled onto the model's canvas.
    dpi            exactly one of the two (or ``--dpi`` as the default for rows with neither).
    print_size     The pixel size is the model's canvas, so one fixes the other: ``dpi = 150``
                   prints the canvas at 150 pixels per inch; ``print_size = 120x80cm`` (cm, mm or
                   in) gives the DPI, and its proportions must match the canvas within 1 %.
                   A DPI under the floor (``--min-dpi``, default 100) is rejected.
    seed           optional integer noise seed (default 0).
    compression    optional: deflate, lzw, none, zstd or jpeg (default ``--compression``, deflate:
                   deflate and LZW are what print RIPs read).
    panels         optional ``COLSxROWS`` (``3x2``): a mural split into equal panels, each its own
                   file ``NAME_r1c2.tif`` (row 1, column 2, counted from the top left).
    panel_overlap  optional overlap of neighbouring panels: ``10mm``, ``1cm``, ``0.5in`` or
                   ``32px`` (default 0). Every pair of neighbours overlaps by at least this much.

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
import enum
import hashlib
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from famos.errors import UserError
from famos.files import file_sha256, write_atomically
from famos.planning import Rect
from famos.tiff import Compression, TiffOptions
from famos.units import INCHES_PER_UNIT, NUMBER, parse_print_size

MANIFEST_NAME = "batch-manifest.json"
REPORT_NAME = "batch-report"  # .csv and .json
MANIFEST_FORMAT = "famos-batch-manifest/1"
DEFAULT_MIN_DPI = 100.0
# A print size is typed in round centimetres; 1 % absorbs that rounding and the canvas's own
# rounding to whole pixels, while a different aspect ratio (a cropped or stretched print) fails.
ASPECT_TOLERANCE = 0.01

FIELDS = (
    "model", "output", "content", "dpi", "print_size", "seed", "compression", "panels", "panel_overlap",
)
_TIFF_SUFFIXES = (".tif", ".tiff")


# --- errors -------------------------------------------------------------------------------------


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


# --- lengths and sizes (pure) ------------------------------------------------------------------


class LengthUnit(enum.Enum):
    PIXEL = "px"
    INCH = "in"


@dataclasses.dataclass(frozen=True)
class Length:
    """A length given either in pixels or physically (stored in inches)."""

    value: float
    unit: LengthUnit

    def pixels(self, *, dpi: float) -> int:
        return round(self.value * dpi) if self.unit is LengthUnit.INCH else round(self.value)


def parse_length(text: str) -> Length:
    """``"10mm"``, ``"1cm"``, ``"0.5in"``, ``"32px"`` (or ``"0"``) -> Length; ValueError otherwise."""
    match = re.fullmatch(rf"\s*{NUMBER}\s*(px|cm|mm|in)?\s*", text.lower())
    if not match or (match[2] is None and float(match[1]) != 0):
        raise ValueError(f"{text!r}: expected a length with a unit px, mm, cm or in (e.g. 10mm)")
    value, unit = float(match[1]), match[2] or "px"
    if unit == "px":
        if value != int(value):
            raise ValueError(f"{text!r}: pixels must be a whole number")
        return Length(value, LengthUnit.PIXEL)
    return Length(value * INCHES_PER_UNIT[unit], LengthUnit.INCH)


def parse_grid(text: str) -> tuple[int, int]:
    """``"3x2"`` -> (columns, rows), both positive."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text.lower())
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"{text!r}: expected COLSxROWS with positive counts (e.g. 3x2)")
    return int(match[1]), int(match[2])


def dpi_for_print_size(*, width_px: int, height_px: int, print_size: tuple[float, float]) -> float:
    """The DPI that prints the canvas at ``print_size`` (inches); ValueError when the proportions differ.

    The smaller of the two axes' DPI wins, so the print never exceeds the requested size.
    """
    dpi_x, dpi_y = width_px / print_size[0], height_px / print_size[1]
    if abs(dpi_x / dpi_y - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(
            f"proportions {print_size[0] / print_size[1]:.3f} (width/height) differ from the model's "
            f"canvas {width_px}x{height_px} px ({width_px / height_px:.3f}); the pixel size is the "
            "canvas, so give a print size of the same proportions or a dpi"
        )
    return min(dpi_x, dpi_y)


def panel_spans(length: int, count: int, overlap: int) -> tuple[tuple[int, int], ...]:
    """``count`` equal (start, size) spans covering [0, length), neighbours overlapping >= ``overlap``.

    Equal sizes, because a print shop feeds every panel to the same paper width. The size is the
    smallest that gives every pair the overlap; its rounding slack (under one pixel per panel) is
    spread evenly over the pairs. ValueError when the spans cannot advance.
    """
    if count < 1 or count > length:
        raise ValueError(f"{count} panels do not fit {length} pixels")
    if overlap < 0:
        raise ValueError(f"overlap {overlap} px is negative")
    size = -(-(length + (count - 1) * overlap) // count)
    if count == 1:
        return ((0, length),)
    travel = length - size  # how far the last panel's start is from the first's
    if travel < count - 1:
        raise ValueError(f"overlap {overlap} px leaves no room between {count} panels of {size} px")
    # starts rounded half up from i * travel / (count - 1): steps <= size - overlap, so >= overlap
    return tuple(((2 * i * travel + count - 1) // (2 * (count - 1)), size) for i in range(count))


@dataclasses.dataclass(frozen=True)
class Panel:
    row: int  # 1-based, from the top
    col: int  # 1-based, from the left
    rect: Rect


def panel_grid(*, height: int, width: int, cols: int, rows: int, overlap: int) -> tuple[Panel, ...]:
    """The panels of a ``cols`` x ``rows`` split, row-major from the top left."""
    ys = panel_spans(height, rows, overlap)
    xs = panel_spans(width, cols, overlap)
    return tuple(
        Panel(r + 1, c + 1, Rect(y=y, x=x, height=h, width=w))
        for r, (y, h) in enumerate(ys)
        for c, (x, w) in enumerate(xs)
    )


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


# --- jobs --------------------------------------------------------------------------------------


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
    dpi: float | None
    print_size: tuple[float, float] | None  # inches
    seed: int
    compression: Compression | None  # None: the batch default
    panels: tuple[int, int] | None  # (cols, rows)
    panel_overlap: Length


@dataclasses.dataclass(frozen=True)
class Output:
    name: str  # file name inside the output folder
    region: Rect | None  # None: the whole canvas

    def pixels(self, job: Job) -> int:
        return self.region.pixels if self.region else job.width * job.height


@dataclasses.dataclass(frozen=True)
class Job:
    """A validated print: the model's canvas at a DPI, and the files it produces."""

    row: int
    model: ModelRef
    name: str  # the output column (panels derive their names from it)
    content: pathlib.Path | None
    seed: int
    compression: Compression
    dpi: float
    width: int  # canvas pixels
    height: int
    outputs: tuple[Output, ...]

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

    def integer(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r}: must be an integer") from None

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
    dpi = field("dpi", positive)
    print_size = field("print_size", parse_print_size)
    if dpi is not None and print_size is not None:
        errors.append(FieldError(row, "print_size", "give a dpi or a print size, not both (the pixel size is fixed)"))
    seed = field("seed", integer, 0)
    codec = field("compression", compression)
    panels = field("panels", parse_grid)
    overlap = field("panel_overlap", parse_length, Length(0, LengthUnit.PIXEL))
    if errors:
        return errors
    return JobRequest(
        row=row, model=model, output=output, content=content, dpi=dpi, print_size=print_size,
        seed=seed, compression=codec, panels=panels, panel_overlap=overlap,
    )


def plan_job(
    request: JobRequest,
    *,
    canvas: tuple[int, int],
    min_dpi: float,
    default_dpi: float | None,
    default_compression: Compression,
) -> Job | list[FieldError]:
    """A request on its model's canvas (height, width): the DPI, the floor, the panels' regions."""
    height, width = canvas
    row = request.row
    if request.print_size is not None:
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
    if dpi < min_dpi:
        w_cm, h_cm = width / dpi * 2.54, height / dpi * 2.54
        return [FieldError(
            row, source,
            f"{dpi:.1f} dpi ({width}x{height} px printed at {w_cm:.1f}x{h_cm:.1f} cm) is below the floor "
            f"of {min_dpi:g} dpi (--min-dpi); the model's canvas is too small for this print",
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
        outputs=outputs,
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


# --- engines -----------------------------------------------------------------------------------


class Engine(Protocol):
    """What the batch needs from a renderer: canvases to validate against, and TIFFs."""

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        """(height, width) of the model's canvas; UserError when the model cannot be used."""

    def fingerprint(self, model: ModelRef) -> str:
        """Identifies the model's weights, so a re-exported bundle re-renders its outputs."""

    def render(self, job: Job, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        """Write ``output`` of ``job`` to ``path`` atomically (no file at ``path`` on failure)."""


class LocalEngine:
    """Renders in this process: one bundle load and one Renderer per distinct bundle."""

    def __init__(self, *, backend: str = "onnx", device: str = "cpu", chunk: int = 1024, prepare_workers: int = 2):
        self.backend = backend
        self.device = device
        self.chunk = chunk
        self.prepare_workers = prepare_workers
        self._bundles: dict[pathlib.Path, Any] = {}
        self._renderers: dict[pathlib.Path, Any] = {}
        self._contents: dict[pathlib.Path, Any] = {}

    def bundle(self, model: ModelRef):
        key = model.path.resolve()
        if key not in self._bundles:
            from export.bundle import load_bundle

            self._bundles[key] = load_bundle(key)
        return self._bundles[key]

    def renderer(self, model: ModelRef):
        key = model.path.resolve()
        if key not in self._renderers:
            from export.bundle import Backend
            from render_server.render import Renderer

            self._renderers[key] = Renderer(self.bundle(model), backend=Backend(self.backend), device=self.device)
        return self._renderers[key]

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        canvas = self.bundle(model).spec.canvas
        return canvas.height, canvas.width

    def fingerprint(self, model: ModelRef) -> str:
        return self.bundle(model).sha256

    def render(self, job: Job, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        from render_server.render import RenderSettings, render_tiff

        settings = RenderSettings(seed=job.seed, chunk=self.chunk, region=output.region, prepare_workers=self.prepare_workers)
        render_tiff(self.renderer(job.model), path, settings=settings, options=options, content=self._content(job))

    def _content(self, job: Job):
        if job.content is None:
            return None
        # panels of one job share the decoded image; only the last job's image is kept
        if job.content not in self._contents:
            from famos.canvas import load_rgb

            self._contents = {job.content: load_rgb(job.content)}
        return self._contents[job.content]


class ServerEngine:
    """Renders through a render server with ``clients.render_client.RenderClient``: the model
    column's name is the server's model name, content images travel as their encoded bytes, and
    the TIFF is assembled here from the streamed chunks (so the same print conventions apply)."""

    def __init__(self, target: str, *, token: str | None = None, root_certificates: bytes | None = None):
        from clients.render_client import RenderClient

        self.client = RenderClient(target, token=token, root_certificates=root_certificates)
        self._models: dict[str, Any] | None = None

    def close(self) -> None:
        self.client.close()

    def _model(self, model: ModelRef):
        if self._models is None:
            self._models = {m.name: m for m in self.client.models()}
        if model.name not in self._models:
            served = ", ".join(sorted(self._models)) or "none"
            raise UserError(f"model {model.name!r} is not served (served: {served})")
        return self._models[model.name]

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        info = self._model(model)
        return info.canvas_height, info.canvas_width

    def fingerprint(self, model: ModelRef) -> str:
        return self._model(model).bundle_sha256

    def render(self, job: Job, output: Output, path: pathlib.Path, *, options: TiffOptions) -> None:
        from clients.render_client import Region

        region = output.region
        self.client.render_to_tiff(
            job.model.name,
            path,
            seed=job.seed,
            region=Region(x=region.x, y=region.y, width=region.width, height=region.height) if region else None,
            content=job.content.read_bytes() if job.content is not None else b"",
            options=options,
        )


# --- manifest ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    bytes: int
    sha256: str
    fingerprint: str  # what produced the file: model weights, content, seed, DPI, codec, region
    row: int


class Manifest:
    """``OUT/batch-manifest.json``: every finished output, rewritten atomically after each one."""

    def __init__(self, path: pathlib.Path, *, log: Callable[[str], None]):
        self.path = path
        self.entries: dict[str, ManifestEntry] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("format") != MANIFEST_FORMAT:
                    raise ValueError(f"format {data.get('format')!r}")
                self.entries = {k: ManifestEntry(**v) for k, v in data["outputs"].items()}
            except (ValueError, KeyError, TypeError) as err:
                # a manifest we cannot trust only costs re-rendering; it never blocks the batch
                log(f"ignoring unreadable {path} ({err}): every output is re-rendered")

    def verified(self, name: str, fingerprint: str) -> bool:
        """Whether the file exists with the recorded size and checksum, made from the same inputs."""
        entry = self.entries.get(name)
        file = self.path.parent / name
        if entry is None or entry.fingerprint != fingerprint or not file.is_file():
            return False
        return file.stat().st_size == entry.bytes and file_sha256(file) == entry.sha256

    def record(self, name: str, entry: ManifestEntry) -> None:
        self.entries[name] = entry
        self._save()

    def forget(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self._save()

    def _save(self) -> None:
        outputs = {k: dataclasses.asdict(v) for k, v in sorted(self.entries.items())}
        write_atomically(self.path, json.dumps({"format": MANIFEST_FORMAT, "outputs": outputs}, indent=1).encode())


# --- the batch ---------------------------------------------------------------------------------


class JobStatus(enum.Enum):
    DONE = "done"  # rendered now (some outputs may have been verified and kept)
    SKIPPED = "skipped"  # every output verified from an earlier run
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class JobResult:
    row: int
    output: str
    model: str
    status: JobStatus
    width: int
    height: int
    dpi: float
    files: int
    bytes: int  # all of the job's files
    rendered_pixels: int  # pixels rendered in this run (panels count their overlap)
    seconds: float
    error: str = ""


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    out: pathlib.Path
    tiff: TiffOptions = TiffOptions()  # base options; each job sets its compression and DPI
    min_dpi: float = DEFAULT_MIN_DPI
    bundles: pathlib.Path | None = None  # resolve the model column by name in this folder


@dataclasses.dataclass(frozen=True)
class BatchReport:
    results: tuple[JobResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.status is not JobStatus.FAILED for r in self.results)

    @property
    def rendered_pixels(self) -> int:
        return sum(r.rendered_pixels for r in self.results)

    @property
    def megapixels_per_second(self) -> float:
        return self.rendered_pixels / 1e6 / self.seconds if self.seconds > 0 else 0.0


def load_jobs(
    jobs_file: pathlib.Path, *, engine: Engine, settings: BatchSettings
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


def output_fingerprint(job: Job, output: Output, *, model: str, options: TiffOptions) -> str:
    """Everything that determines an output's bytes; a change re-renders instead of skipping."""
    content = file_sha256(job.content) if job.content is not None else "default"
    recipe = {
        "model": model,
        "content": content,
        "seed": job.seed,
        "region": dataclasses.asdict(output.region) if output.region else None,
        "tiff": {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(options).items() if k != "workers"},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def run_batch(
    jobs: Sequence[Job],
    *,
    engine: Engine,
    settings: BatchSettings,
    log: Callable[[str], None] = lambda line: None,
) -> BatchReport:
    """Render every job (skipping verified outputs) and write the reports; one failure stops nothing.

    KeyboardInterrupt stops the batch: the output being written is removed by the writer, the
    manifest keeps everything finished before it.
    """
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / MANIFEST_NAME, log=log)
    start = time.perf_counter()
    results = []
    for index, job in enumerate(jobs, start=1):
        log(f"[{index}/{len(jobs)}] row {job.row}: {job.name} ({job.width}x{job.height} px at {job.dpi:.1f} dpi, "
            f"{len(job.outputs)} file{'s' if len(job.outputs) > 1 else ''})")
        results.append(_run_job(job, engine=engine, settings=settings, manifest=manifest, log=log))
    report = BatchReport(tuple(results), time.perf_counter() - start)
    write_reports(report, out)
    return report


def _run_job(job: Job, *, engine: Engine, settings: BatchSettings, manifest: Manifest, log) -> JobResult:
    options = dataclasses.replace(settings.tiff, compression=job.compression, dpi=job.dpi)
    start = time.perf_counter()
    rendered_pixels = size = 0
    rendered_files = 0

    def result(status: JobStatus, error: str = "") -> JobResult:
        return JobResult(
            row=job.row, output=job.name, model=job.model.name, status=status, width=job.width,
            height=job.height, dpi=job.dpi, files=len(job.outputs), bytes=size,
            rendered_pixels=rendered_pixels, seconds=time.perf_counter() - start, error=error,
        )

    try:
        model = engine.fingerprint(job.model)
        for output in job.outputs:
            path = settings.out / output.name
            fingerprint = output_fingerprint(job, output, model=model, options=options)
            if manifest.verified(output.name, fingerprint):
                size += manifest.entries[output.name].bytes
                log(f"    {output.name}: verified, skipped")
                continue
            manifest.forget(output.name)  # a stale entry must not vouch for the file being replaced
            began = time.perf_counter()
            engine.render(job, output, path, options=options)
            entry = ManifestEntry(bytes=path.stat().st_size, sha256=file_sha256(path), fingerprint=fingerprint, row=job.row)
            manifest.record(output.name, entry)
            rendered_pixels += output.pixels(job)
            rendered_files += 1
            size += entry.bytes
            log(f"    {output.name}: {output.pixels(job) / 1e6:.2f} MP, {entry.bytes / 1e6:.2f} MB, "
                f"{time.perf_counter() - began:.2f} s")
    except Exception as err:  # noqa: BLE001 - one bad job must not stop the others; reported per job
        log(f"    failed: {err}")
        return result(JobStatus.FAILED, f"{type(err).__name__}: {err}")
    return result(JobStatus.DONE if rendered_files else JobStatus.SKIPPED)


# --- reports -----------------------------------------------------------------------------------

_REPORT_COLUMNS = ("row", "output", "model", "status", "width", "height", "dpi", "files", "bytes",
                   "rendered_pixels", "seconds", "error")


def _report_record(result: JobResult) -> dict[str, Any]:
    record = dataclasses.asdict(result)
    record["status"] = result.status.value
    record["dpi"] = round(result.dpi, 2)
    record["seconds"] = round(result.seconds, 3)
    return record


def write_reports(report: BatchReport, out: pathlib.Path) -> None:
    """``batch-report.csv`` (one row per job) and ``batch-report.json`` (jobs and totals)."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_REPORT_COLUMNS)
    writer.writeheader()
    for result in report.results:
        writer.writerow(_report_record(result))
    write_atomically(out / f"{REPORT_NAME}.csv", buffer.getvalue().encode())
    summary = {
        "ok": report.ok,
        "jobs": len(report.results),
        **{status.value: sum(r.status is status for r in report.results) for status in JobStatus},
        "rendered_megapixels": round(report.rendered_pixels / 1e6, 3),
        "seconds": round(report.seconds, 3),
        "megapixels_per_second": round(report.megapixels_per_second, 3),
    }
    data = {"summary": summary, "jobs": [_report_record(r) for r in report.results]}
    write_atomically(out / f"{REPORT_NAME}.json", json.dumps(data, indent=1).encode())


def format_summary(report: BatchReport) -> str:
    """The table printed at the end of a batch."""
    header = ("row", "output", "status", "pixels", "dpi", "files", "MB", "seconds", "error")
    lines = [header]
    for r in report.results:
        lines.append((
            str(r.row), r.output, r.status.value, f"{r.width}x{r.height}", f"{r.dpi:.1f}", str(r.files),
            f"{r.bytes / 1e6:.2f}", f"{r.seconds:.2f}", r.error,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + ("  " + line[-1] if line[-1] else "")
             for line in lines]
    counts = ", ".join(f"{sum(r.status is s for r in report.results)} {s.value}" for s in JobStatus)
    table.append(
        f"{len(report.results)} jobs: {counts}; rendered {report.rendered_pixels / 1e6:.2f} MP in "
        f"{report.seconds:.2f} s ({report.megapixels_per_second:.2f} MP/s)"
    )
    return "\n".join(line.rstrip() for line in table)
