"""Images a viewer looks at, read one rectangle at a time at any zoom level, never whole.

    TiffImage   a finished famos TIFF: full resolution from its tiles, coarser levels from its
                SubIFD pyramid, or, for a file without one, from zoom levels built once in one pass
                over its tile rows into memory-mapped files on disk
    LiveImage   a job still rendering: its spooled strips decoded as they appear into memory-mapped
                levels; rows not rendered yet read black

Level k is the image 2**k times smaller (each side halved k times, rounding up), which is what the
IIIF scale factors 1, 2, 4, ... address. ``read`` costs memory for the rectangle asked for plus one
tile, whatever the image size.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from famos.canvas import as_uint8
from famos.icc import to_srgb
from famos.pyramid import LevelSpool, reduced_shapes
from famos.tiles import EncodedStrip, TileCodec, TileFormat


class ImageSource:
    """What the IIIF service needs of an image."""

    width: int
    height: int
    tile: int  # the tile side to advertise: reads aligned to it cost the fewest decodes
    levels: list[tuple[int, int]]  # (height, width) of level 0 (full resolution), 1, 2, ...
    description: dict[str, Any]  # provenance: model, seed, canvas, ... (the TIFF's ImageDescription)
    dpi: float | None = None

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Pixels [y, y+height) x [x, x+width) of ``level`` as uint8 (height, width, 3)."""
        raise NotImplementedError

    def progress(self) -> tuple[int, int]:
        """(rows rendered, rows in all) at full resolution; equal when the image is complete."""
        return self.height, self.height

    def refresh(self) -> None:
        """Take in what is new (a live image's newly spooled strips)."""

    def close(self) -> None:
        """Release files and memory maps."""


class TiledPage:
    """Rectangles of one tiled TIFF page (or SubIFD), read through its tiles with ``os.pread``
    (thread-safe, no shared file position) and tifffile's decoder for that page."""

    def __init__(self, page: Any, fd: int):
        self.fd = fd
        self.height, self.width = page.shape[:2]
        self.tile_height, self.tile_width = page.tilelength, page.tilewidth
        if not (self.tile_height and self.tile_width) or page.shape[2:] not in ((3,), (4,)) or \
                page.dtype not in (np.uint8, np.uint16):
            raise ValueError("not a tiled 8- or 16-bit RGB or CMYK image (famos writes nothing else)")
        # CMYK (a file converted to a shop's profile) is shown through its profile: a soft proof
        self.proof = bytes(page.tags["InterColorProfile"].value) if page.shape[2:] == (4,) else None
        self.across = -(-self.width // self.tile_width)
        self.offsets, self.counts = page.dataoffsets, page.databytecounts
        self._decode = page.decode
        self._tables = page.jpegtables

    def read(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width, 3), np.uint8)
        th, tw = self.tile_height, self.tile_width
        for ty in range(y // th, -(-(y + height) // th)):
            for tx in range(x // tw, -(-(x + width) // tw)):
                index = ty * self.across + tx
                data = os.pread(self.fd, self.counts[index], self.offsets[index])
                tile = as_uint8(self._decode(data, index, jpegtables=self._tables)[0].reshape(th, tw, -1))
                if self.proof is not None:
                    tile = to_srgb(tile, self.proof)
                top, left = ty * th, tx * tw
                y0, y1 = max(y, top), min(y + height, top + th)
                x0, x1 = max(x, left), min(x + width, left + tw)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - top : y1 - top, x0 - left : x1 - left]
        return out


class _Levels:
    """Zoom levels 1, 2, ... in memory-mapped files, filled from full-resolution rows in order."""

    def __init__(self, folder: pathlib.Path, shapes: list[tuple[int, int]]):
        self.folder = folder
        self.spools = [LevelSpool(path=folder / f"level{k}.rgb", height=h, width=w)
                       for k, (h, w) in enumerate(shapes, start=1)]
        for parent, child in zip(self.spools, self.spools[1:]):
            parent.below = child

    def feed(self, rows: np.ndarray) -> None:
        if self.spools:
            self.spools[0].feed(rows)

    def finish(self) -> None:
        if self.spools:
            self.spools[0].finish()

    def discard(self) -> None:
        for spool in self.spools:
            spool.discard()


class TiffImage(ImageSource):
    """A finished tiled TIFF written by famos (or any tiled 8-bit RGB TIFF)."""

    def __init__(self, path: str | os.PathLike[str], *, work: pathlib.Path | None = None):
        import tifffile

        self.path = pathlib.Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self._work: pathlib.Path | None = None
        self._levels: _Levels | None = None
        try:
            with tifffile.TiffFile(self.path) as tif:
                page = tif.pages[0]
                self.pages = [TiledPage(page, self.fd)]
                self.pages += [TiledPage(sub, self.fd) for sub in (page.pages or [])]
                self.description = _provenance(page.description)
                self.dpi = _dpi(page)
            full = self.pages[0]
            self.height, self.width, self.tile = full.height, full.width, full.tile_width
            if len(self.pages) > 1:
                self.levels = [(p.height, p.width) for p in self.pages]
            else:  # no pyramid in the file: build the zoom levels once, one tile row at a time
                shapes = reduced_shapes(self.height, self.width, tile=self.tile)
                self._work = pathlib.Path(tempfile.mkdtemp(prefix="famos-view-", dir=work))
                self._levels = _Levels(self._work, shapes)
                for y in range(0, self.height, full.tile_height):
                    self._levels.feed(full.read(y, 0, min(full.tile_height, self.height - y), self.width))
                self._levels.finish()
                self.levels = [(self.height, self.width), *shapes]
        except BaseException:
            self.close()
            raise

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        if level < len(self.pages):
            return self.pages[level].read(y, x, height, width)
        assert self._levels is not None
        return np.array(self._levels.spools[level - 1].read(y, x, height, width))

    def close(self) -> None:
        if self._levels is not None:
            self._levels.discard()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LiveImage(ImageSource):
    """A job's image while it renders: strips from its spool, decoded in order as they appear."""

    def __init__(
        self, *, height: int, width: int, format: TileFormat, strips_total: int,
        strip_file: Callable[[int], pathlib.Path], description: dict[str, Any], dpi: float | None = None,
        work: pathlib.Path | None = None,
    ):
        self.height, self.width, self.tile = height, width, format.tile
        self.description, self.dpi = description, dpi
        self.strips_total = strips_total
        self.strip_file = strip_file
        self._codec = TileCodec(format, encode_workers=1)
        self._work = pathlib.Path(tempfile.mkdtemp(prefix="famos-live-", dir=work))
        shapes = reduced_shapes(height, width, tile=self.tile)
        self.levels = [(height, width), *shapes]
        self._full = LevelSpool(path=self._work / "level0.rgb", height=height, width=width)
        self._levels = _Levels(self._work, shapes)
        self._full.below = self._levels.spools[0] if self._levels.spools else None
        self._next = 0  # the next strip to take in
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            while self._next < self.strips_total:
                path = self.strip_file(self._next)
                try:
                    strip = EncodedStrip.from_bytes(path.read_bytes())
                except FileNotFoundError:  # not rendered yet (or the job finished and its spool went)
                    return
                body = (self._codec.decode_tile_rows(strip.tiles, rows=strip.body_rows, width=self.width)
                        if strip.body_rows else strip.head[:0])
                self._full.accept(np.concatenate([strip.head, body, strip.tail]))
                self._next += 1
            if self._full.below is not None and self._full.rows == self.height:
                self._full.below.finish()
                self._full.below = None

    def progress(self) -> tuple[int, int]:
        return self._full.rows, self.height

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        spool = self._full if level == 0 else self._levels.spools[level - 1]
        return np.array(spool.read(y, x, height, width))

    def close(self) -> None:
        self._codec.close()
        self._full.discard()
        self._levels.discard()
        shutil.rmtree(self._work, ignore_errors=True)


def _provenance(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _dpi(page: Any) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    per_unit = numerator / denominator if denominator else 0.0
    unit = int(tags["ResolutionUnit"].value)
    return per_unit if unit == 2 else per_unit * 2.54 if unit == 3 else None
