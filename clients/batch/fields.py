"""The fields of a jobs-file row, each parsed into its value, and the row into a ``JobRequest``.

What each field means is the jobs file's documentation (``famos.clients.batch.jobs_file``). Every bad
field becomes a ``FieldError`` that names its row and field, so a row reports all its errors at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from famos.errors import quoted
from famos.icc import check_output_profile, profile_bytes
from famos.tiff_options import Compression, Intent, check_dpi, check_tag_text
from famos.units import Length, LengthUnit, is_metric, parse_canvas, parse_grid, parse_length, parse_print_size

_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class FieldError:
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        field = self.field if len(self.field) <= 64 else quoted(self.field)  # an unknown column can be anything
        message = self.message if len(self.message) <= 500 else f"{self.message[:500]}... ({len(self.message)} characters)"
        return f"row {self.row}, {_one_line(field)}: {_one_line(message)}"


def _one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped: an error is one short line
    per field, whatever a jobs file put in a column name or a value."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


class _RowFields:
    """The text fields of one row, parsed one at a time; a bad field is recorded and parsing goes on."""

    def __init__(self, row: int, values: Mapping[str, str]):
        self.row = row
        self.values = values
        self.errors: list[FieldError] = []

    def error(self, name: str, message: str) -> None:
        self.errors.append(FieldError(self.row, name, message))

    def require(self, *names: str) -> None:
        for name in names:
            if not self.values.get(name):
                self.error(name, "is required")

    def parse(self, name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
        """The field's value, or ``default`` when it is empty or bad (then an error is recorded)."""
        text = self.values.get(name, "")
        if not text:
            return default
        try:
            return parse(text)
        except ValueError as err:
            self.error(name, str(err))
            return default


def parse_request(
    row: int, values: Mapping[str, str], *, base: pathlib.Path, bundles: pathlib.Path | None
) -> JobRequest | list[FieldError]:
    """One row -> JobRequest, or every field error of the row. Reads no file but the ICC profiles it names."""
    fields = _RowFields(row, values)
    fields.require("model", "output")
    model = fields.parse("model", functools.partial(_model_ref, base=base, bundles=bundles))
    output = fields.parse("output", check_output_name)
    content = fields.parse("content", lambda text: base / text)
    size, scale, dpi, print_size = _output_size_fields(fields)
    seed = fields.parse("seed", _seed, 0)
    compression = fields.parse("compression", _compression)
    panels = fields.parse("panels", parse_grid)
    overlap = fields.parse("panel_overlap", parse_length, Length(0, LengthUnit.PIXEL))
    artist = fields.parse("artist", check_tag_text)
    copyright_ = fields.parse("copyright", check_tag_text)
    output_profile = fields.parse("output_profile", functools.partial(_icc_file, base=base))
    intent = fields.parse("intent", _rendering_intent)
    if fields.errors:
        return fields.errors
    return JobRequest(
        row=row, model=model, output=output, content=content, size=size, scale=scale, dpi=dpi, print_size=print_size,
        seed=seed, compression=compression, panels=panels, panel_overlap=overlap, artist=artist, copyright=copyright_,
        output_profile=output_profile, intent=intent,
        metric=is_metric(values.get("print_size")),
    )


def _output_size_fields(
    fields: _RowFields,
) -> tuple[tuple[int, int] | None, float | None, float | None, tuple[float, float] | None]:
    """size, scale, dpi and print_size: at most one of size and scale, at most two of pixels, print
    size and dpi (any two fix the third)."""
    size = fields.parse("size", parse_canvas)
    scale = fields.parse("scale", _positive)
    dpi = fields.parse("dpi", _print_dpi)
    print_size = fields.parse("print_size", parse_print_size)
    if size is not None and scale is not None:
        fields.error("scale", "give a size or a scale, not both")
    if (size is not None or scale is not None) and dpi is not None and print_size is not None:
        fields.error("print_size", "pixels, print size and dpi: give two of them, not three")
    return size, scale, dpi, print_size


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


def _model_ref(text: str, *, base: pathlib.Path, bundles: pathlib.Path | None) -> ModelRef:
    path = pathlib.PurePath(text)
    if not path.name or path.name in (".", ".."):
        raise ValueError(f"{text!r}: expected a bundle folder")
    local = bundles / path.name if bundles is not None else base / text
    return ModelRef(name=path.name, path=pathlib.Path(local))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r}: must be a positive number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: must be a positive number")
    return value


def _print_dpi(text: str) -> float:  # the range the TIFF writer takes, checked before anything renders
    return check_dpi(_positive(text))


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r}: must be an integer") from None


def _seed(text: str) -> int:
    value = _integer(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text!r}: must fit in 64 bits")
    return value


def _compression(text: str) -> Compression:
    try:
        return Compression(text.lower())
    except ValueError:
        choices = ", ".join(c.value for c in Compression)
        raise ValueError(f"{text!r}: expected one of {choices}") from None


def _icc_file(text: str, *, base: pathlib.Path) -> pathlib.Path:
    path = base / text
    try:
        check_output_profile(profile_bytes(str(path)), name=text)
    except OSError as err:
        raise ValueError(f"{text}: {err.strerror}") from None
    return path


def _rendering_intent(text: str) -> Intent:
    try:
        return Intent(text.lower())
    except ValueError:
        raise ValueError(f"{text!r}: expected one of {', '.join(i.value for i in Intent)}") from None
