"""Does tile encoding overlap with the device's compute, or alternate with it?

    python bench/bench_overlap.py --side 4096 --chunk 512

``famos render``'s pipeline drives a simulated GPU: a runner with the device interface
(``stage``/``submit``) whose chunks take a fixed time on one serial device timeline (a sleep, so
the CPU cores stay free for encoding, as with a real GPU) and return a mosaic's pixels. The
device time per chunk is set so that the device's total equals the encoding's total measured
first, the hardest case: alternating takes their sum, overlapping takes about one of them.

    overlap = (device + encoding - wall) / min(device, encoding)     1: overlapped, 0: alternating
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


class SimulatedDevice:
    """A GPU's timing without a GPU: chunk k is ready ``seconds`` after chunk k-1 (or its submit)."""

    def __init__(self, pixels, seconds: float):
        self.pixels = pixels  # a mosaic band to cut chunks from
        self.seconds = seconds
        self.free_at = 0.0
        self.busy_seconds = 0.0
        self.count = 0

    def stage(self, inputs):
        return inputs

    def submit(self, staged, crop, bits):
        import numpy as np

        self.free_at = max(time.perf_counter(), self.free_at) + self.seconds
        self.busy_seconds += self.seconds
        self.count += 1
        band = np.roll(self.pixels, self.count * 37, axis=1)
        return _Ready(band[: crop.height, : crop.width], self.free_at)


class _Ready:
    def __init__(self, pixels, at: float):
        self.pixels, self.at = pixels, at

    def result(self):
        time.sleep(max(0.0, self.at - time.perf_counter()))
        return self.pixels


def render(renderer, out: pathlib.Path, *, side: int, chunk: int, level: int):
    from famos.planning import Rect
    from famos.renderer import render_tiff
    from famos.chunk_loop import RenderSettings
    from famos.tiff_options import Compression, TiffOptions

    settings = RenderSettings(chunk=chunk, region=Rect(0, 0, side, side))
    return render_tiff(renderer, out, settings=settings,
                       options=TiffOptions(compression=Compression.DEFLATE, level=level))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--level", type=int, default=6, help="deflate level (the encoding's cost)")
    args = parser.parse_args(argv)

    from bench_encode import MOSAIC, mosaic_band
    from bench_render import build_bundle
    from famos.bundle import load_bundle
    from famos.renderer import Renderer

    with tempfile.TemporaryDirectory(prefix="famos-bench-overlap-") as folder:
        work = pathlib.Path(folder)
        renderer = Renderer(load_bundle(build_bundle(work, side=args.side, width=8)))
        band = mosaic_band(MOSAIC, rows=args.chunk, width=args.chunk * 2)
        renderer.run = SimulatedDevice(band, 0.0)
        free = render(renderer, work / "free.tif", side=args.side, chunk=args.chunk, level=args.level)
        chunks = free.chunks
        encoding = free.timings["encoding"]
        renderer.run = SimulatedDevice(band, encoding / chunks)
        timed = render(renderer, work / "timed.tif", side=args.side, chunk=args.chunk, level=args.level)
        device = renderer.run.busy_seconds
        overlap = (device + timed.timings["encoding"] - timed.seconds) / min(device, timed.timings["encoding"])
    print(f"{platform.node()}, {os.cpu_count()} cores, {datetime.date.today()}: python bench/bench_overlap.py "
          f"--side {args.side} --chunk {args.chunk} --level {args.level}")
    print("| run | chunks | device s | encoding s | writer waited s | wall s | overlap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, report, busy in (("device free", free, 0.0), ("device = encoding", timed, device)):
        t = report.timings
        share = f"{overlap:.2f}" if report is timed else ""
        print(f"| {name} | {report.chunks} | {busy:.2f} | {t['encoding']:.2f} | {t['waiting_for_pixels']:.2f} | "
              f"{report.seconds:.2f} | {share} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
