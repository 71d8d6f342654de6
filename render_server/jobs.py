"""Render jobs: rendered by the server into its output store, resumable across crashes.

State lives in an embedded SQLite database (``<output>/.famos-jobs.sqlite3``). A running job
spools every finished row strip to ``<output>/.spool/<job id>/strip-NNNNNN.npy`` (written to a
temporary name, synced, renamed: a strip file exists only when complete) and then counts it in
the database. After a crash or restart, unfinished jobs are queued again and continue from the
first strip without a file, so no finished strip is rendered twice. When all strips exist, the TIFF
is assembled from them with the same writer and description as an uninterrupted render, so the
resumed file is identical byte for byte; then the spool is deleted.

The spool costs disk equal to the raw image (3 bytes per pixel) while a job runs: the price of
resuming without re-rendering.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import logging
import pathlib
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from famos.files import file_sha256, write_atomically
from famos.planning import Rect
from famos.tiff import BigTiff, Compression, TiffOptionError, TiffOptions, needs_bigtiff, write_tiled_tiff
from render_server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from render_server.models import ModelStore, checked_name
from render_server.pipeline import Cancelled
from render_server.slots import RenderSlots
from render_server.streaming import Limits, RenderSpec, prepare

log = logging.getLogger("famos.server.jobs")

DATABASE = ".famos-jobs.sqlite3"
SPOOL = ".spool"
CONTENT_FILE = "content.bin"  # the encoded content image as submitted
JOB_ID_LENGTH = 32
_WATCH_POLL_SECONDS = 0.25  # how soon a watcher notices that its client went away


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything needed to (re)start a job, stored as JSON: the render, its TIFF options, and the
    bundle hash at submission (a resumed job refuses a replaced model rather than mixing two)."""

    render: RenderSpec  # content_image kept as a file in the spool, not in the database
    options: TiffOptions
    output_name: str
    bundle_sha256: str

    def to_json(self) -> str:
        region = self.render.region
        return json.dumps(
            {
                "model": self.render.model,
                "seed": self.render.seed,
                "region": dataclasses.asdict(region) if region else None,
                "chunk": self.render.chunk,
                "options": {
                    **dataclasses.asdict(self.options),
                    "compression": self.options.compression.value,
                    "bigtiff": self.options.bigtiff.value,
                },
                "output_name": self.output_name,
                "bundle_sha256": self.bundle_sha256,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, *, content_image: bytes) -> JobSpec:
        data = json.loads(text)
        options = dict(data["options"])
        options["compression"] = Compression(options["compression"])
        options["bigtiff"] = BigTiff(options["bigtiff"])
        region = data["region"]
        return cls(
            render=RenderSpec(
                model=data["model"],
                seed=int(data["seed"]),
                region=Rect(**region) if region else None,
                chunk=int(data["chunk"]),
                content_image=content_image,
            ),
            options=TiffOptions(**options),
            output_name=data["output_name"],
            bundle_sha256=data["bundle_sha256"],
        )


@dataclasses.dataclass(frozen=True)
class JobRecord:
    id: str
    state: JobState
    model: str
    output_name: str
    strips_done: int
    strips_total: int
    strips_rendered: int
    pixels_total: int
    error: str
    size_bytes: int
    sha256: str
    created_at: float
    updated_at: float
    attempts: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    model TEXT NOT NULL,
    output_name TEXT NOT NULL,
    spec TEXT NOT NULL,
    strips_done INTEGER NOT NULL DEFAULT 0,
    strips_total INTEGER NOT NULL,
    strips_rendered INTEGER NOT NULL DEFAULT 0,
    pixels_total INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    size_bytes INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at);
"""
_RECORD_COLUMNS = [f.name for f in dataclasses.fields(JobRecord)]


class JobDatabase:
    """The SQLite job table behind one lock (one connection shared by the server's threads)."""

    def __init__(self, path: pathlib.Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + NORMAL: a committed update survives the process being killed (power loss may
        # lose the last updates, which only costs re-rendering those strips).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, *, job_id: str, spec: JobSpec, strips_total: int, pixels_total: int, unfinished_limit: int) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (unfinished,) = self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", (JobState.QUEUED.value, JobState.RUNNING.value)
                ).fetchone()
                if unfinished >= unfinished_limit:
                    raise ResourceExhausted(f"the server already holds {unfinished} unfinished jobs (the limit)")
                taken = self._db.execute(
                    "SELECT id FROM jobs WHERE output_name = ? AND state NOT IN (?, ?)",
                    (spec.output_name, JobState.FAILED.value, JobState.CANCELLED.value),
                ).fetchone()
                if taken:
                    raise AlreadyExists(f"output_name: {spec.output_name!r} belongs to job {taken[0]}")
                self._db.execute(
                    "INSERT INTO jobs (id, state, model, output_name, spec, strips_total, pixels_total,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, JobState.QUEUED.value, spec.render.model, spec.output_name, spec.to_json(),
                     strips_total, pixels_total, now, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_RECORD_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def spec_text(self, job_id: str) -> str:
        with self._lock:
            return self._db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def recent(self, limit: int) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_RECORD_COLUMNS)} FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [_record(r) for r in rows]

    def unfinished(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE state IN (?, ?) ORDER BY created_at, id",
                (JobState.QUEUED.value, JobState.RUNNING.value),
            ).fetchall()
        return [r[0] for r in rows]

    def update(self, job_id: str, *, only_if: tuple[JobState, ...] = (), increment: tuple[str, ...] = (), **values) -> bool:
        """Set columns (and add 1 to ``increment`` columns) of one job; with ``only_if``, only
        while the job is in one of those states. Returns whether the row changed."""
        sets = [f"{k} = ?" for k in values] + [f"{k} = {k} + 1" for k in increment] + ["updated_at = ?"]
        params = [v.value if isinstance(v, JobState) else v for v in values.values()] + [time.time()]
        where = "id = ?"
        params.append(job_id)
        if only_if:
            where += f" AND state IN ({', '.join('?' * len(only_if))})"
            params += [s.value for s in only_if]
        with self._lock:
            cursor = self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", params)
        return cursor.rowcount == 1


def _record(row: tuple) -> JobRecord:
    values = dict(zip(_RECORD_COLUMNS, row))
    values["state"] = JobState(values["state"])
    return JobRecord(**values)


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    output: pathlib.Path
    max_jobs: int  # unfinished (queued + running) jobs held at once
    job_workers: int  # jobs rendering at once (each also holds a render slot)
    limits: Limits
    tiff_workers: int = 2


class JobManager:
    """Submits, runs, resumes, cancels and reports jobs. ``start`` re-queues what a previous
    server process left unfinished."""

    def __init__(self, config: JobsConfig, *, models: ModelStore, slots: RenderSlots):
        self.config = config
        self.models = models
        self.slots = slots
        self.output = config.output.resolve()
        self.spool = self.output / SPOOL
        self.db: JobDatabase | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._changed = threading.Condition()
        self._cancels: dict[str, threading.Event] = {}  # running jobs
        self._closing = threading.Event()

    # lifecycle

    def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.db = JobDatabase(self.output / DATABASE)
        self._pool = ThreadPoolExecutor(max_workers=self.config.job_workers, thread_name_prefix="famos-job")
        unfinished = list(self.db.unfinished())
        for folder in self.spool.iterdir():  # spools of final jobs a crash left behind
            if folder.name not in unfinished:
                shutil.rmtree(folder, ignore_errors=True)
        for job_id in unfinished:
            # RUNNING here means the previous process died mid-job
            self.db.update(job_id, state=JobState.QUEUED, only_if=(JobState.RUNNING,))
            log.info("job %s: queued again after a restart", job_id)
            self._pool.submit(self._run, job_id)

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

    def submit(self, render: RenderSpec, *, options: TiffOptions, output_name: str) -> JobRecord:
        if self._closing.is_set():
            raise FailedPrecondition("the server is shutting down")
        job_id = uuid.uuid4().hex
        name = output_name or f"{job_id}.tif"
        checked_name(name, field="output_name")
        if not name.lower().endswith((".tif", ".tiff")):
            raise InvalidArgument("output_name", f"{name!r} must end in .tif or .tiff")
        if (self.output / name).exists():
            raise AlreadyExists(f"output_name: {name!r} already exists in the output store")
        prepared = prepare(self.models, render, self.config.limits)  # validates before queuing
        region = prepared.plan.region
        try:  # a classic TIFF that cannot hold the result must fail now, not after rendering
            needs_bigtiff(region.height, region.width, options=options)
        except TiffOptionError as err:
            raise InvalidArgument("tiff", str(err)) from None
        spec = JobSpec(render, options, name, prepared.renderer.bundle.sha256)
        folder = self.spool / job_id
        folder.mkdir()
        if render.content_image:
            write_atomically(folder / CONTENT_FILE, render.content_image)
        try:
            self.db.insert(
                job_id=job_id, spec=spec, strips_total=prepared.plan.n_rows,
                pixels_total=prepared.plan.region.pixels, unfinished_limit=self.config.max_jobs,
            )
        except sqlite3.ProgrammingError:  # stop() closed the database after the check above
            shutil.rmtree(folder, ignore_errors=True)
            raise FailedPrecondition("the server is shutting down") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("job %s: submitted (%s -> %s, %d strips)", job_id, render.model, name, prepared.plan.n_rows)
        try:
            self._pool.submit(self._run, job_id)
        except RuntimeError:  # stop() shut the pool down after the insert: the job starts on the next start
            log.info("job %s: queued for the next start (server stopping)", job_id)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        record = self.db.get(job_id) if len(job_id) == JOB_ID_LENGTH and job_id.isalnum() else None
        if record is None:
            raise NotFound(f"job {job_id!r}: no such job")
        return record

    def list(self, limit: int) -> list[JobRecord]:
        return self.db.recent(limit)

    def cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.state is JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {job_id}: already succeeded")
        if self.db.update(job_id, state=JobState.CANCELLED, only_if=(JobState.QUEUED, JobState.RUNNING)):
            log.info("job %s: cancelled", job_id)
            with self._changed:
                event = self._cancels.get(job_id)
                if event is not None:
                    event.set()  # the runner stops between chunks and removes the spool
                else:
                    shutil.rmtree(self.spool / job_id, ignore_errors=True)
                self._changed.notify_all()
        return self.get(job_id)

    def watch(self, job_id: str, *, active: Callable[[], bool]) -> Iterator[JobRecord]:
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

    def _run(self, job_id: str) -> None:
        cancel = threading.Event()
        with self._changed:
            if self._closing.is_set():
                return
            self._cancels[job_id] = cancel
        try:
            self._render(job_id, cancel)
        except Cancelled:
            if self.db.get(job_id).state is JobState.CANCELLED:
                shutil.rmtree(self.spool / job_id, ignore_errors=True)
            else:  # server shutdown: leave the spool, resume on the next start
                self.db.update(job_id, state=JobState.QUEUED, only_if=(JobState.RUNNING,))
                log.info("job %s: paused for shutdown", job_id)
        except Exception as err:  # noqa: BLE001 - the job fails, the server goes on
            log.exception("job %s: failed", job_id)
            self.db.update(job_id, state=JobState.FAILED, error=str(err) or type(err).__name__,
                           only_if=(JobState.QUEUED, JobState.RUNNING))
            shutil.rmtree(self.spool / job_id, ignore_errors=True)
        finally:
            with self._changed:
                self._cancels.pop(job_id, None)
                self._changed.notify_all()

    def _render(self, job_id: str, cancel: threading.Event) -> None:
        folder = self.spool / job_id
        content_file = folder / CONTENT_FILE
        spec = JobSpec.from_json(
            self.db.spec_text(job_id),
            content_image=content_file.read_bytes() if content_file.exists() else b"",
        )
        with self.slots.slot(cancel=cancel, bounded=False):
            if not self.db.update(job_id, state=JobState.RUNNING, increment=("attempts",), only_if=(JobState.QUEUED,)):
                raise Cancelled("cancelled while queued")  # _run removes the spool
            self._notify()
            prepared = prepare(self.models, spec.render, self.config.limits)
            if prepared.renderer.bundle.sha256 != spec.bundle_sha256:
                raise RuntimeError(
                    f"model {spec.render.model!r} was replaced since the job was submitted "
                    f"(bundle {prepared.renderer.bundle.sha256[:12]}, job {spec.bundle_sha256[:12]})"
                )
            total = prepared.plan.n_rows
            first = next((k for k in range(total) if not _strip_path(folder, k).exists()), total)
            self.db.update(job_id, strips_done=first)
            if first:
                log.info("job %s: resuming at strip %d of %d", job_id, first, total)
            if first < total:
                strips = prepared.renderer.strips(
                    prepared.settings, content=prepared.content, first_row=first, cancel=cancel
                )
                try:
                    for k, strip in enumerate(strips, start=first):
                        write_atomically(_strip_path(folder, k), _npy_bytes(strip))
                        self.db.update(job_id, strips_done=k + 1, increment=("strips_rendered",))
                        log.info("job %s: strip %d rendered", job_id, k)
                        self._notify()
                finally:
                    strips.close()
            if cancel.is_set():
                raise Cancelled("job cancelled")
            path = self.output / spec.output_name
            _remove_partials(path)  # left by a crash during a previous assembly
            region = prepared.plan.region
            write_tiled_tiff(
                path,
                (np.load(_strip_path(folder, k)) for k in range(total)),
                height=region.height,
                width=region.width,
                options=dataclasses.replace(spec.options, workers=self.config.tiff_workers),
                description=prepared.description(),
            )
            size, digest = path.stat().st_size, file_sha256(path)
            succeeded = self.db.update(
                job_id, state=JobState.SUCCEEDED, size_bytes=size, sha256=digest, only_if=(JobState.RUNNING,)
            )
            shutil.rmtree(folder, ignore_errors=True)
            if not succeeded:  # cancelled during the assembly: a cancelled job leaves no file
                path.unlink(missing_ok=True)
                return
            log.info("job %s: succeeded (%s, %d bytes)", job_id, spec.output_name, size)


def _strip_path(folder: pathlib.Path, index: int) -> pathlib.Path:
    return folder / f"strip-{index:06d}.npy"


def _npy_bytes(strip: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(strip), allow_pickle=False)
    return buffer.getvalue()


def _remove_partials(path: pathlib.Path) -> None:
    """The TIFF writer's temporary files for ``path`` (its partial file and pyramid spools)."""
    for pattern in (f".{path.name}.*.partial", f".{path.name}.*.spool"):
        for partial in path.parent.glob(pattern):
            partial.unlink(missing_ok=True)


