"""Images a viewer looks at, read one rectangle at a time at any zoom level, never whole.

    TiffImage   a finished famos TIFF: full resolution from its tiles, coarser levels from its
                SubIFD pyramid; the levels a file lacks (all but the first, without a pyramid) are
                built once, in one pass over its tile rows, into files on disk, within a budget
                proportional to the file's own size
    LiveImage   a job still rendering: its spooled strips decoded as they appear into levels on
                disk; rows not rendered yet read black

Level k is the image 2**k times smaller (each side halved k times, rounding up), which is what the
IIIF scale factors 1, 2, 4, ... address. ``read`` costs memory for the rectangle asked for plus one
tile, whatever the image size; building levels costs one tile row. Built levels are written and
read with ``os.pwrite``/``os.pread``, never memory-mapped, so they sit in the page cache, not in
the process's resident memory.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from famos.canvas import as_uint8
from famos.errors import OverLimit
from famos.icc import to_srgb
from famos.pyramid import LevelSpool, ReducedLevel, reduced_shapes
from famos.tiff_options import MAX_TILE
from famos.tiles import EncodedStrip, TileCodec, TileFormat

# Built levels take a third of the image's raw RGB bytes. A famos render compresses 2x (JPEG at
# its default quality, on texture) to about 20x (a smooth gradient in ZSTD); a header that claims
# thousands of times its file's bytes (a "TIFF bomb") is refused before anything is reserved.
MAX_LEVEL_RATIO = 64.0
LEVEL_ALLOWANCE = 64 << 20  # bytes of levels any file may have: a flat colour compresses past any ratio


class DamagedImage(ValueError):
    """A tile of the file cannot be located, read or decoded (truncated or corrupt); names the tile."""


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
        if max(self.tile_height, self.tile_width) > MAX_TILE:  # every read decodes whole tiles
            raise ValueError(f"tiles of {self.tile_width}x{self.tile_height} px, over the {MAX_TILE} px famos writes")
        # CMYK (a file converted to a shop's profile) is shown through its profile: a soft proof
        self.proof = bytes(page.tags["InterColorProfile"].value) if page.shape[2:] == (4,) else None
        self.across = -(-self.width // self.tile_width)
        self.offsets, self.counts = page.dataoffsets, page.databytecounts
        tiles = self.across * -(-self.height // self.tile_height)
        if len(self.offsets) < tiles or len(self.counts) < tiles:
            raise DamagedImage(f"{tiles} tiles, but the file locates {min(len(self.offsets), len(self.counts))}")
        size = os.fstat(fd).st_size
        ends = np.asarray(self.offsets[:tiles], np.int64) + np.asarray(self.counts[:tiles], np.int64)
        past = np.flatnonzero(ends > size)
        if past.size:
            raise DamagedImage(f"truncated: tile {past[0]} of {tiles} ends at byte {ends[past[0]]} "
                               f"of a {size}-byte file")
        self._decode = page.decode
        self._tables = page.jpegtables

    def read(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width, 3), np.uint8)
        th, tw = self.tile_height, self.tile_width
        for ty in range(y // th, -(-(y + height) // th)):
            for tx in range(x // tw, -(-(x + width) // tw)):
                tile = self._tile(ty * self.across + tx)
                if self.proof is not None:
                    tile = to_srgb(tile, self.proof)
                top, left = ty * th, tx * tw
                y0, y1 = max(y, top), min(y + height, top + th)
                x0, x1 = max(x, left), min(x + width, left + tw)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - top : y1 - top, x0 - left : x1 - left]
        return out

    def _tile(self, index: int) -> np.ndarray:
        count = self.counts[index]
        data = os.pread(self.fd, count, self.offsets[index])
        if len(data) < count:  # the file shrank after it was opened
            raise DamagedImage(f"tile {index} is truncated ({len(data)} of {count} bytes)")
        try:
            decoded = self._decode(data, index, jpegtables=self._tables)[0]
            return as_uint8(decoded.reshape(self.tile_height, self.tile_width, -1))
        except Exception as err:  # noqa: BLE001 - each codec raises its own error types
            raise DamagedImage(f"tile {index} cannot be decoded ({type(err).__name__})") from None


class _DiskLevel(ReducedLevel):
    """One built zoom level: raw RGB rows in a file, filled row pair by row pair from the level
    above (a ``famos.pyramid.ReducedLevel``, as the TIFF's own pyramid is) with ``os.pwrite``. Rows
    not written yet read black."""

    def __init__(self, *, path: pathlib.Path, height: int, width: int):
        super().__init__(height=height, width=width)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def read(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width, 3), np.uint8)
        stride = self.width * 3
        for row in range(min(height, self.height - y)):
            data = os.pread(self._fd, width * 3, (y + row) * stride + x * 3)
            out[row].reshape(-1)[: len(data)] = np.frombuffer(data, np.uint8)
        return out

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)

    def _store(self, reduced: np.ndarray) -> None:
        data = np.ascontiguousarray(reduced)
        written = os.pwrite(self._fd, data, self.rows * self.width * 3)
        if written != data.nbytes:
            raise OSError(f"{self.path}: wrote {written} of {data.nbytes} bytes")


class _Levels:
    """Zoom levels built on disk, filled from the rows of the level above them in order."""

    def __init__(self, folder: pathlib.Path, shapes: list[tuple[int, int]], *, first: int = 1):
        self.folder = folder
        self.spools: list[_DiskLevel] = []
        try:
            for k, (h, w) in enumerate(shapes, start=first):
                self.spools.append(_DiskLevel(path=folder / f"level{k}.rgb", height=h, width=w))
        except BaseException:
            self.discard()
            raise
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
    """A finished tiled TIFF written by famos (or any tiled 8-bit RGB TIFF).

    ``max_level_ratio`` bounds the levels it builds: their bytes may be at most that many times
    the file's (or ``LEVEL_ALLOWANCE``), and no more than the temporary folder has free
    (``OverLimit`` otherwise). ``progress`` hears (pixels read, pixels to read, seconds) while
    they are built."""

    def __init__(self, path: str | os.PathLike[str], *, work: pathlib.Path | None = None,
                 max_level_ratio: float = MAX_LEVEL_RATIO, progress: Callable[[int, int, float], None] | None = None):
        import tifffile

        self.path = pathlib.Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self._work: pathlib.Path | None = None
        self._levels: _Levels | None = None
        try:
            with tifffile.TiffFile(self.path) as tif:
                page = tif.pages[0]
                self.pages = [TiledPage(page, self.fd)]
                for sub in page.pages or []:
                    above = self.pages[-1]
                    if abs(sub.shape[0] - above.height / 2) > 1 or abs(sub.shape[1] - above.width / 2) > 1:
                        break  # not the next halving: reads would pick the wrong level; built instead
                    self.pages.append(TiledPage(sub, self.fd))
                self.description = _provenance(page.description)
                self.dpi = _dpi(page)
            full, last = self.pages[0], self.pages[-1]
            self.height, self.width, self.tile = full.height, full.width, full.tile_width
            shapes = reduced_shapes(last.height, last.width, tile=self.tile)  # what the file lacks
            self.levels = [(p.height, p.width) for p in self.pages] + shapes
            if shapes:  # built once, one tile row of the last level the file has at a time
                self._work = pathlib.Path(tempfile.mkdtemp(prefix="famos-view-", dir=work))
                self._check_budget(shapes, max_level_ratio)
                self._levels = _Levels(self._work, shapes, first=len(self.pages))
                started = time.monotonic()
                for y in range(0, last.height, last.tile_height):
                    rows = min(last.tile_height, last.height - y)
                    self._levels.feed(last.read(y, 0, rows, last.width))
                    if progress is not None:
                        progress((y + rows) * last.width, last.height * last.width, time.monotonic() - started)
                self._levels.finish()
        except BaseException:
            self.close()
            raise

    def _check_budget(self, shapes: list[tuple[int, int]], ratio: float) -> None:
        assert self._work is not None
        need = sum(h * w * 3 for h, w in shapes)
        size = os.fstat(self.fd).st_size
        mb = 1 << 20
        if need > max(ratio * size, LEVEL_ALLOWANCE):
            raise OverLimit(f"{self.path}: declares {self.width}x{self.height} px, whose zoom levels would take "
                            f"{need / mb:.0f} MB of temporary disk, over {ratio:g}x the {size / mb:.1f} MB file "
                            f"and over {LEVEL_ALLOWANCE // mb} MB (--max-level-ratio)")
        free = shutil.disk_usage(self._work).free
        if need > free:
            raise OverLimit(f"{self.path}: its zoom levels need {need / mb:.0f} MB of temporary disk, "
                            f"{free / mb:.0f} MB are free in {self._work.parent} (set TMPDIR)")

    def read(self, level: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        if level < len(self.pages):
            return self.pages[level].read(y, x, height, width)
        assert self._levels is not None
        return self._levels.spools[level - len(self.pages)].read(y, x, height, width)

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
