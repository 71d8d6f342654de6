"""The job runner: a job's strips rendered into its spool from the first one missing, then the
spool assembled into the TIFF, in the spool (``famos.render_server.jobs`` publishes it with the state
change). What a job's state is, and who may change it, is the state machine's, not this module's.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable

from famos.errors import Cancelled
from famos.tiff_writer import tile_format
from famos.tiles import TileCodec
from famos.render_server.assembly import assemble
from famos.render_server.spool import JobSpool
from famos.render_server.streaming import PreparedRender

ASSEMBLED = "assembled.tif"  # the file being assembled, in the job's spool until it is published


def render_job(
    prepared: PreparedRender, spool: JobSpool, *, cancel: threading.Event, encode_workers: int,
    on_strip: Callable[[int, bool], None],
) -> tuple[pathlib.Path, int]:
    """Render what the spool lacks and assemble; returns the assembled file and its size in bytes.
    ``on_strip(k, True)`` once with the first strip to render (0: a fresh start), then
    ``on_strip(k, False)`` after strip k is spooled (the store counts it only then)."""
    task, options = prepared.render.task, prepared.render.tiff
    total = task.plan.n_rows
    first = spool.first_missing(total)
    on_strip(first, True)
    with TileCodec(tile_format(options), encode_workers=encode_workers) as codec:
        if first < total:
            strips = prepared.renderer.encoded_strips(task, codec, first_row=first, cancel=cancel,
                                                      progress=prepared.meter)
            try:
                for k, strip in enumerate(strips, start=first):
                    spool.write_strip(k, strip)
                    on_strip(k, False)
            finally:
                strips.close()
        if cancel.is_set():
            raise Cancelled("job cancelled")
        assembled = spool.folder / ASSEMBLED
        report = assemble(
            spool, assembled, region=task.region, strips_total=total, options=options,
            description=task.description, codec=codec, cancel=cancel,
        )
    return assembled, report.bytes_written
