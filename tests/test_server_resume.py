"""A job survives `kill -9` of `famos serve`: the restarted server resumes it without re-rendering
finished strips, and the file equals an uninterrupted render byte for byte."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import pytest

pytest.importorskip("grpc")

from clients.render_client import RenderClient  # noqa: E402
from famos.values import JobState  # noqa: E402
from test_server import MODEL, REPO, local_render  # noqa: E402

STRIPS = 6  # 96 rows in chunks of 16


class Served:
    """`famos serve` as a subprocess on a free loopback port, its log read line by line."""

    def __init__(self, models, output):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "famos.cli", "serve", "--models", str(models), "--output", str(output),
             "--port", "0", "--workers", "1", "--grace", "2"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        banner = self.process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, f"no banner: {banner!r} {self.process.stderr.read() if self.process.poll() is not None else ''}"
        self.port = int(match.group(1))
        self.lines: list[str] = []
        self._wanted: tuple[str, threading.Event] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if self._wanted and self._wanted[0] in line:
                self._wanted[1].set()

    def when_logged(self, text: str) -> threading.Event:
        event = threading.Event()
        self._wanted = (text, event)
        if any(text in line for line in self.lines):
            event.set()
        return event

    def strips_rendered(self, job_id: str) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := re.search(rf"job {job_id}: strip (\d+) rendered", line))]

    def client(self) -> RenderClient:
        return RenderClient(f"127.0.0.1:{self.port}", timeout=30)

    def finish(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        return code


def test_job_resumes_after_sigkill_without_rerendering(models, tmp_path):  # noqa: F811
    store = tmp_path / "store"
    store.mkdir()
    first = Served(models, store)
    with first.client() as client:
        job = client.submit(MODEL, output_name="resumed.tif", seed=7, chunk=16)
    assert first.when_logged(f"job {job.id}: strip 1 rendered").wait(30), "".join(first.lines)
    assert first.finish(signal.SIGKILL) == -signal.SIGKILL
    before = first.strips_rendered(job.id)
    assert 0 < len(before) < STRIPS, f"not killed mid-job: {before}"
    assert not (store / "resumed.tif").exists()

    second = Served(models, store)
    try:
        with second.client() as client:
            resumed = client.wait(job.id)
            assert resumed.state is JobState.SUCCEEDED, resumed.error
            after = second.strips_rendered(job.id)
            # every strip rendered exactly once over both runs: none finished before was redone
            assert sorted(before + after) == list(range(STRIPS)), (before, after)
            assert resumed.strips_rendered == resumed.strips_done == STRIPS and resumed.attempts == 2
            straight = client.wait(client.submit(MODEL, output_name="straight.tif", seed=7, chunk=16).id)
            assert straight.state is JobState.SUCCEEDED
    finally:
        # graceful shutdown on SIGTERM: exit status 0
        assert second.finish(signal.SIGTERM) == 0, "".join(second.lines)
    resumed_bytes = (store / "resumed.tif").read_bytes()
    assert resumed_bytes == (store / "straight.tif").read_bytes()
    local_render(models, tmp_path / "local.tif", "--seed", "7", "--chunk", "16")
    assert resumed_bytes == (tmp_path / "local.tif").read_bytes()
    assert not any((store / ".spool").iterdir())
