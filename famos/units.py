"""Physical print sizes: one grammar for `famos train --print-size` and the batch jobs file."""

from __future__ import annotations

import re

from famos.errors import UserError

INCHES_PER_UNIT = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4}
NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


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
