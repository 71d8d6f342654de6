"""Assembly: a job's spooled strips into its TIFF in the output store.

The same writer and description as an uninterrupted render, so a job resumed after a crash
produces the identical file, byte for byte.
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any

from famos.planning import Rect
from famos.tiff_options import TiffOptions
from famos.tiff_writer import TiffReport, write_encoded_tiff
from famos.tiles import TileCodec
from famos.render_server.spool import JobSpool


def assemble(
    spool: JobSpool, path: pathlib.Path, *, region: Rect, strips_total: int, options: TiffOptions,
    description: dict[str, Any], codec: TileCodec, cancel: threading.Event | None = None,
) -> TiffReport:
    return write_encoded_tiff(
        path,
        spool.strips(strips_total),
        height=region.height,
        width=region.width,
        options=options,
        description=description,
        codec=codec,
        cancel=cancel,
    )
