"""The reduced-resolution pyramid of a TIFF, built on the fly while the full resolution streams.

Each level is 2x box-reduced (``famos.tiles.box_reduce``) from the one above, row pair by row
pair, and spooled to a temporary memory-mapped file on disk, so the pyramid never counts against
host memory; the writer then writes the levels as SubIFDs. numpy is imported inside the functions
that need it.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from famos.tiles import box_reduce

if TYPE_CHECKING:
    import numpy as np


def reduced_shapes(height: int, width: int, *, tile: int) -> list[tuple[int, int]]:
    """Shapes of the pyramid levels below full resolution: halve (rounding up) until one tile."""
    shapes = []
    while max(height, width) > tile:
        height, width = (height + 1) // 2, (width + 1) // 2
        shapes.append((height, width))
    return shapes


class ReducedLevel:
    """A level below another, filled row pair by row pair from the rows of the level above (any
    count at a time) and handing its own rows on to the level below it. Where the rows are kept is
    the subclass's ``_store``: a TIFF's pyramid spool here, a viewer's zoom levels
    (``famos.viewer.sources``)."""

    def __init__(self, *, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self.below: ReducedLevel | None = None
        self._rows = 0
        self._carry: np.ndarray | None = None  # odd row of the level above, awaiting its pair

    def _store(self, reduced: np.ndarray) -> None:
        raise NotImplementedError

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
            raise RuntimeError(f"reduced level got {self._rows} of {self.height} rows")
        if self.below is not None:
            self.below.finish()

    @property
    def rows(self) -> int:
        """Rows filled so far (a live view shows them while the level above is still coming)."""
        return self._rows

    def _emit(self, reduced: np.ndarray) -> None:
        self._store(reduced)
        self._rows += reduced.shape[0]
        if self.below is not None:
            self.below.feed(reduced)


class LevelSpool(ReducedLevel):
    """One reduced pyramid level of a TIFF, kept in a memory-mapped file on disk, so its size
    never counts against host memory."""

    def __init__(self, *, path: pathlib.Path, height: int, width: int, bits: int = 8) -> None:
        import numpy as np

        super().__init__(height=height, width=width)
        dtype = np.uint16 if bits == 16 else np.uint8
        self.path = path
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

    def _store(self, reduced: np.ndarray) -> None:
        assert self._image is not None
        self._image[self._rows : self._rows + reduced.shape[0]] = reduced
