"""Render jobs: rendered by the server into its output store, resumable across crashes.

    submit -> QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED

``JobManager`` is the state machine. Its parts: the job store (``job_store``, SQLite), the runner
(``job_runner``: a job's strips into its spool, then assembled), the strip spool (``spool``: every
finished row strip on disk, counted in the store after it is written) and the assembly
(``assembly``: spooled strips into the TIFF). After a crash or
restart, unfinished jobs are queued again and continue from the first strip not spooled, so no
finished strip is rendered twice, and the assembled file equals an uninterrupted render byte for
byte; then the spool is deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from famos.errors import Cancelled, InvalidField, quoted
from famos.files import disk_full, file_sha256, is_disk_full
from famos.request import Admission, Estimate, RenderRequest
from famos.tiff_size import needs_bigtiff
from famos.values import Job, JobState
from famos.render_server.errors import AlreadyExists, FailedPrecondition, NotFound
from famos.render_server.budget import MemoryBudget
from famos.render_server.job_runner import render_job
from famos.render_server.job_store import DATABASE, JobDatabase, JobSpec
from famos.render_server.models import ModelStore, checked_name
from famos.render_server.spool import SPOOL, JobSpool, remove_orphans
from famos.render_server.streaming import PreparedRender, ServerLimits, admitted, prepared

log = logging.getLogger("famos.server.jobs")

JOB_ID_LENGTH = 32
_WATCH_POLL_SECONDS = 0.25  # how soon a watcher notices that its client went away


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    output: pathlib.Path
    max_jobs: int  # unfinished (queued + running) jobs held at once
    job_workers: int  # jobs rendering at once (each also holds a render slot)
    limits: ServerLimits
    encode_workers: int = 0  # threads compressing a job's tiles; 0: one per core


class JobManager:
    """Submits, runs, resumes, cancels and reports jobs. ``start`` re-queues what a previous
    server process left unfinished."""

    def __init__(self, config: JobsConfig, *, models: ModelStore, budget: MemoryBudget):
        self.config = config
        self.models = models
        self.budget = budget
        self.output = config.output.resolve()
        self.spool = self.output / SPOOL
        self.db: JobDatabase | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._changed = threading.Condition()
        self._cancels: dict[str, threading.Event] = {}  # running jobs
        self._closing = threading.Event()
        # failures the job store could not record (a full disk): shown to watchers from memory and
        # written once the store takes writes again; a restart queues such a job again instead
        self._unrecorded: dict[str, str] = {}
        # a job's file appears at its final path and the job turns SUCCEEDED under this lock, and a
        # cancel takes it too: a cancelled job's file never appears, a published one is never removed
        self._publish = threading.Lock()

    # lifecycle

    def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.db = JobDatabase(self.output / DATABASE)
        self._pool = ThreadPoolExecutor(max_workers=self.config.job_workers, thread_name_prefix="famos-job")
        unfinished = list(self.db.unfinished())
        remove_orphans(self.spool, keep=unfinished)
        for job_id in unfinished:
            # RUNNING here means the previous process died mid-job
            self.db.update(job_id, state=JobState.QUEUED, only_if=(JobState.RUNNING,))
            log.info("job %s: queued again after a restart", job_id)
            self._queue(job_id)

    def stop(self) -> None:
        """Stop running jobs between two chunks; they stay unfinished and resume on the next start."""
        self._closing.set()
        with self._changed:
            for event in self._cancels.values():
                event.set()
            self._changed.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.db is not None:
            self.db.close()

    # requests

    def submit(self, request: RenderRequest, *, output_name: str) -> Job:
        if self._closing.is_set():
            raise FailedPrecondition("the server is shutting down")
        job_id = uuid.uuid4().hex
        name = output_name or f"{job_id}.tif"
        checked_name(name, field="output_name")
        if not name.lower().endswith((".tif", ".tiff")):
            raise InvalidField("output_name", f"{quoted(name)} must end in .tif or .tiff")
        if (self.output / name).exists():
            raise AlreadyExists(f"output_name: {quoted(name)} already exists in the output store")
        # validated before queuing; a job that could never fit the memory budget is refused now
        admission = admitted(self.models, request, self.config.limits)
        self.budget.check_fits(admission.estimate)
        if admission.content_pixels:  # a broken content image is refused now, decoded within the budget
            with self.budget.reserved(admission.content_bytes, what="decoding the content image"):
                admission.decoded_content()
        plan = admission.plan
        # a classic TIFF that cannot hold the result must fail now, not after rendering
        needs_bigtiff(plan.region.height, plan.region.width, options=admission.tiff)
        # resolved once, at submission: a resumed job writes the same resolution and DateTime, and
        # renders the same chunks (a default chunk follows free memory, and the spool's strips are
        # rows of chunks; a backend that is not chunk-exact, openvino, gives the same bytes only so)
        resolved = dataclasses.replace(request, tiff=admission.tiff.stamped(), chunk=admission.settings.chunk)
        spec = JobSpec(resolved, name, admission.renderer.bundle.sha256)
        self._record_unrecorded()
        spool = JobSpool(self.spool, job_id)
        try:
            spool.create(request.content)
        except OSError as err:
            spool.remove()
            if is_disk_full(err):
                raise disk_full(spool.folder) from None
            raise
        try:
            self.db.insert(
                job_id=job_id, spec=spec, strips_total=plan.n_rows,
                pixels_total=plan.region.pixels, unfinished_limit=self.config.max_jobs,
            )
        except sqlite3.ProgrammingError:  # stop() closed the database after the check above
            spool.remove()
            raise FailedPrecondition("the server is shutting down") from None
        except BaseException:
            spool.remove()
            raise
        log.info("job %s: submitted (%s -> %s, %d strips)", job_id, request.model, name, plan.n_rows)
        try:
            self._queue(job_id)
        except RuntimeError:  # stop() shut the pool down after the insert: the job starts on the next start
            log.info("job %s: queued for the next start (server stopping)", job_id)
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        self._record_unrecorded()
        record = self.db.get(job_id) if len(job_id) == JOB_ID_LENGTH and job_id.isalnum() else None
        if record is None:
            raise NotFound(f"job {quoted(job_id)}: no such job")
        return self._as_known(record)

    def list(self, limit: int) -> list[Job]:
        self._record_unrecorded()
        return [self._as_known(job) for job in self.db.recent(limit)]

    def _as_known(self, record: Job) -> Job:
        error = self._unrecorded.get(record.id)
        return record if error is None else dataclasses.replace(record, state=JobState.FAILED, error=error)

    def _record_unrecorded(self) -> None:
        """Write the failures the store refused earlier, now that it may take them."""
        for job_id, error in list(self._unrecorded.items()):
            try:
                self.db.update(job_id, state=JobState.FAILED, error=error, only_if=(JobState.QUEUED, JobState.RUNNING))
            except Exception:  # noqa: BLE001 - still full: keep it in memory
                return
            self._unrecorded.pop(job_id, None)
            log.info("job %s: its failure is recorded now", job_id)

    def cancel(self, job_id: str) -> Job:
        record = self.get(job_id)
        if record.state is JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {job_id}: already succeeded")
        with self._publish:
            cancelled = self.db.update(job_id, state=JobState.CANCELLED, only_if=(JobState.QUEUED, JobState.RUNNING))
        if cancelled:
            log.info("job %s: cancelled", job_id)
            with self._changed:
                event = self._cancels.get(job_id)
                if event is not None:
                    event.set()  # the runner stops between chunks and removes the spool
                else:
                    JobSpool(self.spool, job_id).remove()
                self._changed.notify_all()
        return self.get(job_id)

    def watch(self, job_id: str, *, active: Callable[[], bool]) -> Iterator[Job]:
        """The job now and after each change, until it is final, the client leaves or the server stops."""
        last = None
        while True:
            record = self.get(job_id)
            if record != last:
                yield record
                last = record
            if record.state.final or not active() or self._closing.is_set():
                return
            with self._changed:
                self._changed.wait(_WATCH_POLL_SECONDS)

    def admitted(self, job_id: str) -> tuple[Job, JobSpool, Admission]:
        """A job, its spool and its stored request checked on its model, nothing decoded yet."""
        record = self.get(job_id)
        spool = JobSpool(self.spool, job_id)
        spec = JobSpec.from_json(self.db.spec_text(job_id), content=spool.content_image(),
                                 encode_workers=self.config.encode_workers)
        admission = admitted(self.models, spec.request, self.config.limits)
        if admission.renderer.bundle.sha256 != spec.bundle_sha256:
            raise FailedPrecondition(
                f"model {spec.request.model!r} was replaced since the job was submitted "
                f"(bundle {admission.renderer.bundle.sha256[:12]}, job {spec.bundle_sha256[:12]})"
            )
        return record, spool, admission

    def prepared(
        self, job_id: str, *, admit: Callable[[Estimate], None] | None = None
    ) -> tuple[Job, JobSpool, PreparedRender]:
        """``admitted``, ``admit`` seeing the estimate (as ``prepare``'s), then the content decoded
        and the task planned, as the runner renders it."""
        record, spool, admission = self.admitted(job_id)
        if admit is not None:
            admit(admission.estimate)
        return record, spool, prepared(admission, self.config.limits)

    def result_path(self, job_id: str) -> pathlib.Path:
        record = self.get(job_id)
        if record.state is not JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {job_id}: is {record.state.value}, not succeeded")
        path = self.output / record.output_name
        if not path.is_file():
            raise FailedPrecondition(f"job {job_id}: {record.output_name} is no longer in the output store")
        return path

    # the runner

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _queue(self, job_id: str) -> None:
        self._pool.submit(self._run, job_id).add_done_callback(_log_unexpected)

    def _run(self, job_id: str) -> None:
        """Run one job to a terminal state its watchers see (or back to QUEUED on shutdown),
        whatever fails on the way, the job store included; its spool goes on every path but a pause."""
        cancel = threading.Event()
        with self._changed:
            if self._closing.is_set():
                return
            self._cancels[job_id] = cancel
        keep_spool = False
        try:
            self._render(job_id, cancel)
        except Cancelled:
            if self.db.get(job_id).state is not JobState.CANCELLED:  # server shutdown: resume on the next start
                self.db.update(job_id, state=JobState.QUEUED, only_if=(JobState.RUNNING,))
                keep_spool = True
                log.info("job %s: paused for shutdown", job_id)
        except Exception as err:  # noqa: BLE001 - the job fails, the server goes on
            log.exception("job %s: failed", job_id)
            self._fail(job_id, str(err) or type(err).__name__)
        finally:
            if not keep_spool:
                JobSpool(self.spool, job_id).remove()
            with self._changed:
                self._cancels.pop(job_id, None)
                self._changed.notify_all()

    def _fail(self, job_id: str, error: str) -> None:
        try:
            self.db.update(job_id, state=JobState.FAILED, error=error, only_if=(JobState.QUEUED, JobState.RUNNING))
        except Exception as err:  # noqa: BLE001 - e.g. the disk that failed the job also fails its record
            log.error("job %s: failed (%s); the job store cannot record it (%s), kept in memory", job_id, error, err)
            self._unrecorded[job_id] = error

    def _render(self, job_id: str, cancel: threading.Event) -> None:
        if not self.db.update(job_id, state=JobState.RUNNING, increment=("attempts",), only_if=(JobState.QUEUED,)):
            raise Cancelled("cancelled while queued")
        self._notify()

        def strip_done(k: int, first: bool) -> None:
            if first:
                self.db.update(job_id, strips_done=k)
                if k:
                    log.info("job %s: resuming at strip %d", job_id, k)
                return
            self.db.update(job_id, strips_done=k + 1, increment=("strips_rendered",))
            log.info("job %s: strip %d rendered", job_id, k)
            self._notify()

        with self.budget.holding(wait=True, cancel=cancel) as memory:  # waits for memory as for a worker
            _, spool, prepared = self.prepared(job_id, admit=memory.take)
            assembled, size = render_job(prepared, spool, cancel=cancel, encode_workers=self.config.encode_workers,
                                         on_strip=strip_done)
        self._publish_result(job_id, assembled, self.output / self.db.get(job_id).output_name, size)

    def _publish_result(self, job_id: str, assembled: pathlib.Path, path: pathlib.Path, size: int) -> None:
        digest = file_sha256(assembled)
        with self._publish:
            if self.db.get(job_id).state is not JobState.RUNNING:
                raise Cancelled("job cancelled during assembly")  # the file never reaches the store
            os.replace(assembled, path)
            try:
                self.db.update(job_id, state=JobState.SUCCEEDED, size_bytes=size, sha256=digest, only_if=(JobState.RUNNING,))
            except BaseException:
                path.unlink(missing_ok=True)  # not succeeded, so not published
                raise
        log.info("job %s: succeeded (%s, %d bytes)", job_id, path.name, size)


def _log_unexpected(future) -> None:
    """No exception of a job thread goes unread: ``_run`` handles the job's own, this logs the rest."""
    if not future.cancelled() and future.exception() is not None:
        log.error("job thread failed", exc_info=future.exception())
