"""The render pipeline: bounded queues from chunk inputs to 8-bit row strips.

    prepare (CPU threads: content resampling, noise)  ->  run (the device: one window at a time)
      ->  crop the halo, convert to 8-bit  ->  assemble row strips  ->  consumer (TIFF writer)

Every stage holds a bounded number of chunks, so host memory is O(one strip of chunks) whatever
the canvas height; device memory is bounded by the chunk size. The result equals
``famos.rendering.render_strips`` (the sequential reference) exactly: it consumes the same pieces
(window inputs, ``chunk_pixels``, ``StripAssembler``), only overlapped in time. Cancellation is
checked between chunks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from famos.errors import Cancelled
from famos.planning import ChunkPlan
from famos.rendering import StripAssembler, WindowInputs, chunk_pixels
from famos.window import WindowRunner
from famos.values import Progress

ProgressCallback = Callable[[Progress], None]
_DONE = object()


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
    results: queue.Queue = queue.Queue(maxsize=max(1, queue_chunks))
    stop = threading.Event()
    failure: list[BaseException] = []

    def device_loop() -> None:
        try:
            with ThreadPoolExecutor(max_workers=max(1, prepare_workers), thread_name_prefix="famos-prepare") as pool:
                pending = [pool.submit(inputs, c.window) for c in chunks[:queue_chunks]]
                for i, chunk in enumerate(chunks):
                    if stop.is_set() or (cancel is not None and cancel.is_set()):
                        return
                    window_inputs = pending[i].result()
                    pending[i] = None  # drop the prepared inputs as soon as they are used
                    if i + queue_chunks < len(chunks):
                        pending.append(pool.submit(inputs, chunks[i + queue_chunks].window))
                    _put(results, (chunk, chunk_pixels(chunk, run(*window_inputs), bits=bits)), stop)
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
