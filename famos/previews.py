"""What a person looks at besides the TIFF: a downscaled overview (built strip by strip, or read
back from a finished file, through the shop's profile as a soft proof) and small renders as PNG.
Nothing here holds a full-resolution canvas except ``render_png``, which is for small ones."""

from __future__ import annotations

import math
import pathlib

import numpy as np

from famos.canvas import as_uint8
from famos.errors import UserError
from famos.files import atomic_output
from famos.icc import to_srgb
from famos.tiles import box_reduce


class Overview:
    """A downscaled preview built strip by strip (box filter), never holding the canvas."""

    def __init__(self, *, height: int, width: int, max_side: int = 1024):
        self.factor = max(1, math.ceil(max(height, width) / max_side))
        self.width = width
        self.rows: list[np.ndarray] = []
        self.pending = np.zeros((0, width, 3), dtype=np.uint8)

    def feed(self, strip: np.ndarray) -> np.ndarray:
        rows = np.concatenate([self.pending, strip]) if len(self.pending) else strip
        full = len(rows) - len(rows) % self.factor
        if full:
            self.rows.append(self._reduce(rows[:full]))
        self.pending = rows[full:].copy()
        return strip

    def image(self) -> np.ndarray:
        if len(self.pending):
            self.rows.append(self._reduce(self.pending))
            self.pending = self.pending[:0]
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 0, 3), np.uint8)

    def _reduce(self, rows: np.ndarray) -> np.ndarray:
        return box_reduce(rows, self.factor)  # the pyramid's box filter, by the overview's factor


def overview_of_tiff(path: pathlib.Path, *, max_side: int = 1024) -> np.ndarray:
    """A box-filtered overview of a tiled TIFF's full-resolution image, read a tile row at a time
    (the tiles may have been made on other machines: the file is what there is to look at)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        height, width = page.shape[:2]
        tile_height, tile_width = page.tilelength, page.tilewidth
        across = -(-width // tile_width)
        overview = Overview(height=height, width=width, max_side=max_side)
        band = np.empty((tile_height, across * tile_width, 3), np.uint8)
        # a file converted to a shop's profile is shown through it: a soft proof of the print
        proof = page.tags["InterColorProfile"].value if page.samplesperpixel == 4 else None
        for k, (tile, _, _) in enumerate(page.segments()):
            x = k % across * tile_width
            band[:, x : x + tile_width] = as_uint8(tile[0]) if proof is None else to_srgb(tile[0], bytes(proof))
            if k % across == across - 1:
                top = k // across * tile_height
                overview.feed(band[: min(tile_height, height - top), :width])
        return overview.image()


def render_png(renderer, path: str | pathlib.Path, task, *, max_pixels: int = 64 * 2**20) -> None:
    """``task`` (a ``famos.renderer.Renderer``'s) to a PNG at ``path``. Small canvases only: the
    whole image is held in memory for the PNG encoder."""
    if task.region.pixels > max_pixels:
        raise UserError(f"PNG output holds the image in memory: {task.region.pixels} pixels > {max_pixels}; use .tif")
    image = np.concatenate(list(renderer.strips(task)))
    save_png(pathlib.Path(path), image)


def save_png(path: pathlib.Path, image: np.ndarray) -> None:
    """uint8 RGB as a PNG at ``path``, atomically (its folder made if missing)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
