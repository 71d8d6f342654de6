"""Physical sizes, pure: one grammar for `famos train --print-size` and the batch jobs file, and the
print geometry built on it (DPI from a print size, lengths in px or physical units, mural panels)."""

from __future__ import annotations

import dataclasses
import enum
import re

from famos.errors import UserError
from famos.planning import Rect

INCHES_PER_UNIT = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4}
NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
# A print size is typed in round centimetres; 1 % absorbs that rounding and the canvas's own
# rounding to whole pixels, while a different aspect ratio (a cropped or stretched print) fails.
ASPECT_TOLERANCE = 0.01


class UnitError(UserError, ValueError):
    """A size or length that does not parse; the message quotes it."""


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
