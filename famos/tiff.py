"""Streaming, constant-memory tiled TIFF writer for rendered canvases.

The renderer yields row strips of arbitrary height; this module re-slices them into rows of tiles
and hands tifffile a generator of tiles (its "generator of tiles" pattern), so host memory stays
O(one strip + one tile row) whatever the canvas height. A reduced-resolution pyramid is built on
the fly and spooled to temporary memory-mapped files on disk, then written as SubIFDs. Output
goes to a temporary name and is renamed only when complete: a crash, cancel or full disk never
leaves a truncated file at the final path.

numpy, tifffile, imagecodecs and Pillow are imported inside the functions that need them, so that
importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import pathlib
import re
import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from famos import __version__
from famos.errors import Cancelled, InvalidField
from famos.files import atomic_output, sidecar_path
from famos.icc import srgb_v2_profile
from famos.tiles import TileCodec, TileFormat, box_reduce, encode_strips, tile_rows
from famos.units import is_metric

if TYPE_CHECKING:
    import numpy as np

    from famos.tiles import EncodedStrip

_CLASSIC_LIMIT = 2**32 - 1  # classic TIFF offsets are uint32
# Tags, IFDs, ICC profile and description; generous so that AUTO never lands just over the edge.
_METADATA_MARGIN = 32 * 2**20
_ICC_TAG = 34675
_ARTIST_TAG = 315
_INKSET_TAG = 332
_COPYRIGHT_TAG = 33432


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


# Worst-case encoded size over raw size. An iterator has no size, so the BigTIFF decision is taken
# before any pixel is seen and must hold for incompressible content (noise-like textures):
# deflate/zstd fall back to stored blocks (a few bytes per block), LZW spends up to 12 bits per
# input byte on noise (measured 1.37), baseline JPEG stays below raw even at quality 100 (0.66 on
# uniform noise).
_WORST_CASE_EXPANSION = {
    Compression.NONE: 1.0,
    Compression.DEFLATE: 1.01,
    Compression.ZSTD: 1.01,
    Compression.LZW: 1.5,
    Compression.JPEG: 1.0,
}


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
    workers: int = 0  # threads compressing tiles in parallel; 0: one per core
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
        if not isinstance(self.workers, int) or self.workers < 0:
            raise TiffOptionError("tiff-workers", f"must be 0 (one per core) or more, got {self.workers!r}")
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
            from famos.icc import check_output_profile

            try:
                data = pathlib.Path(self.output_profile).read_bytes()
            except OSError as err:
                raise TiffOptionError("output-profile", f"{self.output_profile}: {err.strerror}") from None
            try:
                check_output_profile(data, name=self.output_profile)
            except ValueError as err:
                raise TiffOptionError("output-profile", str(err)) from None
            if data[16:20] == b"CMYK" and self.compression is Compression.JPEG:
                raise TiffOptionError("compression", "jpeg: CMYK output needs a lossless codec (deflate, lzw, zstd, none)")
        if self.datetime and not re.fullmatch(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", self.datetime):
            raise TiffOptionError("datetime", f"must be YYYY:MM:DD HH:MM:SS, got {self.datetime!r}")

    def to_json(self) -> dict[str, Any]:
        """Every option that shapes the file's bytes (not ``workers``), as JSON values."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "workers"}
        return {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, workers: int = 0) -> TiffOptions:
        names = {f.name for f in dataclasses.fields(cls)} - {"workers"}  # a machine setting, not the file's
        values = {k: v for k, v in data.items() if k in names}  # older specs lack newer options: defaults
        for name, kind in (("compression", Compression), ("bigtiff", BigTiff), ("unit", ResolutionUnit),
                           ("subsampling", Subsampling), ("intent", Intent)):
            if name in values:
                values[name] = kind(values[name])
        return cls(**values, workers=workers)

    @property
    def samples(self) -> int:
        """Samples per pixel in the file: 4 for a CMYK output profile, else 3."""
        if not self.output_profile:
            return 3
        with open(self.output_profile, "rb") as fh:
            return 4 if fh.read(20)[16:20] == b"CMYK" else 3

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


@dataclasses.dataclass(frozen=True)
class TiffReport:
    path: pathlib.Path
    bytes_written: int
    bigtiff: bool
    levels: int  # 1 + number of reduced-resolution SubIFDs


def reduced_shapes(height: int, width: int, *, tile: int) -> list[tuple[int, int]]:
    """Shapes of the pyramid levels below full resolution: halve (rounding up) until one tile."""
    shapes = []
    while max(height, width) > tile:
        height, width = (height + 1) // 2, (width + 1) // 2
        shapes.append((height, width))
    return shapes


# Typical encoded size over raw size of a rendered mosaic (BENCHMARKS.md, bench_tiff): what
# "needs about" means in a disk-full message and in estimates before a render.
_TYPICAL_RATIO = {
    Compression.NONE: 1.05,
    Compression.DEFLATE: 0.6,
    Compression.ZSTD: 0.63,
    Compression.LZW: 0.75,
    Compression.JPEG: 0.1,
}


def expected_bytes(height: int, width: int, options: TiffOptions) -> int:
    """About how large the file will be (pyramid included)."""
    levels = [(height, width)] + (reduced_shapes(height, width, tile=options.tile) if options.pyramid else [])
    return int(sum(h * w * options.samples * options.bits // 8 for h, w in levels) * _TYPICAL_RATIO[options.compression])


def needs_bigtiff(height: int, width: int, *, options: TiffOptions) -> bool:
    """Whether the file must be a BigTIFF; raises ValueError when NO is forced but cannot fit."""
    levels = [(height, width)] + (reduced_shapes(height, width, tile=options.tile) if options.pyramid else [])
    raw = sum(h * w * options.samples * options.bits // 8 for h, w in levels)
    # each tile of every level costs an offset and a byte count (8 bytes each in a BigTIFF)
    n_tiles = sum(-(-h // options.tile) * -(-w // options.tile) for h, w in levels)
    worst = raw * _WORST_CASE_EXPANSION[options.compression] + n_tiles * 16 + _METADATA_MARGIN
    could_exceed = worst > _CLASSIC_LIMIT
    if options.bigtiff is BigTiff.YES:
        return True
    if options.bigtiff is BigTiff.NO:
        if could_exceed:
            pyramid = " and a pyramid" if options.pyramid else ""
            raise TiffOptionError(
                "bigtiff", f"no: a {width}x{height} canvas with {options.compression.value} compression{pyramid}"
                f" could reach {worst / 2**30:.1f} GiB, past the 4 GiB a classic TIFF can address;"
                " use --bigtiff auto or yes"
            )
        return False
    return could_exceed


def write_tiled_tiff(
    path: str | os.PathLike[str],
    strips: Iterable[np.ndarray],
    *,
    height: int,
    width: int,
    options: TiffOptions = TiffOptions(),
    description: dict[str, Any] | None = None,
) -> TiffReport:
    """Write strips of shape (h_i, width, 3) uint8, top to bottom, as a tiled RGB TIFF at `path`.

    The strips are consumed once and never assembled: memory is O(one strip + one tile row).
    Tiles are compressed on ``options.workers`` threads. Nothing appears at `path` unless the
    whole file was written and synced.
    """
    with TileCodec(tile_format(options), workers=options.workers) as codec:
        encoded = encode_strips(_checked_strips(strips, height=height, width=width, bits=options.bits), height=height,
                                codec=codec)
        return write_encoded_tiff(
            path, encoded, height=height, width=width, options=options, description=description, codec=codec
        )


def write_encoded_tiff(
    path: str | os.PathLike[str],
    strips: Iterable[EncodedStrip],
    *,
    height: int,
    width: int,
    options: TiffOptions = TiffOptions(),
    description: dict[str, Any] | None = None,
    codec: TileCodec | None = None,
    cancel: threading.Event | None = None,
) -> TiffReport:
    """Write strips already encoded for ``options`` (``famos.tiles``: by Ray workers, a job spool or
    this process), top to bottom, as a tiled RGB TIFF at `path`: the tile bytes go to the file as
    they are, in file order. Memory is O(a few strips' encoded bytes + one tile row). ``cancel``
    stops the writing within one tile row (``Cancelled``; nothing is left at `path`)."""
    import tifffile

    path = pathlib.Path(path)
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r} x {width!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    bigtiff = needs_bigtiff(height, width, options=options)
    level_shapes = (
        reduced_shapes(height, width, tile=options.tile) if options.pyramid else []
    )

    spools: list[LevelSpool] = []
    # atomic_output: a unique hidden name per call (concurrent renders to one path never share a
    # partial file), renamed to ``path`` only when complete; the pyramid spools sit beside it.
    with contextlib.ExitStack() as cleanup:
        # on any failure, stop whatever produces the strips (a render pipeline's device thread)
        # now, not when garbage is collected or the interpreter exits
        cleanup.callback(lambda: getattr(strips, "close", lambda: None)())
        if codec is None:
            codec = cleanup.enter_context(TileCodec(tile_format(options), workers=options.workers))
        cleanup.callback(lambda: [spool.discard() for spool in spools])
        partial = cleanup.enter_context(atomic_output(path, expected_bytes=expected_bytes(height, width, options)))
        for k, (h, w) in enumerate(level_shapes, start=1):
            spool_path = sidecar_path(partial, f"level{k}")
            spools.append(LevelSpool(path=spool_path, height=h, width=w, bits=options.bits))
        for parent, child in zip(spools, spools[1:]):
            parent.below = child

        def main_tiles() -> Iterator[bytes]:
            for tiles, reduced in tile_rows(strips, height=height, width=width, codec=codec):
                _check(cancel)
                if spools:
                    spools[0].accept(reduced)
                yield from tiles

        page = _page_kwargs(options, codec)
        with open(partial, "wb") as fh:
            with tifffile.TiffWriter(fh, bigtiff=bigtiff, byteorder="<") as tif:
                extratags = _extratags(options, codec)
                # every level: a reader of one level alone learns what made it and when
                stamp = {"software": f"famos {__version__}", "datetime": options.datetime or creation_time()}
                tif.write(
                    data=main_tiles(),
                    shape=(height, width, codec.format.samples),
                    subifds=len(spools) or None,
                    description=(
                        json.dumps(description, sort_keys=True) if description is not None else None
                    ),
                    # without this tifffile writes its own shape JSON as the description
                    metadata=None,
                    extratags=extratags,
                    **stamp,
                    **_resolution(options, width, width),
                    **page,
                )
                if spools:
                    spools[0].finish()
                for k, spool in enumerate(spools, start=1):
                    tif.write(
                        data=_level_tiles(spool, codec, cancel),
                        shape=(spool.height, spool.width, codec.format.samples),
                        subfiletype=1,  # reduced-resolution image
                        metadata=None,
                        extratags=_extratags(options, codec, level=True),
                        **stamp,
                        # the same physical print size at every level, exact to the pixel
                        **_resolution(options, spool.width, width),
                        **page,
                    )
    return TiffReport(
        path=path, bytes_written=path.stat().st_size, bigtiff=bigtiff, levels=1 + len(spools)
    )


def tile_format(options: TiffOptions) -> TileFormat:
    """How ``options`` encode a tile: tifffile's codec and predictor tag values, and the arguments
    tifffile's own writer would pass (RGB JPEG: 2x2 chroma subsampling into YCbCr)."""
    import tifffile

    codes = {
        Compression.NONE: None,
        Compression.DEFLATE: tifffile.COMPRESSION.ADOBE_DEFLATE,
        Compression.ZSTD: tifffile.COMPRESSION.ZSTD,
        Compression.LZW: tifffile.COMPRESSION.LZW,
        Compression.JPEG: tifffile.COMPRESSION.JPEG,
    }
    lossless_codec = options.compression in (Compression.DEFLATE, Compression.ZSTD, Compression.LZW)
    jpeg = options.compression is Compression.JPEG
    return TileFormat(
        tile=options.tile,
        compression=None if codes[options.compression] is None else int(codes[options.compression]),
        predictor=int(tifffile.PREDICTOR.HORIZONTAL) if options.predictor and lossless_codec else None,
        arguments=(
            (("level", options.quality), ("subsampling", options.subsampling.factors), ("colorspace", "RGB"),
             ("outcolorspace", "YCBCR"))
            if jpeg else (("level", compression_level(options)),) if options.compression in LEVEL_RANGES else ()
        ),
        pyramid=options.pyramid,
        output=_output_transform(options),
        bits=options.bits,
    )


def compression_level(options: TiffOptions) -> int | None:
    """The deflate or zstd level ``options`` encode with (None for other codecs)."""
    if options.compression not in LEVEL_RANGES:
        return None
    return options.level or DEFAULT_LEVELS[options.compression]


def _output_transform(options: TiffOptions):
    if not options.output_profile:
        return None
    from famos.icc import OutputTransform

    return OutputTransform(profile=pathlib.Path(options.output_profile).read_bytes(), intent=options.intent.code,
                           black_point_compensation=options.black_point_compensation)


def _page_kwargs(options: TiffOptions, codec: TileCodec) -> dict[str, Any]:
    """Arguments shared by the full-resolution page and its SubIFDs: the tags that describe the
    tiles ``codec`` encoded (tifffile writes pre-encoded tile bytes as they are)."""
    import numpy as np

    return dict(
        dtype=np.uint16 if codec.format.bits == 16 else np.uint8,
        photometric="separated" if codec.format.samples == 4 else "rgb",
        tile=(options.tile, options.tile),
        compression=codec.format.compression,
        predictor=codec.format.predictor,
        **({"subsampling": options.subsampling.factors} if options.compression is Compression.JPEG else {}),
    )


def _resolution(options: TiffOptions, level_width: int, full_width: int) -> dict[str, Any]:
    """Resolution tags of a level ``level_width`` pixels wide: the full-resolution pixels per unit
    times level_width / full_width, as an exact rational, so every level prints the same size."""
    from fractions import Fraction

    per_inch = Fraction(options.pixels_per_inch).limit_denominator(10**6)
    per_unit = per_inch if options.unit is ResolutionUnit.INCH else per_inch / Fraction(254, 100)
    value = (per_unit * Fraction(level_width, full_width)).limit_denominator(10**6)
    rational = (value.numerator, value.denominator)
    return {"resolution": (rational, rational), "resolutionunit": "INCH" if options.unit is ResolutionUnit.INCH else "CENTIMETER"}


def _extratags(options: TiffOptions, codec: TileCodec, *, level: bool = False) -> list[tuple]:
    """ICC profile (every level: readers of one level must not guess either), Artist, Copyright.
    The output profile is the one ``codec`` converts into, read once with the options."""
    tags: list[tuple] = []
    output = codec.format.output
    if options.icc_profile or output is not None:  # a converted file always says into what
        icc = output.profile if output is not None else srgb_v2_profile()
        tags.append((_ICC_TAG, 7, len(icc), icc, True))
    if codec.format.samples == 4:
        tags.append((_INKSET_TAG, 3, 1, 1, True))  # InkSet: CMYK
    if not level:
        for code, text in ((_ARTIST_TAG, options.artist), (_COPYRIGHT_TAG, options.copyright)):
            if text:
                tags.append((code, 2, 0, text, True))
    return tags


def _checked_strips(
    strips: Iterable[np.ndarray], *, height: int, width: int, bits: int = 8
) -> Iterator[np.ndarray]:
    """Yield the strips after checking shape, dtype and that their heights sum to `height`."""
    import numpy as np

    rows = 0
    iterator = iter(strips)
    while rows < height:
        try:
            strip = next(iterator)
        except StopIteration:
            raise ValueError(
                f"strips ended after {rows} rows, but the canvas height is {height}"
            ) from None
        strip = np.asarray(strip)
        expected = np.uint16 if bits == 16 else np.uint8
        if strip.dtype != expected or strip.ndim != 3 or strip.shape[1:] != (width, 3):
            raise ValueError(
                f"strip at row {rows} has shape {strip.shape} and dtype {strip.dtype};"
                f" expected (rows, {width}, 3) {np.dtype(expected)}"
            )
        if rows + strip.shape[0] > height:
            raise ValueError(
                f"strips hold more than the canvas height of {height} rows"
                f" (at least {rows + strip.shape[0]})"
            )
        rows += strip.shape[0]
        if rows == height:
            # checked before the last tiles go out, so a mismatch fails the write, not after it
            extra = next(iterator, None)
            if extra is not None:
                raise ValueError(
                    f"strips hold more than the canvas height of {height} rows"
                )
        yield strip


def _level_tiles(spool: LevelSpool, codec: TileCodec, cancel: threading.Event | None) -> Iterator[bytes]:
    for rows in spool.strips(codec.tile):
        _check(cancel)
        yield from codec.encode_rows(rows, width=spool.width)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled while writing the file")


class LevelSpool:
    """One reduced pyramid level, filled row pair by row pair from the level above and kept in
    a memory-mapped file on disk, so its size never counts against host memory."""

    def __init__(self, *, path: pathlib.Path, height: int, width: int, bits: int = 8) -> None:
        import numpy as np

        dtype = np.uint16 if bits == 16 else np.uint8
        self.path = path
        self.height = height
        self.width = width
        self.below: LevelSpool | None = None
        self._rows = 0
        self._carry: np.ndarray | None = None  # odd row of the level above, awaiting its pair
        try:
            with open(path, "xb") as fh:
                size = height * width * 3 * np.dtype(dtype).itemsize
                # A memmap store into a hole the disk cannot back is SIGBUS, not OSError: reserve
                # the blocks now so a full disk fails here, cleanly.
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fh.fileno(), 0, size)
                else:
                    fh.truncate(size)
            self._image: np.ndarray | None = np.memmap(
                path, dtype=dtype, mode="r+", shape=(height, width, 3)
            )
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def accept(self, reduced: np.ndarray) -> None:
        """Take this level's next rows, already reduced from the level above (by whoever encoded them)."""
        self._emit(reduced)

    def feed(self, rows: np.ndarray) -> None:
        """Accept the next rows of the level above (any count)."""
        import numpy as np

        if not rows.shape[0]:
            return  # an empty strip must not pair the carried row with nothing
        if self._carry is not None:
            self._emit(box_reduce(np.concatenate([self._carry, rows[:1]], axis=0)))
            rows = rows[1:]
            self._carry = None
        even = rows.shape[0] - rows.shape[0] % 2
        if even:
            self._emit(box_reduce(rows[:even]))
        if rows.shape[0] % 2:
            self._carry = rows[-1:].copy()

    def finish(self) -> None:
        """Flush the last unpaired row (odd heights), then the levels below."""
        if self._carry is not None:
            self._emit(box_reduce(self._carry))
            self._carry = None
        if self._rows != self.height:
            raise RuntimeError(f"pyramid level got {self._rows} of {self.height} rows")
        if self.below is not None:
            self.below.finish()

    @property
    def rows(self) -> int:
        """Rows filled so far (a live view shows them while the level above is still coming)."""
        return self._rows

    def read(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        assert self._image is not None
        return self._image[y : y + height, x : x + width]

    def strips(self, rows: int) -> Iterator[np.ndarray]:
        assert self._image is not None
        for y in range(0, self.height, rows):
            yield self._image[y : y + rows]

    def discard(self) -> None:
        self._image = None  # drops the mapping (Windows cannot delete a mapped file)
        self.path.unlink(missing_ok=True)

    def _emit(self, reduced: np.ndarray) -> None:
        assert self._image is not None
        self._image[self._rows : self._rows + reduced.shape[0]] = reduced
        self._rows += reduced.shape[0]
        if self.below is not None:
            self.below.feed(reduced)


def add_tiff_arguments(parser) -> None:
    """The TIFF options shared by `famos render`, `famos client render` and `famos batch`."""
    group = parser.add_argument_group("TIFF output")
    group.add_argument("--compression", choices=[c.value for c in Compression], default=Compression.DEFLATE.value)
    group.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (jpeg only)")
    group.add_argument("--level", type=int, default=0,
                       help=f"deflate 1..9 or zstd 1..22: higher is smaller and slower (default: deflate "
                            f"{DEFAULT_LEVELS[Compression.DEFLATE]}, zstd {DEFAULT_LEVELS[Compression.ZSTD]})")
    group.add_argument("--tile", type=int, default=256, help="tile side, a multiple of 16")
    group.add_argument("--dpi", type=float, default=None, help="resolution tags (pixels per inch)")
    group.add_argument("--pyramid", action="store_true", help="add reduced-resolution levels as SubIFDs")
    group.add_argument("--bigtiff", choices=[b.value for b in BigTiff], default=BigTiff.AUTO.value)
    group.add_argument("--no-predictor", action="store_true", help="no horizontal differencing predictor")
    group.add_argument("--no-icc", action="store_true", help="do not embed the sRGB ICC profile")
    group.add_argument("--jpeg-subsampling", choices=[s.value for s in Subsampling], default=Subsampling.S420.value,
                       help="JPEG chroma subsampling (default 4:2:0; 4:4:4 keeps full colour detail)")
    group.add_argument("--resolution-unit", choices=[u.value for u in ResolutionUnit],
                       help="unit of the resolution tags (default: cm for a print size in cm or mm, else inch)")
    group.add_argument("--bits", type=int, choices=(8, 16), default=8,
                       help="bits per sample: 16 for prints graded further (lossless codecs; the predictor applies)")
    group.add_argument("--output-profile", default="", metavar="SHOP.icc",
                       help="convert to this RGB or CMYK ICC profile (LittleCMS), tile by tile, and embed it")
    group.add_argument("--intent", choices=[i.value for i in Intent], default=Intent.RELATIVE.value,
                       help="rendering intent of that conversion (default relative colorimetric)")
    group.add_argument("--no-black-point-compensation", action="store_true",
                       help="convert without black-point compensation")
    group.add_argument("--artist", default="", help="Artist tag: who made the image")
    group.add_argument("--copyright", default="", help="Copyright tag, e.g. '(c) 2026 Jane Doe'")
    group.add_argument("--tiff-workers", type=int, default=0,
                       help="threads compressing tiles (default 0: one per core)")


def tiff_options(args) -> TiffOptions:
    """TiffOptions from parsed ``add_tiff_arguments`` options; bad values raise a UserError."""
    try:
        return TiffOptions(
            tile=args.tile,
            compression=Compression(args.compression),
            quality=args.quality,
            level=args.level,
            predictor=not args.no_predictor,
            dpi=args.dpi,
            bigtiff=BigTiff(args.bigtiff),
            pyramid=args.pyramid,
            icc_profile=not args.no_icc,
            unit=ResolutionUnit(args.resolution_unit) if args.resolution_unit else (
                ResolutionUnit.CM if is_metric(getattr(args, "print_size", None)) else ResolutionUnit.INCH),
            subsampling=Subsampling(args.jpeg_subsampling),
            artist=args.artist,
            copyright=args.copyright,
            bits=args.bits,
            output_profile=args.output_profile,
            intent=Intent(args.intent),
            black_point_compensation=not args.no_black_point_compensation,
            workers=args.tiff_workers,
        )
    except TiffOptionError:
        raise
    except ValueError as err:  # an unknown enum value; argparse's choices normally catch it first
        raise InvalidField("tiff", str(err)) from None
