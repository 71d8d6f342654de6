"""The strip spool: each running job's finished row strips on disk, so a job resumes after a
crash without rendering them again.

    <output>/.spool/<job id>/content.bin        the encoded content image as submitted
    <output>/.spool/<job id>/strip-NNNNNN.npz   one finished strip, its TIFF tiles already encoded

A strip file is written to a temporary name, synced and renamed, so it exists only when complete.
Strips are spooled encoded (``famos.tiles.EncodedStrip``: compressed tiles, the few raw rows it
shares with its neighbours), so the spool costs about the finished file's size while a job runs:
the price of resuming without re-rendering. ``.npz`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterable, Iterator

from famos.files import write_atomically
from famos.tiles import EncodedStrip

SPOOL = ".spool"
CONTENT_FILE = "content.bin"


class JobSpool:
    """The spool folder of one job."""

    def __init__(self, root: pathlib.Path, job_id: str):
        self.folder = root / job_id

    def create(self, content_image: bytes) -> None:
        self.folder.mkdir()
        if content_image:
            write_atomically(self.folder / CONTENT_FILE, content_image)

    def content_image(self) -> bytes:
        path = self.folder / CONTENT_FILE
        return path.read_bytes() if path.exists() else b""

    def first_missing(self, total: int) -> int:
        """The first strip not yet spooled (``total`` when all are)."""
        return next((k for k in range(total) if not self.strip_path(k).exists()), total)

    def write_strip(self, index: int, strip: EncodedStrip) -> None:
        write_atomically(self.strip_path(index), strip.to_bytes())

    def strips(self, total: int) -> Iterator[EncodedStrip]:
        """The spooled strips 0..total-1, read one at a time."""
        for k in range(total):
            yield EncodedStrip.from_bytes(self.strip_path(k).read_bytes())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def strip_path(self, index: int) -> pathlib.Path:
        return self.folder / f"strip-{index:06d}.npz"


def remove_orphans(root: pathlib.Path, *, keep: Iterable[str]) -> None:
    """Spools of jobs that are no longer unfinished (a crash between a job's end and its cleanup)."""
    keep = set(keep)
    for folder in root.iterdir():
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
