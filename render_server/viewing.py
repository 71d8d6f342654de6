"""The server's jobs as images for the viewer (``famos serve --http PORT``): identifiers are job
ids, never paths. A finished job is shown from its TIFF in the output store, a queued or running
one live from its spool (rows not rendered yet are black). Open images are kept for the next
requests, the least recently used closed beyond a few.
"""

from __future__ import annotations

import collections
import shutil
import threading

from famos.values import JobState
from famos.tiff_writer import tile_format
from famos.render_server.errors import FailedPrecondition, NotFound
from famos.render_server.jobs import JobManager
from famos.viewer.sources import ImageSource, LiveImage, TiffImage

_STATES = {JobState.SUCCEEDED: "finished", JobState.RUNNING: "rendering", JobState.QUEUED: "queued"}
_LISTED = 200  # jobs on the index page
VIEWS = ".views"


class JobImages:
    def __init__(self, jobs: JobManager, *, keep: int = 4):
        self.jobs = jobs
        self.keep = keep
        self._open: collections.OrderedDict[str, tuple[JobState, ImageSource]] = collections.OrderedDict()
        self._lock = threading.Lock()
        # zoom levels of TIFFs without a pyramid and live views, for this server's lifetime
        self.work = jobs.output / VIEWS
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()

    def identifiers(self) -> list[str]:
        return [job.id for job in self.jobs.list(_LISTED) if job.state in _STATES]

    def state(self, identifier: str) -> str:
        return _STATES.get(self._job(identifier).state, "gone")

    def image(self, identifier: str) -> ImageSource:
        job = self._job(identifier)
        if job.state not in _STATES:
            raise KeyError(identifier)  # failed or cancelled: nothing to show
        finished = job.state is JobState.SUCCEEDED
        with self._lock:
            held = self._open.get(identifier)
            if held is not None and (held[0] is JobState.SUCCEEDED) == finished:
                self._open.move_to_end(identifier)
                return held[1]
            if finished:
                image: ImageSource = TiffImage(self.jobs.result_path(identifier), work=self.work)
            else:
                image = self._live(identifier)
            if held is not None:
                held[1].close()  # the live view of a job that has just finished
            self._open[identifier] = (job.state, image)
            while len(self._open) > self.keep:
                self._open.popitem(last=False)[1][1].close()
            return image

    def _live(self, identifier: str) -> LiveImage:
        """An unfinished job as its strips land in the spool (rows not rendered yet are black)."""
        try:
            record, spool, admission = self.jobs.admitted(identifier)
        except FailedPrecondition:  # its model was replaced: the job will fail, there is nothing to show
            raise KeyError(identifier) from None
        # its description names the content's pixels: decoded within the server's memory budget
        # (busy: the viewer answers 503), and let go once the view is built
        with self.jobs.budget.reserved(admission.content_bytes, what="the job's view"):
            render = admission.resolved()
        task, options = render.task, render.tiff
        return LiveImage(height=task.region.height, width=task.region.width, format=tile_format(options),
                         strips_total=record.strips_total, strip_file=spool.strip_path,
                         description=task.description, dpi=options.dpi, work=self.work)

    def close(self) -> None:
        with self._lock:
            for _, image in self._open.values():
                image.close()
            self._open.clear()

    def _job(self, identifier: str):
        try:
            return self.jobs.get(identifier)
        except NotFound:
            raise KeyError(identifier) from None
