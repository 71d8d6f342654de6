"""TIFF tiles encoded next to the pixels that make them, joined in file order anywhere.

A rendered row strip becomes an ``EncodedStrip``: its complete rows of tiles encoded (predictor and
codec applied), their 2x reduction for the pyramid, and the raw rows at either end that share a
tile row with the neighbouring strips. Strips can be encoded anywhere (a thread pool in this
process, Ray workers on other machines, a job's spool on disk); ``tile_rows`` joins them in order
and encodes the shared tile rows itself, so the writer receives finished tile bytes only and every
path writes the same bytes:

    strip rows  [y0 ........................................ y1)
                 head  | complete tile rows (encoded)   | tail
                 ^ ends the tile row begun above          ^ begins the tile row continued below

With the default chunk (2048) and tile (256) strips hold whole tile rows and there is no head or
tail. ``TileCodec`` calls tifffile's own codec functions with the arguments tifffile would pass, so a
tile is the same bytes tifffile would write (tested).

numpy, tifffile and imagecodecs are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from famos.icc import OutputTransform

if TYPE_CHECKING:
    import numpy as np


@dataclasses.dataclass(frozen=True)
class TileFormat:
    """How tiles are encoded: what a worker needs to encode tiles that fit one file's tags
    (``famos.tiff_writer.tile_format`` makes it from the TIFF options)."""

    tile: int  # tile side in pixels
    compression: int | None  # TIFF Compression tag value; None: uncompressed
    predictor: int | None  # TIFF Predictor tag value; None: no predictor
    arguments: tuple[tuple[str, Any], ...] = ()  # the codec's keyword arguments
    pyramid: bool = False  # whether strips also carry their 2x reduction
    output: OutputTransform | None = None  # sRGB into a shop's profile, per tile, before encoding
    bits: int = 8  # per sample: 8 (uint8) or 16 (uint16, little-endian as the file)

    @property
    def dtype(self) -> str:
        return "<u2" if self.bits == 16 else "u1"

    @property
    def samples(self) -> int:
        return 4 if self.output is not None and self.output.cmyk else 3


class TileCodec:
    """Encodes tile rows of one ``TileFormat`` on a pool of threads (imagecodecs releases the GIL
    while compressing, so the threads use as many cores as there are encode workers)."""

    def __init__(self, format: TileFormat, *, encode_workers: int = 0):
        import tifffile

        self.format = format
        self.tile = format.tile
        self._compress = tifffile.TIFF.COMPRESSORS[format.compression] if format.compression else None
        self._difference = tifffile.TIFF.PREDICTORS[format.predictor] if format.predictor else None
        self._decompress = tifffile.TIFF.DECOMPRESSORS[format.compression] if format.compression else None
        self._integrate = tifffile.TIFF.UNPREDICTORS[format.predictor] if format.predictor else None
        self._jpeg = format.compression == int(tifffile.COMPRESSION.JPEG)
        self._arguments = dict(format.arguments)
        self.encode_workers = encode_workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=self.encode_workers, thread_name_prefix="famos-encode")
        self._local = threading.local()  # a LittleCMS transform per encoding thread

    def __enter__(self) -> TileCodec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def encode(self, tile: np.ndarray) -> bytes:
        """One full (tile, tile, 3) uint8 sRGB tile as the bytes of a TIFF tile (converted to the
        output profile first when there is one: the encode workers do the colour transform)."""
        if self.format.output is not None:
            tile = self._to_output(tile)
        tile = tile.astype(self.format.dtype, copy=False)  # the file's byte order
        if self._compress is None:
            return tile.tobytes()
        if self._difference is not None:
            tile = self._difference(tile, axis=-2)  # horizontal: along the columns of a chunky tile
        return self._compress(tile, **self._arguments)

    def _to_output(self, tile: np.ndarray) -> np.ndarray:
        import numpy as np
        from PIL import Image, ImageCms

        transform = getattr(self._local, "transform", None)
        if transform is None:
            transform = self._local.transform = self.format.output.build()
        return np.asarray(ImageCms.applyTransform(Image.fromarray(tile), transform))

    def decode(self, data: bytes) -> np.ndarray:
        """One encoded tile back to (tile, tile, samples) uint8 (a live view of a job's spooled strips)."""
        import numpy as np

        t, n, dtype = self.tile, self.format.samples, self.format.dtype
        if self._decompress is None:
            return np.frombuffer(data, dtype).reshape(t, t, n)
        if self._jpeg:  # YCbCr inside, RGB out: what a TIFF reader does with these tiles
            return self._decompress(data, outcolorspace="RGB").reshape(t, t, 3)
        tile = np.frombuffer(self._decompress(data), dtype).reshape(t, t, n)
        return self._integrate(tile, axis=-2) if self._integrate is not None else tile

    def decode_tile_rows(self, tiles: list[bytes], *, rows: int, width: int) -> np.ndarray:
        """``encode_tile_rows``'s output back to ``rows`` image rows of ``width`` pixels."""
        import numpy as np

        t = self.tile
        across = -(-width // t)
        out = np.empty((-(-rows // t) * t, across * t, self.format.samples), self.format.dtype)
        for k, data in enumerate(tiles):
            y, x = k // across * t, k % across * t
            out[y : y + t, x : x + t] = self.decode(data)
        return out[:rows, :width]

    def encode_rows(self, rows: np.ndarray, *, width: int) -> list[bytes]:
        """One tile row (at most ``tile`` image rows of ``width`` pixels) as its tiles, left to right.

        Edge tiles are padded by repeating the last column and row rather than with black: readers
        crop the padding anyway, a flat continuation compresses as well, and JPEG's 8x8 blocks at
        the border stay free of dark ringing."""
        import numpy as np

        t = self.tile

        def tile_at(x: int) -> np.ndarray:
            tile = rows[:, x : x + t]
            if tile.shape[:2] == (t, t):
                return np.ascontiguousarray(tile)
            return np.pad(tile, ((0, t - tile.shape[0]), (0, t - tile.shape[1]), (0, 0)), mode="edge")

        return list(self._pool.map(lambda x: self.encode(tile_at(x)), range(0, width, t)))

    def encode_tile_rows(self, rows: np.ndarray) -> list[bytes]:
        """Rows that start on a tile row, as the tiles of each of their tile rows in file order."""
        width = rows.shape[1]
        out: list[bytes] = []
        for y in range(0, len(rows), self.tile):
            out.extend(self.encode_rows(rows[y : y + self.tile], width=width))
        return out


@dataclasses.dataclass(frozen=True)
class EncodedStrip:
    """Region rows [top, top + height) of a render: complete tile rows encoded, shared rows raw."""

    top: int
    head: np.ndarray  # uint8 (h, width, 3): ends the tile row begun by the strips above
    body_rows: int  # image rows in the complete tile rows after the head
    tiles: list[bytes]  # those tile rows' tiles, in file order
    reduced: np.ndarray | None  # those rows 2x box-reduced (pyramid level 1); None without a pyramid
    tail: np.ndarray  # uint8 (h, width, 3): begins the tile row that the strips below complete

    @property
    def height(self) -> int:
        return len(self.head) + self.body_rows + len(self.tail)

    @property
    def payload_bytes(self) -> int:
        reduced = 0 if self.reduced is None else self.reduced.nbytes
        return self.head.nbytes + self.tail.nbytes + sum(map(len, self.tiles)) + reduced

    def to_bytes(self) -> bytes:
        """A ``.npz`` archive of plain arrays (read back with ``allow_pickle=False``): the job spool's format."""
        import numpy as np

        arrays = {
            "rows": np.array([self.top, self.body_rows], np.int64),
            "head": self.head,
            "tail": self.tail,
            "tiles": np.frombuffer(b"".join(self.tiles), np.uint8),
            "tile_bytes": np.array([len(t) for t in self.tiles], np.int64),
        }
        if self.reduced is not None:
            arrays["reduced"] = self.reduced
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EncodedStrip:
        import numpy as np

        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            top, body_rows = (int(v) for v in archive["rows"])
            blob = archive["tiles"].tobytes()
            ends = np.cumsum(archive["tile_bytes"]).tolist()
            return cls(
                top=top,
                head=archive["head"],
                body_rows=body_rows,
                tiles=[blob[start:end] for start, end in zip([0] + ends[:-1], ends)],
                reduced=archive["reduced"] if "reduced" in archive.files else None,
                tail=archive["tail"],
            )


def box_reduce(rows: np.ndarray, factor: int = 2) -> np.ndarray:
    """``factor`` x ``factor`` box mean (rounded half up) of rows that start on a multiple of
    ``factor``: 2 for each pyramid level, any whole factor for an overview. A last partial row or
    column block repeats its edge, so it averages only the pixels that exist. Works through the
    rows in blocks, so its wide temporaries stay small whatever the strip height."""
    import numpy as np

    f = factor
    height, width = rows.shape[:2]
    out = np.empty((-(-height // f), -(-width // f), 3), rows.dtype)
    block = f * max(1, 64 // f)  # rows per step, a multiple of f: blocks never straddle two steps
    # the sum of f*f samples must fit: uint16 holds four 8-bit ones, uint32 the rest but 16-bit overviews
    wider = np.uint16 if rows.dtype == np.uint8 and f == 2 else np.uint32 if f * f * 65535 < 2**32 else np.uint64
    for y in range(0, height, block):
        wide = rows[y : y + block].astype(wider)
        pad_rows, pad_cols = -len(wide) % f, -width % f
        if pad_rows or pad_cols:
            wide = np.pad(wide, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
        total = wide[0::f, 0::f].copy()
        for dy in range(f):
            for dx in range(f):
                if dy or dx:
                    total += wide[dy::f, dx::f]
        total += f * f // 2
        total //= f * f
        out[y // f : y // f + len(total)] = total
    return out


def checked_strips(strips: Iterable[np.ndarray], *, width: int, bits: int = 8) -> Iterator[np.ndarray]:
    """Raw row strips as arrays, each checked before it is encoded, as ``tile_rows`` checks an
    encoded strip's raw rows; that the heights add up to the region's is ``tile_rows``'s check."""
    import numpy as np

    dtype = np.dtype(np.uint16 if bits == 16 else np.uint8)
    top = 0
    for strip in strips:
        strip = np.asarray(strip)
        _check_rows(strip, top=top, width=width, dtype=dtype)
        yield strip
        top += len(strip)


def _check_rows(rows: np.ndarray, *, top: int, width: int, dtype: np.dtype) -> None:
    """Rows of the strip at region row ``top`` must be ``width`` RGB pixels of the file's ``dtype``."""
    if rows.dtype != dtype or rows.ndim != 3 or rows.shape[1:] != (width, 3):
        raise ValueError(
            f"strip at row {top} has rows of shape {rows.shape[1:]} and dtype {rows.dtype};"
            f" expected ({width}, 3) {dtype}"
        )


def encode_strip(strip: np.ndarray, *, top: int, height: int, codec: TileCodec) -> EncodedStrip:
    """Region rows [top, top + len(strip)) of a region ``height`` rows high, encoded for ``codec``."""
    t = codec.tile
    bottom = top + len(strip)
    first = min(-(-top // t) * t, height)  # the first tile row boundary at or below top
    last = bottom if bottom == height else bottom // t * t  # the last one at or above bottom
    if first > last:  # the strip lies inside one tile row and ends neither it nor the region
        first = last = bottom
    body = strip[first - top : last - top]
    return EncodedStrip(
        top=top,
        head=strip[: first - top],
        body_rows=len(body),
        tiles=codec.encode_tile_rows(body) if len(body) else [],
        reduced=box_reduce(body) if codec.format.pyramid and len(body) else None,
        tail=strip[last - top :],
    )


def encode_strips(
    strips: Iterable[np.ndarray], *, height: int, codec: TileCodec, top: int = 0
) -> Iterator[EncodedStrip]:
    """Raw row strips, top to bottom from region row ``top``, encoded here. Closing this closes ``strips``
    (a render pipeline stops its device thread)."""
    try:
        for strip in strips:
            yield encode_strip(strip, top=top, height=height, codec=codec)
            top += len(strip)
    finally:
        close = getattr(strips, "close", None)
        if close is not None:
            close()


def tile_rows(
    strips: Iterable[EncodedStrip], *, height: int, width: int, codec: TileCodec
) -> Iterator[tuple[list[bytes], np.ndarray | None]]:
    """The image's tiles in file order, a run of tile rows at a time, with those rows' pyramid
    reduction: the strips' encoded tiles as they are, the rows they share encoded here."""
    import numpy as np

    t = codec.tile
    pyramid = codec.format.pyramid
    dtype = np.dtype(np.uint16 if codec.format.bits == 16 else np.uint8)
    done = 0  # image rows already in tile rows
    pending: list[np.ndarray] = []  # raw rows of the tile row being completed
    seen = 0  # image rows received
    across = -(-width // t)

    def complete() -> bool:
        return sum(map(len, pending)) == min(t, height - done)

    def flush() -> tuple[list[bytes], np.ndarray | None]:
        nonlocal done
        rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
        pending.clear()
        done += len(rows)
        return codec.encode_rows(rows, width=width), box_reduce(rows) if pyramid else None

    iterator = iter(strips)
    for strip in iterator:
        if strip.top != seen:
            raise ValueError(f"strip starting at row {strip.top} arrived where row {seen} was expected")
        for part in (strip.head, strip.tail):
            _check_rows(part, top=strip.top, width=width, dtype=dtype)
        if len(strip.tiles) != across * -(-strip.body_rows // t) or (pyramid and strip.body_rows and strip.reduced is None):
            raise ValueError(f"strip at row {strip.top}: {len(strip.tiles)} tiles for {strip.body_rows} rows")
        seen += strip.height
        if seen > height:
            raise ValueError(f"strips hold more than the canvas height of {height} rows (at least {seen})")
        # checked before the last tiles go out, so a mismatch fails the write, not after it
        if seen == height and next(iterator, None) is not None:
            raise ValueError(f"strips hold more than the canvas height of {height} rows")
        if len(strip.head):
            pending.append(strip.head)
            if complete():
                yield flush()
        if strip.body_rows:
            if pending:
                raise ValueError(f"strip at row {strip.top} leaves its tile row incomplete")
            yield strip.tiles, strip.reduced
            done += strip.body_rows
        if len(strip.tail):
            pending.append(strip.tail)
            if complete():
                yield flush()
        if seen == height:
            break
    if seen < height:
        raise ValueError(f"strips ended after {seen} rows, but the canvas height is {height}")
    if pending:
        raise ValueError(f"strips ended inside a tile row at row {done}")
