"""The jobs file: its format, read into rows, then parsed and planned into ``PrintJob``s.

The jobs file is CSV (a header row, then one row per print), TOML (``[[job]]`` tables) or JSON (a
list of objects, or ``{"jobs": [...]}``), with these fields:

    model          bundle folder written by ``famos export``, relative to the jobs file's folder.
                   With ``--bundles DIR`` only its last component, the bundle's name, counts and is
                   looked up in DIR, so one jobs file serves any bundle store; with ``--server``
                   that name is the server's model name.
    output         file name inside ``--out`` (``.tif``/``.tiff``, ``.tif`` added when missing);
                   no folders, no ``..``, no absolute paths. ``{stem}`` in it stands for the content
                   image's stem (``card-{stem}.tif``), and is required with a content folder.
    content        optional image, relative to the jobs file's folder; empty: the bundle's default
                   content. It is resampled onto the output canvas. A folder (the frames of a video)
                   renders each of its images (png, jpg/jpeg, tif/tiff, webp, bmp; sorted by name,
                   hidden files and subfolders left out) with the row's options, one output per
                   image named by the output pattern: ``frame-{stem}.tif`` writes
                   ``frame-0001.tif`` for ``0001.png``. Two images of one stem are an error, and so
                   are a folder without images and a content folder that is ``--out`` itself.
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
it). A re-run skips outputs whose file still matches its manifest entry and renders the rest (a
folder row's images each count as a job: a re-run renders only the frames not yet done). One
failing job does not stop the others; ``OUT/batch-report.csv`` and ``.json`` say what happened.

Each field is parsed in ``fields``, and each row planned in ``planning``; none of it imports torch:
the render engine loads only in ``LocalEngine``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from collections.abc import Sequence

from famos.clients.batch.fields import FieldError, parse_request
from famos.clients.batch.planning import Canvases, PrintJob, plan_jobs
from famos.errors import UserError
from famos.request_args import is_folder
from famos.tiff_options import TiffOptions

DEFAULT_MIN_DPI = 100.0
FIELDS = (
    "model", "output", "content", "size", "scale", "dpi", "print_size", "seed", "compression", "panels", "artist", "copyright",
    "output_profile", "intent",
    "panel_overlap",
)
Row = tuple[int, dict[str, str]]  # (row number, field -> text)


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    out: pathlib.Path
    tiff: TiffOptions = TiffOptions()  # base options; each job sets its compression and DPI
    min_dpi: float = DEFAULT_MIN_DPI
    bundles: pathlib.Path | None = None  # resolve the model column by name in this folder
    overwrite: bool = False  # replace files in --out that this batch's ledger does not know


class JobsFileError(UserError):
    """The jobs file has bad rows; lists every one of them, and nothing was rendered."""

    def __init__(self, path: pathlib.Path, errors: Sequence[FieldError]):
        self.path = path
        self.errors = tuple(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        noun = "error" if len(self.errors) == 1 else "errors"
        super().__init__(f"{path}: {len(self.errors)} {noun}, nothing rendered:\n{lines}")


def load_jobs(
    jobs_file: pathlib.Path, *, engine: Canvases, settings: BatchSettings
) -> list[PrintJob]:
    """Parse and validate the whole jobs file; JobsFileError lists every bad field of every row."""
    rows, errors = read_rows(jobs_file)
    base = jobs_file.resolve().parent
    requests = []
    for row, values in rows:
        parsed = parse_request(row, values, base=base, bundles=settings.bundles)
        if isinstance(parsed, list):
            errors += parsed
        elif _is_out(parsed.content, settings.out):
            errors.append(FieldError(row, "content", f"{parsed.content}: is the output folder --out; its outputs "
                                     "would be inputs of the next run: write them elsewhere"))
        else:
            requests.append(parsed)
    if not rows and not errors:
        errors.append(FieldError(1, "(file)", "no jobs"))
    jobs, problems = plan_jobs(
        requests, engine=engine, min_dpi=settings.min_dpi, default_dpi=settings.tiff.dpi,
        default_compression=settings.tiff.compression,
    )
    errors += problems
    if errors:
        raise JobsFileError(jobs_file, sorted(errors, key=lambda e: e.row))
    return jobs


def _is_out(content: pathlib.Path | None, out: pathlib.Path) -> bool:
    """Whether a row's content is the folder the batch writes to."""
    return content is not None and is_folder(content) and content.resolve() == out.resolve()


def read_rows(path: pathlib.Path) -> tuple[list[Row], list[FieldError]]:
    """Rows of a CSV/TOML/JSON jobs file as (row number, field -> text); unknown fields are errors."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets like to prepend a BOM
    except FileNotFoundError:
        raise UserError(f"{path}: no such jobs file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the jobs file ({err})") from None
    if suffix == ".csv":
        try:
            return _csv_rows(text)
        except csv.Error as err:  # e.g. a field over the csv module's 131,072 characters
            raise UserError(f"{path}: not a readable CSV jobs file ({err})") from None
    return _record_rows(_records(path, text, suffix=suffix))


def _csv_rows(text: str) -> tuple[list[Row], list[FieldError]]:
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


def _records(path: pathlib.Path, text: str, *, suffix: str) -> list[dict]:
    """The jobs of a TOML or JSON file, as they were written."""
    if suffix == ".toml":
        import tomllib

        try:
            records = tomllib.loads(text).get("job", [])
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{path}: not valid TOML ({err})") from None
        except RecursionError:
            raise UserError(f"{path}: nested too deeply to be a jobs file") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        except RecursionError:
            raise UserError(f"{path}: nested too deeply to be a jobs file") from None
        records = data.get("jobs", []) if isinstance(data, dict) else data
    else:
        raise UserError(f"{path}: jobs file must be .csv, .toml or .json")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: expected a list of jobs ([[job]] tables in TOML, a list of objects in JSON)")
    return records


def _record_rows(records: list[dict]) -> tuple[list[Row], list[FieldError]]:
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
