"""The render pipeline: bounded queues from chunk inputs to 8- or 16-bit row strips.

    prepare (CPU threads: content resampling, noise, a device runner's ``stage``)
      ->  device thread: run one window, crop the halo, quantize
      ->  assemble row strips  ->  consumer (tile encoding, TIFF writer)

A runner with ``stage`` and ``submit`` (``famos.torch_runners.TorchRunner``) crops and quantizes
on its device and returns before the chunk is done, so the device thread keeps ``IN_FLIGHT``
chunks on the device while it collects the oldest; any other runner computes a float32 window
that is cropped and quantized here (``chunk_pixels``).

Every stage holds a bounded number of chunks, so host memory is O(two strips of chunks) whatever
the canvas height; device memory is bounded by the chunk size. The finished-chunk queue holds a
whole strip of chunks beyond ``queue_chunks``: while the consumer encodes one strip on every core,
the device computes the next one instead of waiting for room. The result equals
``famos.chunk_loop.render_strips`` (the sequential reference) exactly: it consumes the same pieces
(window inputs, quantization, ``StripAssembler``), only overlapped in time. Cancellation is
checked between chunks.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from famos.errors import Cancelled
from famos.planning import ChunkPlan
from famos.chunk_loop import StripAssembler, WindowInputs, chunk_pixels
from famos.window import WindowRunner
from famos.values import Progress

ProgressCallback = Callable[[Progress], None]
_DONE = object()
IN_FLIGHT = 2  # chunks submitted to a device runner and not yet collected: one computing, one queued


class _Ready:
    """Pixels computed already (a runner without ``submit``)."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def result(self) -> np.ndarray:
        return self.pixels


def pipelined_strips(
    plan: ChunkPlan,
    inputs: WindowInputs,
    run: WindowRunner,
    *,
    first_row: int = 0,
    end_row: int | None = None,
    prepare_workers: int = 2,
    queue_chunks: int = 4,
    bits: int = 8,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[np.ndarray]:
    """Row strips ((h, region width, 3), uint8 or uint16 by ``bits``) of ``plan``, strips ``first_row`` to ``end_row``
    (excluded; None: to the last).

    Input preparation for up to ``queue_chunks`` chunks runs ahead on ``prepare_workers`` threads
    while the device thread runs the graph; finished chunks wait in a queue of ``queue_chunks``.
    """
    end = plan.n_rows if end_row is None else end_row
    chunks = [c for c in plan.chunks if first_row <= c.row < end]
    pixels_total = sum(c.output.pixels for c in chunks)
    results: queue.Queue = queue.Queue(maxsize=max(1, queue_chunks) + plan.n_cols)
    stop = threading.Event()
    failure: list[BaseException] = []
    stage = getattr(run, "stage", None)
    submit = getattr(run, "submit", None)

    def prepare(window):
        return stage(inputs(window)) if stage is not None else inputs(window)

    def launch(chunk, window_inputs):
        if submit is not None:
            return submit(window_inputs, chunk.crop, bits)
        return _Ready(chunk_pixels(chunk, run(*window_inputs), bits=bits))

    def device_loop() -> None:
        in_flight: collections.deque = collections.deque()
        try:
            with ThreadPoolExecutor(max_workers=max(1, prepare_workers), thread_name_prefix="famos-prepare") as pool:
                pending = [pool.submit(prepare, c.window) for c in chunks[:queue_chunks]]
                for i, chunk in enumerate(chunks):
                    if stop.is_set() or (cancel is not None and cancel.is_set()):
                        return
                    window_inputs = pending[i].result()
                    pending[i] = None  # drop the prepared inputs as soon as they are used
                    if i + queue_chunks < len(chunks):
                        pending.append(pool.submit(prepare, chunks[i + queue_chunks].window))
                    in_flight.append((chunk, launch(chunk, window_inputs)))
                    if len(in_flight) >= IN_FLIGHT:
                        done_chunk, pixels = in_flight.popleft()
                        _put(results, (done_chunk, pixels.result()), stop)
                while in_flight and not stop.is_set():
                    done_chunk, pixels = in_flight.popleft()
                    _put(results, (done_chunk, pixels.result()), stop)
        except BaseException as err:  # surfaced in the consumer thread
            failure.append(err)
        finally:
            _put(results, _DONE, stop)

    worker = threading.Thread(target=device_loop, name="famos-device", daemon=True)
    start = time.perf_counter()
    worker.start()
    strips = StripAssembler(plan)
    done = pixels_done = 0
    try:
        while True:
            item = results.get()
            if item is _DONE:
                break
            chunk, pixels = item
            strip = strips.add(chunk, pixels)
            done += 1
            pixels_done += chunk.output.pixels
            if progress is not None:
                progress(Progress(done, len(chunks), pixels_done, pixels_total, time.perf_counter() - start))
            if strip is not None:
                yield strip
        if failure:
            raise failure[0]
        if cancel is not None and cancel.is_set() and done < len(chunks):
            raise Cancelled("render cancelled")
    finally:
        stop.set()
        while worker.is_alive():  # unblock a device thread waiting on a full queue
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
