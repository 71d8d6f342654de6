"""What a TIFF file is asked to be: codec, level, tile, resolution, tags, bit depth, colour profile.

``TiffOptions`` is validated once, when it is made, and raises ``TiffOptionError`` naming the
option; its JSON form (``to_json``/``from_json``) is what a job spec and a file's description keep.
Importing this module costs nothing: the output profile is read only when one is asked for.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Any

from famos.config import from_dict, to_dict
from famos.errors import InvalidField


class Compression(enum.Enum):
    NONE = "none"
    DEFLATE = "deflate"  # Adobe deflate (tag value 8), which every TIFF reader knows
    ZSTD = "zstd"
    LZW = "lzw"
    JPEG = "jpeg"


class ResolutionUnit(enum.Enum):
    INCH = "inch"
    CM = "cm"  # what a print size in cm or mm asks for


class Subsampling(enum.Enum):
    """JPEG chroma subsampling. 4:2:0 (the default) halves colour both ways: what every reader
    expects and the smallest file; 4:4:4 keeps full colour (fine coloured detail, high quality)."""

    S420 = "4:2:0"
    S422 = "4:2:2"
    S444 = "4:4:4"

    @property
    def factors(self) -> tuple[int, int]:
        return {"4:2:0": (2, 2), "4:2:2": (2, 1), "4:4:4": (1, 1)}[self.value]


class Intent(enum.Enum):
    """ICC rendering intent of the conversion into an output profile."""

    PERCEPTUAL = "perceptual"
    RELATIVE = "relative"  # relative colorimetric (with black-point compensation: Photoshop's default)
    SATURATION = "saturation"
    ABSOLUTE = "absolute"  # absolute colorimetric: simulates the paper white

    @property
    def code(self) -> int:
        return list(Intent).index(self)


class BigTiff(enum.Enum):
    AUTO = "auto"  # BigTIFF only when the file could pass 4 GiB
    YES = "yes"
    NO = "no"  # classic TIFF; refused up front when the canvas could not fit


MAX_TILE = 4096  # a row of tiles is buffered: tile x canvas width x 3 bytes
MAX_DPI = 100_000  # resolution tags are rationals; no print process comes near this
MIN_DPI = 1.0  # a billboard is printed at 10-20 dpi; below 1 the tags' rationals lose the size
# Without --dpi or a print size a file still says how large it prints: 300 pixels per inch, the
# common photo and fine-art print resolution (libvips would otherwise read "1 per no unit" as 25.4).
DEFAULT_DPI = 300.0
MAX_TEXT = 1024  # Artist and Copyright: ASCII, printable, at most this long


class TiffOptionError(InvalidField):
    """TIFF options that cannot work (bad tile, quality, dpi, or a canvas too big for classic TIFF);
    the message starts with the option's name."""


def check_dpi(value: float) -> float:
    """A resolution the tags can hold (ValueError otherwise): the one check of every DPI that
    reaches a file, from a command line, a jobs file or a request."""
    if not (math.isfinite(value) and MIN_DPI <= value <= MAX_DPI):
        raise ValueError(f"must be a number from {MIN_DPI:g} to {MAX_DPI:g}, got {value!r}")
    return value


def check_tag_text(text: str) -> str:
    """Artist and Copyright text a TIFF ASCII tag holds (ValueError otherwise)."""
    if len(text) > MAX_TEXT or not all(" " <= c <= "~" for c in text):
        raise ValueError(f"must be printable ASCII of at most {MAX_TEXT} characters")
    return text


def _field(name: str, check, value) -> None:
    try:
        check(value)
    except ValueError as err:
        raise TiffOptionError(name, str(err)) from None


# Compression levels: the highest each codec takes, and famos's default. See BENCHMARKS.md (tile
# encoding): deflate 3 writes files 2 % larger than zlib's default 6, a third faster (122 vs 91 MB/s a
# core on a mosaic); 1 is faster still but 29 % larger.
LEVEL_RANGES = {Compression.DEFLATE: 9, Compression.ZSTD: 22}
DEFAULT_LEVELS = {Compression.DEFLATE: 3, Compression.ZSTD: 3}


@dataclasses.dataclass(frozen=True)
class TiffOptions:
    tile: int = 256  # tile side in pixels; TIFF requires multiples of 16
    compression: Compression = Compression.DEFLATE
    quality: int = 90  # JPEG only, 1..100
    level: int = 0  # deflate 1..9, zstd 1..22; 0: DEFAULT_LEVELS (chosen by bench/bench_encode.py)
    predictor: bool = True  # horizontal differencing for deflate/zstd/lzw; ignored for none/jpeg
    dpi: float | None = None  # pixels per inch; None: DEFAULT_DPI. Exact for a print size (see units)
    bigtiff: BigTiff = BigTiff.AUTO
    pyramid: bool = False  # 2x box-filtered levels as SubIFDs until a level fits one tile
    icc_profile: bool = True  # embed the sRGB ICC profile (version 2, in every level) so RIPs do not guess
    encode_workers: int = 0  # threads compressing tiles in parallel; 0: one per core
    unit: ResolutionUnit = ResolutionUnit.INCH  # of the resolution tags
    subsampling: Subsampling = Subsampling.S420  # JPEG chroma subsampling
    artist: str = ""  # Artist tag; empty: none
    copyright: str = ""  # Copyright tag; empty: none
    datetime: str = ""  # DateTime "YYYY:MM:DD HH:MM:SS"; empty: when written ($SOURCE_DATE_EPOCH if set)
    bits: int = 8  # per sample: 8, or 16 for prints graded further (lossless codecs)
    output_profile: str = ""  # a shop's RGB or CMYK ICC profile to convert into; empty: sRGB as rendered
    intent: Intent = Intent.RELATIVE
    black_point_compensation: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.tile, int) or not 16 <= self.tile <= MAX_TILE or self.tile % 16:
            raise TiffOptionError("tile", f"must be a multiple of 16 from 16 to {MAX_TILE}, got {self.tile!r}")
        if not isinstance(self.compression, Compression):
            raise TypeError(f"compression must be a Compression, got {self.compression!r}")
        if not isinstance(self.bigtiff, BigTiff):
            raise TypeError(f"bigtiff must be a BigTiff, got {self.bigtiff!r}")
        if not 1 <= self.quality <= 100:
            raise TiffOptionError("quality", f"must be in 1..100, got {self.quality!r}")
        if self.level:
            top = LEVEL_RANGES.get(self.compression)
            if top is None:
                raise TiffOptionError("level", f"{self.level}: a level is for deflate (1..9) or zstd (1..22), "
                                               f"not {self.compression.value}")
            if not 1 <= self.level <= top:
                raise TiffOptionError("level", f"{self.compression.value} takes 1..{top}, got {self.level!r}")
        if self.dpi is not None:
            _field("dpi", check_dpi, self.dpi)
        if not isinstance(self.encode_workers, int) or self.encode_workers < 0:
            raise TiffOptionError("tiff-workers", f"must be 0 (one per core) or more, got {self.encode_workers!r}")
        if not isinstance(self.unit, ResolutionUnit) or not isinstance(self.subsampling, Subsampling):
            raise TypeError("unit and subsampling must be a ResolutionUnit and a Subsampling")
        for name in ("artist", "copyright"):
            _field(name, check_tag_text, getattr(self, name))
        if self.bits not in (8, 16):
            raise TiffOptionError("bits", f"use 8 or 16, got {self.bits!r}")
        if self.bits == 16 and self.compression is Compression.JPEG:
            raise TiffOptionError("bits", "16: JPEG holds 8 bits; use deflate, lzw, zstd or none")
        if self.bits == 16 and self.output_profile:
            raise TiffOptionError("bits", "16: conversion to an output profile is 8-bit only (LittleCMS through Pillow)")
        if not isinstance(self.intent, Intent):
            raise TypeError(f"intent must be an Intent, got {self.intent!r}")
        if self.output_profile:
            from famos.icc import check_output_profile, profile_bytes

            try:
                data = profile_bytes(self.output_profile)
                check_output_profile(data, name=self.output_profile)
            except OSError as err:
                raise TiffOptionError("output-profile", f"{self.output_profile}: {err.strerror}") from None
            except ValueError as err:
                raise TiffOptionError("output-profile", str(err)) from None
            if data[16:20] == b"CMYK" and self.compression is Compression.JPEG:
                raise TiffOptionError("compression", "jpeg: CMYK output needs a lossless codec (deflate, lzw, zstd, none)")
        if self.datetime and not re.fullmatch(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", self.datetime):
            raise TiffOptionError("datetime", f"must be YYYY:MM:DD HH:MM:SS, got {self.datetime!r}")

    def to_json(self) -> dict[str, Any]:
        """Every option that shapes the file's bytes (not ``encode_workers``), as JSON values."""
        return to_dict(self, leave_out=("encode_workers",))

    @classmethod
    def from_json(cls, data: dict[str, Any], *, encode_workers: int = 0) -> TiffOptions:
        names = {f.name for f in dataclasses.fields(cls)} - {"encode_workers"}  # a machine setting, not the file's
        values = {k: v for k, v in data.items() if k in names}  # older specs lack newer options: defaults
        return from_dict(cls, {**values, "encode_workers": encode_workers})

    @property
    def samples(self) -> int:
        """Samples per pixel in the file: 4 for a CMYK output profile, else 3."""
        if not self.output_profile:
            return 3
        from famos.icc import profile_bytes

        return 4 if profile_bytes(self.output_profile)[16:20] == b"CMYK" else 3

    @property
    def pixels_per_inch(self) -> float:
        return self.dpi if self.dpi is not None else DEFAULT_DPI

    def stamped(self) -> TiffOptions:
        """These options with DateTime fixed now (a job fixes it at submission, so a resumed job
        writes the same bytes)."""
        return self if self.datetime else dataclasses.replace(self, datetime=creation_time())


def creation_time() -> str:
    """Now as a TIFF DateTime, or $SOURCE_DATE_EPOCH's time (reproducible renders, the tests)."""
    import datetime
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc) if epoch and epoch.isdigit()
              else datetime.datetime.now())
    return moment.strftime("%Y:%m:%d %H:%M:%S")


def compression_level(options: TiffOptions) -> int | None:
    """The deflate or zstd level ``options`` encode with (None for other codecs)."""
    if options.compression not in LEVEL_RANGES:
        return None
    return options.level or DEFAULT_LEVELS[options.compression]
