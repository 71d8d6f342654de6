"""Streaming, constant-memory tiled TIFF writer for rendered canvases.

The renderer yields row strips of arbitrary height; the writer re-slices them into rows of tiles
(``famos.tiles``) and hands tifffile a generator of tiles (its "generator of tiles" pattern), so
host memory stays O(one strip + one tile row) whatever the canvas height. The pyramid levels
(``famos.pyramid``) are spooled to disk meanwhile and written as SubIFDs, each reached once, from
the SubIFDs tag, as libtiff writes them (``_link_levels_once``). Output goes to a
temporary name and is renamed only when complete: a crash, cancel or full disk never leaves a
truncated file at the final path.

numpy, tifffile, imagecodecs and Pillow are imported inside the functions that need them, so that
importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from famos import __version__
from famos.errors import Cancelled
from famos.files import atomic_output, sidecar_path
from famos.icc import srgb_v2_profile
from famos.pyramid import LevelSpool, reduced_shapes
from famos.tiff_options import (
    LEVEL_RANGES,
    Compression,
    ResolutionUnit,
    TiffOptions,
    compression_level,
    creation_time,
)
from famos.tiff_size import expected_bytes, needs_bigtiff
from famos.tiles import TileCodec, TileFormat, checked_strips, encode_strips, tile_rows

if TYPE_CHECKING:
    import numpy as np

    from famos.tiles import EncodedStrip

_ICC_TAG = 34675
_ARTIST_TAG = 315
_INKSET_TAG = 332
_COPYRIGHT_TAG = 33432


@dataclasses.dataclass(frozen=True)
class TiffReport:
    path: pathlib.Path
    bytes_written: int
    bigtiff: bool
    levels: int  # 1 + number of reduced-resolution SubIFDs


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
    Tiles are compressed on ``options.encode_workers`` threads. Nothing appears at `path` unless the
    whole file was written and synced.
    """
    with TileCodec(tile_format(options), encode_workers=options.encode_workers) as codec:
        encoded = encode_strips(checked_strips(strips, width=width, bits=options.bits), height=height, codec=codec)
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
            codec = cleanup.enter_context(TileCodec(tile_format(options), encode_workers=options.encode_workers))
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
        with open(partial, "w+b") as fh:  # read back by _link_levels_once
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
            if spools:
                _link_levels_once(fh, bigtiff=bigtiff)
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


def _output_transform(options: TiffOptions):
    if not options.output_profile:
        return None
    from famos.icc import OutputTransform, profile_bytes

    return OutputTransform(profile=profile_bytes(options.output_profile), intent=options.intent.code,
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
    """ICC profile, Artist, Copyright. The output profile is the one ``codec`` converts into, read
    once with the options.

    The profile goes into every level, each level its own copy. TIFF lets no tag of IFD0 stand for
    its SubIFDs, and readers of one level are common: a viewer zoomed out, GDAL's overviews, a RIP's
    preview, ``vips`` with ``subifd=``. A level without the profile reads as untagged, sRGB at best,
    which is wrong for a shop's RGB or CMYK profile. One copy that every level points at would save
    bytes, but exiftool takes data that two directories share for a loop and warns. A copy costs
    2.5 KB for sRGB, a shop's profile its size per level (default_cmyk.icc: 183 KB): small beside a
    print's tiles."""
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


def _link_levels_once(fh: BinaryIO, *, bigtiff: bool) -> None:
    """Make the SubIFDs tag of the first IFD the one way to the pyramid levels, as libtiff writes
    them (TIFF Technical Note 1). tifffile also chains each level to the next through its next-IFD
    offset, so a reader that follows both (exiftool) meets every level below the first twice and
    warns "ICC_Profile pointer references previous ICC_Profile directory": each level's profile is
    its own copy, but it reads that copy a second time. The tag's type becomes LONG (LONG8 in
    BigTIFF), which Technical Note 1 allows beside IFD and which TIFF/EP, DNG, exiftool and
    checkit_tiff expect; libtiff (libvips, GDAL), tifffile and exiftool read either. A few small
    reads and writes in the file's directories: nothing of the image is read back."""
    import struct

    count_format, entry_size, value_format = ("<Q", 20, "<HHQQ") if bigtiff else ("<H", 12, "<HHII")
    offset_format = "<Q" if bigtiff else "<I"

    def read(position: int, fmt: str) -> tuple:
        fh.seek(position)
        return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))

    (first,) = read(8 if bigtiff else 4, offset_format)
    (entries,) = read(first, count_format)
    for k in range(entries):
        position = first + struct.calcsize(count_format) + k * entry_size
        tag, kind, count, value = read(position, value_format)
        if tag == 330:
            break
    else:
        raise RuntimeError("a pyramid without a SubIFDs tag")
    if kind not in (13, 18):  # IFD, IFD8: what tifffile writes; anything else is a tifffile change to read first
        raise RuntimeError(f"tifffile wrote the SubIFDs tag with type {kind}, not IFD")
    fh.seek(position + 2)
    fh.write(struct.pack("<H", 16 if bigtiff else 4))  # LONG8, LONG
    # one offset sits in the entry itself; more sit where the entry points
    levels = read(value, f"<{count}{offset_format[1]}") if count > 1 else (value,)
    for level in levels:
        (level_entries,) = read(level, count_format)
        fh.seek(level + struct.calcsize(count_format) + level_entries * entry_size)
        fh.write(struct.pack(offset_format, 0))  # the last level of a chain, each one


def _level_tiles(spool: LevelSpool, codec: TileCodec, cancel: threading.Event | None) -> Iterator[bytes]:
    for rows in spool.strips(codec.tile):
        _check(cancel)
        yield from codec.encode_rows(rows, width=spool.width)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled while writing the file")
