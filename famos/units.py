"""Sizes, pure: one grammar for pixels (``WxH``), scales and print sizes at a DPI, shared by
`famos train`, `famos render`, `famos evaluate`, `famos client` and the batch jobs file, and the
print geometry built on it (DPI from a print size, lengths in px or physical units, mural panels)."""

from __future__ import annotations

import dataclasses
import enum
import math
import re

from famos.errors import InvalidField, UserError
from famos.planning import Rect

INCHES_PER_UNIT = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4}
NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
# A print size is typed in round centimetres; 1 % absorbs that rounding and the canvas's own
# rounding to whole pixels, while a different aspect ratio (a cropped or stretched print) fails.
ASPECT_TOLERANCE = 0.01
# The longest side of any canvas or output, 2^20 px (a terapixel square; 88 m at 300 dpi): far past
# every print, and small enough that sizes fit the gRPC int32 fields and plans stay bounded.
MAX_SIDE = 2**20


class UnitError(UserError, ValueError):
    """A size or length that does not parse; the message quotes it."""


def is_metric(print_size: str | None) -> bool:
    """Whether a print size is given in cm or mm (its resolution tags then use cm)."""
    return bool(print_size) and print_size.strip().lower().endswith(("cm", "mm"))


def duration(seconds: float) -> str:
    """An expected duration as a person reads it: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def parse_print_size(text: str) -> tuple[float, float]:
    """``"120x80cm"`` / ``"47x31in"`` / ``"1200x800mm"`` -> (width, height) in inches."""
    match = re.fullmatch(rf"\s*{NUMBER}\s*[x×]\s*{NUMBER}\s*(cm|mm|in)\s*", text.lower())
    if not match:
        raise UnitError(f"print size {text!r}: expected WIDTHxHEIGHT with a unit cm, mm or in (e.g. 120x80cm)")
    width, height, unit = float(match[1]), float(match[2]), match[3]
    if width <= 0 or height <= 0:
        raise UnitError(f"print size {text!r}: width and height must be positive")
    return width * INCHES_PER_UNIT[unit], height * INCHES_PER_UNIT[unit]


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


# --- pixel sizes: a training canvas, or a render's output size ----------------------------------


def print_pixels(text: str, *, dpi: float) -> tuple[int, int]:
    """Pixel (width, height) of a print size (``"60x40cm"``) at ``dpi``: round(inches x dpi)."""
    return pixels_at_dpi(parse_print_size(text), dpi=dpi, what=text)


def pixels_at_dpi(inches: tuple[float, float], *, dpi: float, what: str = "print size") -> tuple[int, int]:
    if not (math.isfinite(dpi) and dpi > 0):
        raise UnitError(f"dpi = {dpi:g} must be a positive number")
    return _positive(what, *_rounded(inches[0] * dpi, inches[1] * dpi))


def parse_canvas(text: str) -> tuple[int, int]:
    """``"1200x800"`` -> (width, height) in pixels, both positive."""
    match = re.fullmatch(r"\s*(-?\d+)\s*[x×]\s*(-?\d+)\s*", text.lower())
    if not match:
        raise UnitError(f"canvas {text!r}: expected WIDTHxHEIGHT in pixels (e.g. 1200x800)")
    return _positive(text, int(match[1]), int(match[2]))


def scaled_canvas(content_width: int, content_height: int, *, scale: float) -> tuple[int, int]:
    if not (math.isfinite(scale) and scale > 0):
        raise UnitError(f"scale = {scale:g} must be a positive number")
    return _positive(f"scale {scale:g}", *_rounded(content_width * scale, content_height * scale))


def _rounded(width: float, height: float) -> tuple[int, int]:
    """Whole pixels of a product that may have overflowed to infinity (a scale of 1e308): that
    is over MAX_SIDE too, so it is refused as "more than 10^12 pixels a side" (``_positive``)
    rather than raising OverflowError."""
    return tuple(round(side) if math.isfinite(side) else 10**12 for side in (width, height))


def _positive(what: str, width: int, height: int) -> tuple[int, int]:
    if width > MAX_SIDE or height > MAX_SIDE:
        shown = f"{width}x{height} pixels" if max(width, height) < 10**12 else "more than 10^12 pixels a side"
        raise UnitError(f"canvas {what} gives {shown}: a side is over the limit of {MAX_SIDE}")
    if width < 1 or height < 1:
        raise UnitError(f"canvas {what} gives {width}x{height} pixels: width and height must be positive")
    return width, height


def output_size(
    *, canvas: tuple[int, int] | None, size: str | None = None, scale: float | None = None,
    print_size: str | None = None, dpi: float | None = None,
) -> tuple[int, int] | None:
    """The (height, width) to render a model whose canvas is ``canvas`` (height, width) at: ``size``
    ``WxH`` pixels, ``scale`` times the canvas, or ``print_size`` at ``dpi``; None (the model's own
    canvas) when none is given. At most one of the three; ``dpi`` alone only tags the file. A
    client that does not know the canvas passes None: a scale is then checked and left to the
    server (None is returned)."""
    given = [name for name, value in (("size", size), ("scale", scale), ("print_size", print_size)) if value is not None]
    if len(given) > 1:
        raise InvalidField(given[1], f"give one output size: {' or '.join(given)}, not both")
    try:
        if size:
            width, height = parse_canvas(size)
        elif scale is not None:
            if canvas is None:
                if not (math.isfinite(scale) and scale > 0):
                    raise InvalidField("scale", f"{scale:g} must be a positive number")
                return None
            width, height = scaled_canvas(canvas[1], canvas[0], scale=scale)
        elif print_size:
            if dpi is None:
                raise InvalidField("print_size", f"{print_size!r} needs a dpi (the pixels are print size x dpi)")
            width, height = print_pixels(print_size, dpi=dpi)
        else:
            return None
    except InvalidField:
        raise
    except UserError as err:
        raise InvalidField(given[0], str(err)) from None
    return height, width


def add_size_arguments(parser) -> None:
    """``--size --scale --print-size``: the output size of `famos render` and `famos client`; the
    print size's DPI is the TIFF ``--dpi`` option, which then also tags the file."""
    group = parser.add_argument_group("output size (default: the model's canvas)")
    group.add_argument("--size", metavar="WxH", help="output pixels, e.g. 6000x4000")
    group.add_argument("--scale", type=float, metavar="F", help="the model's canvas times F")
    group.add_argument("--print-size", metavar="SIZE", help="e.g. 60x40cm, 24x16in, 600x400mm; with --dpi")
