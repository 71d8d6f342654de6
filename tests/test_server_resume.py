"""A job survives `kill -9` of `famos serve`: the restarted server resumes it without re-rendering
finished strips, and the file equals an uninterrupted render byte for byte.

The kill is deterministic: the first server runs with its spool's ``write_strip`` wrapped (by this
test, not by a hook in the server) so that the process SIGKILLs itself right after strip
``KILLED_AFTER`` reached the disk and before the job store counted it: the worst moment.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import pytest

pytest.importorskip("grpc")

from famos.clients.render_client import RenderClient  # noqa: E402
from famos.values import JobState  # noqa: E402
from test_server import MODEL, REPO, local_render  # noqa: E402

KILLED_AFTER = 2  # strips 0..2 are on disk when the first server dies

# `famos serve`, but the process dies by SIGKILL right after spooling strip KILLED_AFTER
_DIES_MID_JOB = f"""
import os, signal, sys
from famos.render_server import spool
write = spool.JobSpool.write_strip
def write_then_die(self, index, strip):
    write(self, index, strip)
    if index == {KILLED_AFTER}:
        os.kill(os.getpid(), signal.SIGKILL)
spool.JobSpool.write_strip = write_then_die
from famos.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Served:
    """`famos serve` as a subprocess on a free loopback port, its log read line by line."""

    def __init__(self, models, output, *, dies_mid_job: bool = False, runner: tuple[str, ...] = ()):
        launcher = ["-c", _DIES_MID_JOB] if dies_mid_job else ["-m", "famos.cli"]
        self.process = subprocess.Popen(
            [sys.executable, *launcher, "serve", "--models", str(models), "--output", str(output),
             "--port", "0", "--workers", "1", "--grace", "2", *runner],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        banner = self.process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, f"no banner: {banner!r} {self.process.stderr.read() if self.process.poll() is not None else ''}"
        self.port = int(match.group(1))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def strips_rendered(self, job_id: str) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := re.search(rf"job {job_id}: strip (\d+) rendered", line))]

    def client(self) -> RenderClient:
        return RenderClient(f"127.0.0.1:{self.port}", timeout=30)

    def finish(self, signum: int | None = None) -> int:
        if signum is not None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=5)
        return code


# the default runner, and the torch device path on a GPU: there too a resumed job must be the same bytes
RUNNERS = [(), pytest.param(("--backend", "torch", "--device", "cuda"), marks=pytest.mark.gpu, id="cuda")]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("scale, strips", [(None, 6), (2.0, 12)])  # 96 or 192 rows in chunks of 16
def test_job_resumes_after_sigkill_without_rerendering(models, tmp_path, scale, strips, runner):  # noqa: F811
    store = tmp_path / "store"
    store.mkdir()
    first = Served(models, store, dies_mid_job=True, runner=runner)
    with first.client() as client:
        job = client.submit(MODEL, output_name="resumed.tif", seed=7, chunk=16, scale=scale)
    assert first.finish() == -signal.SIGKILL, "".join(first.lines)
    # strip KILLED_AFTER is on disk but was never counted: the store and the log lag the spool
    assert first.strips_rendered(job.id) == list(range(KILLED_AFTER))
    spooled = sorted(p.name for p in (store / ".spool" / job.id).glob("strip-*.npz"))
    assert spooled == [f"strip-{k:06d}.npz" for k in range(KILLED_AFTER + 1)]
    assert not (store / "resumed.tif").exists()

    second = Served(models, store, runner=runner)
    try:
        with second.client() as client:
            resumed = client.wait(job.id)
            assert resumed.state is JobState.SUCCEEDED, resumed.error
            # the restarted server renders only the strips the spool lacks
            assert second.strips_rendered(job.id) == list(range(KILLED_AFTER + 1, strips))
            assert resumed.strips_done == strips and resumed.attempts == 2
            assert resumed.strips_rendered == strips - 1  # strip KILLED_AFTER: rendered once, never counted
            straight = client.wait(client.submit(MODEL, output_name="straight.tif", seed=7, chunk=16, scale=scale).id)
            assert straight.state is JobState.SUCCEEDED
    finally:
        # graceful shutdown on SIGTERM: exit status 0
        assert second.finish(signal.SIGTERM) == 0, "".join(second.lines)
    resumed_bytes = (store / "resumed.tif").read_bytes()
    assert resumed_bytes == (store / "straight.tif").read_bytes()
    local_render(models, tmp_path / "local.tif", "--seed", "7", "--chunk", "16", *(["--scale", str(scale)] if scale else []), *runner)
    assert resumed_bytes == (tmp_path / "local.tif").read_bytes()
    assert not any((store / ".spool").iterdir())


def test_a_job_stored_before_the_request_had_one_home_still_reads():
    """Jobs recorded by the previous release (TIFF options under "options") resume after an upgrade."""
    import json

    from famos.planning import Rect
    from famos.tiff_options import Compression
    from famos.render_server.job_store import JobSpec

    old = {"model": "tiny", "seed": 7, "region": {"y": 0, "x": 8, "height": 16, "width": 32}, "chunk": 16,
           "size": [96, 160], "scale": None, "output_name": "a.tif", "bundle_sha256": "ab" * 32,
           "options": {"tile": 32, "compression": "zstd", "level": 9, "dpi": 150.0, "datetime": "2026:01:01 00:00:00"}}
    spec = JobSpec.from_json(json.dumps(old), content=b"")
    assert spec.request.region == Rect(0, 8, 16, 32) and spec.request.size == (96, 160)
    assert spec.request.tiff.compression is Compression.ZSTD and spec.request.tiff.level == 9
    assert (spec.output_name, spec.bundle_sha256) == ("a.tif", "ab" * 32)
    assert JobSpec.from_json(spec.to_json(), content=b"") == spec
