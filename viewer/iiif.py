"""IIIF Image API 3.0, compliance level 2, over an ``ImageSource``: parse a request, answer it.

    {region}/{size}/{rotation}/{quality}.{format}
    region   full | square | x,y,w,h | pct:x,y,w,h
    size     max | ^max | w, | ,h | pct:n | w,h | !w,h   (^: upscaling allowed)
    rotation 0 | 90 | 180 | 270, optionally mirrored (!)
    quality  default | color | gray | bitonal
    format   jpg | png

A request is read from the coarsest zoom level that still has at least the pixels asked for, so
its cost is bounded by the output size (at most 4x its pixels are read), never by the image's; an
output over the server's ``OutputLimits`` (info.json's maxWidth, maxHeight, maxArea) is refused
while the request is parsed, before anything is decoded.
Every malformed or impossible request is an ``IIIFError`` with the HTTP status the API names.
Numbers are ASCII digits of bounded length (no ``²``, no 400-digit integers or floats that overflow).
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from typing import Any


from famos.viewer.sources import ImageSource

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROFILE = "level2"
FORMATS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png")}
QUALITIES = ("default", "color", "gray", "bitonal")
JPEG_QUALITY = 90

_INTEGER = r"[0-9]{1,9}"  # pixels: far past any image, far short of what int() and float() refuse
_DECIMAL = r"[0-9]{1,9}(?:\.[0-9]{1,9})?"  # percentages
_DEGREES = r"[0-9]{1,3}(?:\.[0-9]{1,9})?"


class IIIFError(Exception):
    """A request the API answers with ``status`` (400 bad syntax or out of range, 404 unknown)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class OutputLimits:
    """The largest answer, in pixels; info.json states it. Memory per request stays ~200 MB at the default."""

    max_width: int = 4096
    max_height: int = 4096
    max_area: int = 4096 * 4096

    def __post_init__(self):
        from famos.errors import InvalidField

        for name in ("max_width", "max_height", "max_area"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidField(f"--{name.replace('_', '-')}", f"must be a whole number of pixels from 1, got {value!r}")


def shown(text: str) -> str:
    """``text`` quoted for a one-line message, cut short."""
    return repr(text[:40] + "..." if len(text) > 40 else text)


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    x: int  # the region, full-resolution pixels
    y: int
    width: int  # of the region
    height: int
    out_width: int  # the answer's size before rotation
    out_height: int
    rotation: int  # 0, 90, 180, 270
    mirror: bool
    quality: str
    format: str


def parse(source: ImageSource, region: str, size: str, rotation: str, quality_format: str, *,
          limits: OutputLimits = OutputLimits()) -> ImageRequest:
    x, y, w, h = _region(region, source.width, source.height)
    out_w, out_h = _size(size, w, h, limits)
    degrees, mirror = _rotation(rotation)
    quality, _, fmt = quality_format.rpartition(".")
    if quality not in QUALITIES:
        raise IIIFError(400, f"quality {shown(quality)}: use one of {', '.join(QUALITIES)}")
    if fmt not in FORMATS:
        raise IIIFError(400, f"format {shown(fmt)}: use jpg or png")
    return ImageRequest(x, y, w, h, out_w, out_h, degrees, mirror, quality, fmt)


def _region(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    if text.startswith("pct:"):
        match = re.fullmatch(f"pct:({_DECIMAL}),({_DECIMAL}),({_DECIMAL}),({_DECIMAL})", text)
        if match is None:
            raise IIIFError(400, f"region {shown(text)}: expected pct:x,y,w,h")
        px, py, pw, ph = (float(v) for v in match.groups())
        x, y = round(px * width / 100), round(py * height / 100)
        w, h = round(pw * width / 100), round(ph * height / 100)
    else:
        match = re.fullmatch(f"({_INTEGER}),({_INTEGER}),({_INTEGER}),({_INTEGER})", text)
        if match is None:
            raise IIIFError(400, f"region {shown(text)}: expected full, square, x,y,w,h or pct:x,y,w,h")
        x, y, w, h = (int(v) for v in match.groups())
    if w <= 0 or h <= 0 or x >= width or y >= height:
        raise IIIFError(400, f"region {shown(text)}: empty or outside the {width}x{height} image")
    return x, y, min(w, width - x), min(h, height - y)  # cropped to the image, as the API says


def _size(text: str, w: int, h: int, limits: OutputLimits) -> tuple[int, int]:
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    if body == "max":
        scale = min(1.0 if not upscale else math.inf, limits.max_width / w, limits.max_height / h,
                    math.sqrt(limits.max_area / (w * h)))
        out = max(1, math.floor(w * scale)), max(1, math.floor(h * scale))
        return out
    if body.startswith("pct:"):
        if not re.fullmatch(_DECIMAL, body[4:]):
            raise IIIFError(400, f"size {shown(text)}: expected pct:n")
        n = float(body[4:])
        if n == 0:
            raise IIIFError(400, f"size {shown(text)}: zero percent is no image")
        out = round(w * n / 100), round(h * n / 100)
    else:
        confined = body.startswith("!")
        match = re.fullmatch(f"({_INTEGER})?,({_INTEGER})?", body[1:] if confined else body)
        if match is None or not (match.group(1) or match.group(2)):
            raise IIIFError(400, f"size {shown(text)}: expected max, w,, ,h, pct:n, w,h or !w,h")
        sw = int(match.group(1)) if match.group(1) else None
        sh = int(match.group(2)) if match.group(2) else None
        if sw == 0 or sh == 0:
            raise IIIFError(400, f"size {shown(text)}: a width or height of 0 is no image")
        if confined:
            if sw is None or sh is None:
                raise IIIFError(400, f"size {shown(text)}: !w,h needs both")
            scale = min(sw / w, sh / h)
            out = round(w * scale), round(h * scale)
        elif sw is not None and sh is not None:
            out = sw, sh
        elif sw is not None:
            out = sw, round(h * sw / w)
        else:
            out = round(w * sh / h), sh
    out = max(1, out[0]), max(1, out[1])  # a side scaled below one pixel keeps one
    if not upscale and (out[0] > w or out[1] > h):
        raise IIIFError(400, f"size {shown(text)}: {out[0]}x{out[1]} is larger than the region {w}x{h} (use ^ to upscale)")
    if out[0] > limits.max_width or out[1] > limits.max_height or out[0] * out[1] > limits.max_area:
        raise IIIFError(400, f"size {shown(text)}: {out[0]}x{out[1]} is over this server's limit "
                             f"({limits.max_width}x{limits.max_height}, {limits.max_area} pixels)")
    return out


def _rotation(text: str) -> tuple[int, bool]:
    mirror = text.startswith("!")
    body = text[1:] if mirror else text
    if not re.fullmatch(_DEGREES, body):
        raise IIIFError(400, f"rotation {shown(text)}: expected 0, 90, 180 or 270 (optionally !)")
    degrees = float(body)
    if degrees > 360 or degrees % 90:
        raise IIIFError(400, f"rotation {shown(text)}: only multiples of 90 degrees are supported")
    return int(degrees) % 360, mirror


def _window(source: ImageSource, request: ImageRequest) -> tuple[int, int, int, int, int]:
    """The zoom level an answer is read from (the coarsest with the pixels asked for), and the
    rectangle of it: level, y0, x0, y1, x1."""
    scale = min(request.width / request.out_width, request.height / request.out_height)
    level = max(0, min(len(source.levels) - 1, int(math.floor(math.log2(scale))) if scale >= 1 else 0))
    factor = 2**level
    level_h, level_w = source.levels[level]
    x0, y0 = request.x // factor, request.y // factor
    x1 = min(level_w, -(-(request.x + request.width) // factor))
    y1 = min(level_h, -(-(request.y + request.height) // factor))
    return level, y0, x0, y1, x1


# Read pixels are held twice at the peak (the tiles decoded, the rectangle cut from them), and the
# output twice (resampled, then encoded), at 3 bytes a pixel.
_HELD_COPIES = 2


def answer_bytes(source: ImageSource, request: ImageRequest) -> int:
    """The memory answering ``request`` holds at its peak, known before anything is read: what a
    server's memory budget reserves for it."""
    _, y0, x0, y1, x1 = _window(source, request)
    return _HELD_COPIES * 3 * ((y1 - y0) * (x1 - x0) + request.out_width * request.out_height)


def render(source: ImageSource, request: ImageRequest) -> tuple[bytes, str]:
    """The answer's bytes and media type."""
    from PIL import Image

    level, y0, x0, y1, x1 = _window(source, request)
    pixels = source.read(level, y0, x0, y1 - y0, x1 - x0)
    image = Image.fromarray(pixels)
    if image.size != (request.out_width, request.out_height):
        image = image.resize((request.out_width, request.out_height), Image.Resampling.LANCZOS)
    if request.mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if request.rotation:  # IIIF turns clockwise, PIL counter-clockwise
        image = image.rotate(-request.rotation, expand=True)
    if request.quality == "gray":
        image = image.convert("L")
    elif request.quality == "bitonal":
        image = image.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1")
    name, media_type = FORMATS[request.format]
    buffer = io.BytesIO()
    if name == "JPEG":
        image.save(buffer, format=name, quality=JPEG_QUALITY)
    else:
        image.save(buffer, format=name)
    return buffer.getvalue(), media_type


def info(source: ImageSource, base: str, *, limits: OutputLimits = OutputLimits()) -> dict[str, Any]:
    """``info.json``: what the image offers, with ``base`` (``.../iiif/3/{identifier}``) as its id."""
    factors = [2**k for k in range(len(source.levels))]
    sizes = [{"width": w, "height": h} for h, w in reversed(source.levels)
             if w <= limits.max_width and h <= limits.max_height and w * h <= limits.max_area]
    return {
        "@context": CONTEXT,
        "id": base,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": PROFILE,
        "width": source.width,
        "height": source.height,
        "maxWidth": limits.max_width,
        "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "tiles": [{"width": 2 * source.tile, "height": 2 * source.tile, "scaleFactors": factors}],
        "sizes": sizes,
        "extraFormats": ["png"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": ["mirroring", "rotationBy90s", "regionByPct", "sizeByPct", "sizeByConfinedWh",
                          "sizeByWh", "sizeUpscaling", "regionSquare", "cors", "jsonldMediaType", "baseUriRedirect",
                          "profileLinkHeader"],
    }
