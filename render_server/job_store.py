"""The job store: one SQLite table of render jobs (``<output>/.famos-jobs.sqlite3``).

Each row holds a job's state, its progress in strips, its result, and its ``JobSpec`` as JSON:
everything needed to (re)start it after a crash. The content image is kept in the job's spool
folder (``famos.render_server.spool``), not in the database.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sqlite3
import threading
import time

from famos.files import disk_full, is_disk_full
from famos.request import RenderRequest
from famos.values import Job, JobState
from famos.render_server.errors import AlreadyExists, ResourceExhausted

DATABASE = ".famos-jobs.sqlite3"


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything needed to (re)start a job: the request as resolved at submission (its file's
    resolution and DateTime fixed), the output name, and the bundle hash at submission (a resumed
    job refuses a replaced model rather than mixing two)."""

    request: RenderRequest  # content kept as a file in the spool, not in the database
    output_name: str
    bundle_sha256: str

    def to_json(self) -> str:
        return json.dumps(
            {**self.request.to_json(), "output_name": self.output_name, "bundle_sha256": self.bundle_sha256},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, *, content: bytes, encode_workers: int = 0) -> JobSpec:
        data = json.loads(text)
        if "options" in data:  # a job stored before the request had one home: its TIFF options' old key
            data["tiff"] = data.pop("options")
        output_name, bundle_sha256 = data.pop("output_name"), data.pop("bundle_sha256")
        return cls(RenderRequest.from_json(data, content=content, encode_workers=encode_workers), output_name, bundle_sha256)


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
_COLUMNS = [f.name for f in dataclasses.fields(Job)]


class JobDatabase:
    """The SQLite job table behind one lock (one connection shared by the server's threads)."""

    def __init__(self, path: pathlib.Path):
        self._lock = threading.Lock()
        self.path = path
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
                    (job_id, JobState.QUEUED.value, spec.request.model, spec.output_name, spec.to_json(),
                     strips_total, pixels_total, now, now),
                )
                self._db.execute("COMMIT")
            except BaseException as err:
                if self._db.in_transaction:  # SQLite rolls back by itself when the disk is full
                    self._db.execute("ROLLBACK")
                if is_disk_full(err):
                    raise disk_full(self.path) from None
                raise

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def spec_text(self, job_id: str) -> str:
        with self._lock:
            return self._db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def recent(self, limit: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [_job(r) for r in rows]

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
            try:
                cursor = self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", params)
            except sqlite3.OperationalError as err:
                if is_disk_full(err):
                    raise disk_full(self.path) from None
                raise
        return cursor.rowcount == 1


def _job(row: tuple) -> Job:
    values = dict(zip(_COLUMNS, row))
    values["state"] = JobState(values["state"])
    return Job(**values)
