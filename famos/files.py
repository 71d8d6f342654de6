"""Atomic file output and checksums, shared by every part that writes files users keep.

A file appears at its final path only when complete: it is written under a hidden temporary
name beside it (same filesystem, so the rename is atomic), flushed to disk, then renamed. Any
exception, Ctrl-C and a full disk included, removes the temporary file and leaves the previous
content of the final path untouched. This module owns the temporary names: ``.NAME.PID.RANDOM.partial``
for the file, and ``.NAME.PID.RANDOM.LABEL.spool`` for scratch files a writer keeps beside it.
A process killed mid-write cannot clean up; the next write to the same path removes what it left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator

from famos.errors import DiskFull


def partial_path(path: pathlib.Path) -> pathlib.Path:
    """A temporary name beside ``path``, unique per writer (two processes never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")


def sidecar_path(partial: pathlib.Path, label: str) -> pathlib.Path:
    """A scratch file that belongs to the partial file ``partial`` (e.g. a pyramid level spool)."""
    return partial.with_suffix(f".{label}.spool")


def remove_partials(path: pathlib.Path) -> None:
    """The temporary files that killed writers of ``path`` left behind: those of processes that are
    gone (a live writer's are its own business). ``atomic_output`` calls this before every write."""
    for pattern in (f".{path.name}.*.partial", f".{path.name}.*.spool"):
        for partial in path.parent.glob(pattern):
            pid = partial.name[len(path.name) + 2 :].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                partial.unlink(missing_ok=True)


def scratch_folder(label: str) -> pathlib.Path:
    """A private temporary folder ``famos-LABEL-PID-RANDOM`` that names its process; those of
    processes that are gone (killed before they could clean up) are removed first."""
    import tempfile

    root = pathlib.Path(tempfile.gettempdir())
    for left in root.glob(f"famos-{label}-*-*"):
        pid = left.name[len(f"famos-{label}-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f"famos-{label}-{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, numpy's short-write message, or SQLite's "database or disk is full"."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return " requested and " in text and " written" in text or "database or disk is full" in text


def disk_full(path: pathlib.Path, *, needs: int | None = None) -> DiskFull:
    """The one message for a full disk: the file, about what it needs, what is free there."""
    try:
        free = shutil.disk_usage(path.parent if not path.is_dir() else path).free
    except OSError:
        free = None
    parts = [f"needs about {needs / 1e6:,.0f} MB"] if needs else []
    parts += [f"{free / 1e6:,.0f} MB free"] if free is not None else []
    detail = f" ({', '.join(parts)})" if parts else ""
    return DiskFull(errno.ENOSPC, f"no space left on device writing {path}{detail}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, expected_bytes: int | None = None) -> Iterator[pathlib.Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``. A full
    disk becomes ``DiskFull`` naming ``path`` (and ``expected_bytes``, the writer's estimate)."""
    path = pathlib.Path(path)
    remove_partials(path)
    tmp = partial_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # makes the rename itself survive a power cut
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err) and not isinstance(err, DiskFull):
            raise disk_full(path, needs=expected_bytes) from None
        raise


def _fsync_folder(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its rename is durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
