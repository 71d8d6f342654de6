"""Rendering on a Ray cluster: row strips on worker actors, TIFF tiles compressed where they are made.

    driver (famos render / famos serve)                 workers (Ray actors: one per GPU, or per
      plan the render once; bundle and task into          CPU slot when there is no GPU)
      the object store; at most a few strips per   --->   load the bundle once, render strip k through
      worker in flight                                    the same pipeline as a local render, encode
      join the encoded strips in file order        <---   its tiles (``famos.tiles``)
      -> TIFF writer (or raw strips for a stream)

Ray is optional (``pip install famos[cluster]``) and imported inside this module's functions only,
when a command is given ``--ray``. The bundle travels as bytes, never as a path, so a worker's
machine needs no copy of it; a worker unpacks it into a scratch folder of its own machine, opens
its runner (which reads the graph whole) and removes the folder at once: a worker killed later (by
Ray, with a driver that died, by ``ray stop``) leaves nothing on disk. Strips are idempotent, so
faults cost time, not correctness: a worker that dies is restarted by Ray, which runs its strips
again; past its restarts the driver replaces the worker and hands the strip to the replacement.
Cancel and Ctrl-C reach every worker, which stops between two chunks. The bytes equal a local
render's: the same pipeline computes the pixels, the same codec (``famos.tiles.TileCodec``) encodes
the tiles.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from famos.bundle import MANIFEST, Bundle, load_bundle
from famos.errors import BackendUnavailable, BundleError, Cancelled, InvalidField, UserError, quoted
from famos.files import scratch_folder
from famos.pipeline import ProgressCallback, pipelined_strips
from famos.runners import RunnerOptions, open_runner
from famos.tiles import EncodedStrip, TileCodec, TileFormat, encode_strip
from famos.values import Progress

if TYPE_CHECKING:
    import numpy as np

    from famos.chunk_loop import RenderTask

AUTO = "auto"  # start a local Ray instance, or join the one `ray start` runs on this machine
_POLL_SECONDS = 0.2  # how soon the driver notices a cancel while it waits for a strip
_ATTEMPTS = 3  # workers a strip may see die under it before the render fails


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    address: str = AUTO  # "auto" or a Ray address (host:port of the head node)
    workers: int = 0  # 0: one per GPU of the cluster (cuda devices) or one per CPU slot
    cpus_per_worker: int = 1  # cores each worker reserves: its runner's threads and its tile encoders
    max_restarts: int = 2  # per worker: Ray restarts it and runs its strips again
    strips_per_worker: int = 2  # strips queued on each worker: keeps it busy, bounds the driver's memory
    # custom Ray resources (name, amount) each worker also reserves: workers go only to the nodes
    # started with them (``ray start --resources '{"render": 4}'``), e.g. not to the head
    resources: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.address:
            raise InvalidField("ray", "the address is empty: use auto or HOST:PORT")
        if self.address != AUTO:
            head_address(self.address)
        if self.workers < 0:
            raise InvalidField("ray-workers", f"{self.workers}: must be 0 (one per GPU or CPU slot) or more")
        if self.cpus_per_worker < 1:
            raise InvalidField("ray-cpus-per-worker", f"{self.cpus_per_worker}: must be at least 1")
        names = [name for name, _ in self.resources]
        for name, amount in self.resources:
            if not name or name in ("CPU", "GPU"):
                raise InvalidField("ray-resource", f"{quoted(name)}: name a custom resource (CPUs per worker: "
                                   "--ray-cpus-per-worker; a GPU each comes with --device cuda)")
            if names.count(name) > 1:
                raise InvalidField("ray-resource", f"{quoted(name)} is given twice")
            if not (math.isfinite(amount) and amount >= _RESOURCE_UNIT):
                raise InvalidField("ray-resource", f"{quoted(name)}={amount}: must be at least {_RESOURCE_UNIT}")


_RESOURCE_UNIT = 0.0001  # Ray counts resources in ten-thousandths


def add_cluster_arguments(parser) -> None:
    """``--ray ADDRESS --ray-workers N --ray-cpus-per-worker N --ray-resource NAME[=AMOUNT]``, read
    back with ``cluster_options``."""
    group = parser.add_argument_group("cluster (Ray; pip install famos[cluster])")
    group.add_argument("--ray", metavar="ADDRESS",
                       help="render on a Ray cluster: auto (start or join a local one) or the head's HOST:PORT")
    group.add_argument("--ray-workers", type=int, default=ClusterOptions.workers,
                       help="worker actors (default: one per GPU for cuda devices, else one per CPU slot)")
    group.add_argument("--ray-cpus-per-worker", type=int, default=ClusterOptions.cpus_per_worker,
                       help="cores per worker: its runner's threads and tile encoders (default 1)")
    group.add_argument("--ray-resource", metavar="NAME[=AMOUNT]", action="append", default=[],
                       help="a custom Ray resource each worker also reserves (AMOUNT 1 unless given; repeatable): "
                            "workers go only to the nodes started with it, e.g. ray start --resources "
                            "'{\"render\": 4}' on the machines that should render")


def cluster_options(args) -> ClusterOptions | None:
    if args.ray is None:
        return None
    return ClusterOptions(address=args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker,
                          resources=tuple(_resource(text) for text in args.ray_resource))


def _resource(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME=AMOUNT`` of ``--ray-resource``."""
    name, given, amount = text.partition("=")
    try:
        return name.strip(), float(amount) if given else 1.0
    except ValueError:
        raise InvalidField("ray-resource", f"{quoted(text)}: use NAME or NAME=AMOUNT (a number)") from None


def _ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("--ray: Ray is not installed (pip install famos[cluster])") from None
    return ray


# How long a head that does not answer may take: Ray itself waits minutes for its GCS.
_REACH_SECONDS = 5.0


def head_address(address: str) -> tuple[str, int]:
    """(host, port) of a head's ``HOST:PORT`` (or ``ray://HOST:PORT``); InvalidField otherwise."""
    import re

    found = re.fullmatch(r"(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})", address)
    if not found or not 1 <= int(found[2]) <= 65535:
        raise InvalidField("ray", f"{quoted(address)}: use auto or the head's HOST:PORT (e.g. 10.0.0.5:6379)")
    return found[1].strip("[]"), int(found[2])


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``: the local one, started if there is none). A
    process already connected stays on its cluster. A head that does not answer is named within
    seconds, before Ray waits for it."""
    ray = _ray()
    if ray.is_initialized():
        return
    if address != AUTO:
        import socket

        host, port = head_address(address)
        try:
            socket.create_connection((host, port), timeout=_REACH_SECONDS).close()
        except OSError as err:
            raise UserError(f"--ray {address}: no Ray head answers there ({err.strerror or err})") from None
    try:
        ray.init(address=None if address == AUTO else address, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as err:
        raise UserError(f"--ray {address}: cannot reach a Ray cluster there ({err})") from None


@dataclasses.dataclass(frozen=True)
class BundleFiles:
    """A bundle as it travels to workers: its bytes, and no path (a worker's machine need not have
    the driver's folders, nor a folder of that name holding something else)."""

    sha256: str
    files: dict[str, bytes]

    @classmethod
    def of(cls, bundle: Bundle) -> BundleFiles:
        import hashlib

        names = [MANIFEST, *bundle.manifest.files]
        files = {name: (bundle.path / name).read_bytes() for name in names}
        if hashlib.sha256(files[MANIFEST]).hexdigest() != bundle.sha256:  # workers would render another model
            raise BundleError(f"{bundle.path}: the bundle changed since it was loaded (exported again?)")
        return cls(bundle.sha256, files)


@dataclasses.dataclass(frozen=True)
class WorkerStats:
    pid: int  # a restarted worker has a new one
    strips: int  # rendered since the worker (re)started
    chunks: int


class StripWorker:
    """A Ray actor: renders whole strips of any render of any bundle, one at a time, on one runner.
    Its ``control`` methods run beside a strip (a second concurrency group) so a cancel lands mid-strip."""

    def __init__(self, runner: RunnerOptions, encode_threads: int):
        self.runner = runner
        self.encode_threads = encode_threads
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()  # runners
        self._tasks: collections.OrderedDict[str, RenderTask] = collections.OrderedDict()
        self._cancels: collections.OrderedDict[str, threading.Event] = collections.OrderedDict()
        self._codecs: dict[TileFormat, TileCodec] = {}
        self.strips_rendered = self.chunks_rendered = 0

    def stats(self) -> WorkerStats:
        return WorkerStats(os.getpid(), self.strips_rendered, self.chunks_rendered)

    def cancel(self, render_id: str) -> None:
        self._cancel_event(render_id).set()

    def render(
        self, render_id: str, bundle_box: list, task_box: list, row: int, format: TileFormat | None
    ) -> np.ndarray | EncodedStrip:
        """Strip ``row`` of the render: raw (``format`` None) or encoded for ``format``. The boxes
        hold object references, fetched only when this worker has not cached what they point to."""
        cancel = self._cancel_event(render_id)
        runner = self._runner(bundle_box)
        task = self._task(render_id, task_box)

        def counted(*inputs: Any) -> Any:
            self.chunks_rendered += 1
            return runner(*inputs)

        strips = pipelined_strips(
            task.plan, task.inputs, counted, first_row=row, end_row=row + 1,
            prepare_workers=task.settings.prepare_workers, queue_chunks=task.settings.queue_chunks,
            bits=task.settings.bits, cancel=cancel,
        )
        (strip,) = list(strips)
        self.strips_rendered += 1
        if format is None:
            return strip
        if format not in self._codecs:
            self._codecs[format] = TileCodec(format, encode_workers=self.encode_threads)
        return encode_strip(strip, top=task.plan.row_top(row), height=task.region.height, codec=self._codecs[format])

    def _cancel_event(self, render_id: str) -> threading.Event:
        return _cached(self._cancels, render_id, threading.Event, keep=64)

    def _task(self, render_id: str, task_box: list) -> RenderTask:
        return _cached(self._tasks, render_id, lambda: _ray().get(task_box[0]), keep=4)

    def _runner(self, bundle_box: list) -> Any:
        ref = bundle_box[0]
        return _cached(self._models, ref.hex(), lambda: self._open(_ray().get(ref)), keep=2)

    def _open(self, shipped: BundleFiles) -> Any:
        """The runner of the shipped bundle. Its files exist only while it opens: every runner reads
        its graph whole when it starts, so nothing is left on disk for a killed worker to leak (one
        killed right here leaves its folder to the next worker of its machine: the name has its pid)."""
        folder = scratch_folder("worker")
        try:
            for name, data in shipped.files.items():
                (folder / name).write_bytes(data)
            return open_runner(load_bundle(folder), self.runner)  # load_bundle verifies every file
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _slots(node: dict[str, float], needs: dict[str, float]) -> int:
    """How many workers needing ``needs`` fit on a node with ``node`` resources (in Ray's units)."""
    return min(round(node.get(name, 0) / _RESOURCE_UNIT) // round(amount / _RESOURCE_UNIT)
               for name, amount in needs.items())


def _cached(cache: collections.OrderedDict, key: str, make, *, keep: int):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    while len(cache) > keep:
        cache.popitem(last=False)
    return value


class WorkerPool:
    """Worker actors on a Ray cluster, shared by every render of this process (every model of a
    server): one per GPU, or per ``cpus_per_worker`` CPU slots."""

    def __init__(self, options: ClusterOptions, runner: RunnerOptions = RunnerOptions()):
        ray = _ray()
        connect(options.address)
        self.options = options
        # resolved here, on the head: every worker runs (and every file records) the same backend
        # and precision, whatever each worker's machine would have chosen for itself
        runner = self.runner = runner.resolved()
        resources = ray.cluster_resources()
        self.gpu = runner.device.startswith("cuda")
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if self.gpu and not gpus:
            raise BackendUnavailable(f"--ray --device {runner.device}: the cluster has no GPU")
        # counted node by node: 2 nodes of 3 CPUs hold two 2-CPU workers, not three
        needs = {"CPU": options.cpus_per_worker, **({"GPU": 1} if self.gpu else {}), **dict(options.resources)}
        slots = sum(_slots(node["Resources"], needs) for node in ray.nodes() if node["Alive"])
        workers = options.workers or slots
        if not slots or workers > slots:  # the workers past the room would wait for it forever
            asked = f"--ray-workers {workers}" if options.workers else "a worker"
            each = " + ".join(f"{amount:g} {name}" for name, amount in needs.items())
            raise UserError(f"{asked} x ({each}): the cluster has {cpus} CPUs and {gpus} GPUs, "
                            f"room for {slots} such workers on its nodes")
        # each worker sees its own GPU as cuda:0 (Ray sets CUDA_VISIBLE_DEVICES per actor)
        self._worker_runner = dataclasses.replace(
            runner, device="cuda" if self.gpu else "cpu", threads=options.cpus_per_worker
        )
        self._actor_class = ray.remote(concurrency_groups={"control": 1})(StripWorker)
        self.workers = [self._start_worker() for _ in range(workers)]
        self._bundles: dict[str, Any] = {}  # bundle hash -> object reference of its BundleFiles
        self._lock = threading.Lock()

    def _start_worker(self):
        return self._actor_class.options(
            num_cpus=self.options.cpus_per_worker,
            num_gpus=1 if self.gpu else 0,
            resources=dict(self.options.resources),
            max_restarts=self.options.max_restarts,
            max_task_retries=self.options.max_restarts,
            max_concurrency=1,
        ).remote(self._worker_runner, self.options.cpus_per_worker)

    def stats(self) -> list[WorkerStats]:
        """Each worker's process id and the strips and chunks it rendered (since it last started)."""
        return _ray().get([w.stats.options(concurrency_group="control").remote() for w in self.workers])

    def pids(self) -> list[int]:
        return [s.pid for s in self.stats()]

    def close(self) -> None:
        """Kills the workers (they keep nothing on disk). A driver that dies without closing its
        pool loses them as well: Ray ends the actors of a driver that is gone."""
        ray = _ray()
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []

    def strips(
        self, bundle: Bundle, task: RenderTask, *, first_row: int = 0,
        cancel: threading.Event | None = None, progress: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        """Raw strips of ``task`` from ``first_row`` on, in order (what a streamed render sends)."""
        return self._strips(bundle, task, None, first_row=first_row, cancel=cancel, progress=progress)

    def encoded_strips(
        self, bundle: Bundle, task: RenderTask, format: TileFormat, *, first_row: int = 0,
        cancel: threading.Event | None = None, progress: ProgressCallback | None = None,
    ) -> Iterator[EncodedStrip]:
        """Strips of ``task`` from ``first_row`` on, in order, their tiles encoded on the workers."""
        return self._strips(bundle, task, format, first_row=first_row, cancel=cancel, progress=progress)

    def _bundle_ref(self, bundle: Bundle) -> Any:
        with self._lock:
            if bundle.sha256 not in self._bundles:
                self._bundles[bundle.sha256] = _ray().put(BundleFiles.of(bundle))
            return self._bundles[bundle.sha256]

    def _strips(
        self, bundle: Bundle, task: RenderTask, format: TileFormat | None, *, first_row: int,
        cancel: threading.Event | None, progress: ProgressCallback | None,
    ) -> Iterator[Any]:
        ray = _ray()
        from ray.exceptions import RayActorError, RayTaskError

        plan = task.plan
        render_id = uuid.uuid4().hex
        bundle_box, task_box = [self._bundle_ref(bundle)], [ray.put(task)]
        load = [0] * len(self.workers)
        pending: collections.deque[tuple[int, Any, int]] = collections.deque()  # (row, result, worker)
        attempts = collections.Counter()
        limit = self.options.strips_per_worker * len(self.workers)
        rows = range(first_row, plan.n_rows)
        chunks_total = len(rows) * plan.n_cols
        pixels_total = (plan.region.height - plan.row_top(first_row)) * plan.region.width
        chunks_done = pixels_done = 0
        next_row = first_row
        start = time.perf_counter()

        def submit(row: int, *, first: bool = False) -> None:
            k = min(range(len(self.workers)), key=load.__getitem__)
            ref = self.workers[k].render.remote(render_id, bundle_box, task_box, row, format)
            load[k] += 1
            (pending.appendleft if first else pending.append)((row, ref, k))

        finished = False
        try:
            while pending or next_row < plan.n_rows:
                while next_row < plan.n_rows and len(pending) < limit:
                    submit(next_row)
                    next_row += 1
                row, ref, k = pending[0]
                while not ray.wait([ref], timeout=_POLL_SECONDS)[0]:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("render cancelled")
                pending.popleft()
                load[k] -= 1
                try:
                    result = ray.get(ref)
                except RayTaskError as err:  # the strip itself failed: the same everywhere, no retry
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise RuntimeError(f"strip {row} failed on a worker: {err}") from None
                except RayActorError as err:  # its worker died past its restarts: replace it, run again
                    attempts[row] += 1
                    if attempts[row] >= _ATTEMPTS:
                        raise RuntimeError(f"strip {row}: {attempts[row]} workers died rendering it ({err})") from None
                    self._replace(k)
                    submit(row, first=True)
                    continue
                if cancel is not None and cancel.is_set():
                    raise Cancelled("render cancelled")
                chunks_done += plan.n_cols
                pixels_done += (plan.row_top(row + 1) - plan.row_top(row)) * plan.region.width
                if progress is not None:
                    progress(Progress(chunks_done, chunks_total, pixels_done, pixels_total, time.perf_counter() - start))
                yield result
            finished = True
        finally:
            if not finished:  # cancel, Ctrl-C, a failure or a consumer that stopped: stop every worker
                for worker in self.workers:
                    worker.cancel.options(concurrency_group="control").remote(render_id)
                for _, ref, _ in pending:
                    ray.cancel(ref)

    def _replace(self, k: int) -> None:
        ray = _ray()
        with self._lock:
            ray.kill(self.workers[k], no_restart=True)
            self.workers[k] = self._start_worker()
