"""Render server figures: streamed render throughput against a local render of the same canvas
(ratio, same run), time to first chunk, and N concurrent clients held by one server.

    python bench/bench_server.py BUNDLE [--chunk 256] [--clients 1 4 8 16] [--workers 2]

The server runs as a `famos serve` subprocess on a free loopback port (so client and server do not
share a GIL); the local render is `render_tiff` in this process. Both write the same TIFF options.
Throughputs are comparable within one run only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

# runnable as a plain script from a checkout, without installing the package
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

MODEL = "bench"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    bundle: pathlib.Path
    chunk: int = 256
    clients: tuple[int, ...] = (1, 4, 8, 16)
    workers: int = 2
    max_queue: int = 16
    repeats: int = 3


@dataclasses.dataclass(frozen=True)
class ConcurrencyRow:
    clients: int
    succeeded: int
    refused: int  # RESOURCE_EXHAUSTED
    seconds: float
    megapixels_per_second: float
    latency_median: float  # seconds of one client's render
    latency_max: float


def start_server(models: pathlib.Path, output: pathlib.Path, config: BenchConfig) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "famos.cli", "serve", "--models", str(models), "--output", str(output), "--port", "0",
         "--workers", str(config.workers), "--max-queue", str(config.max_queue), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    match = re.search(r":(\d+)\s*$", process.stdout.readline())
    if not match:
        process.kill()
        raise RuntimeError("famos serve did not start")
    return process, int(match.group(1))


def timed_stream(target: str, out: pathlib.Path, chunk: int) -> float:
    """Seconds for one streamed render assembled into a TIFF by the client."""
    from famos.clients.render_client import RenderClient

    start = time.perf_counter()
    with RenderClient(target) as client:
        client.render_to_tiff(MODEL, out, chunk=chunk)
    return time.perf_counter() - start


def first_chunk(target: str, chunk: int) -> float:
    """Seconds from the call to the first pixels; the render is then cancelled."""
    from famos.clients.render_client import RenderClient
    from famos.values import Piece

    with RenderClient(target) as client:
        start = time.perf_counter()
        stream = client.render(MODEL, chunk=chunk)
        for event in stream:
            if isinstance(event, Piece):
                seconds = time.perf_counter() - start
                stream.cancel()
                return seconds
    raise RuntimeError("the render sent no pixels")


def run(config: BenchConfig) -> tuple[dict[str, float], list[ConcurrencyRow]]:
    import grpc

    from famos.clients.render_client import ServerError
    from famos.bundle import load_bundle
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings

    bundle = load_bundle(config.bundle)
    megapixels = bundle.spec.canvas.height * bundle.spec.canvas.width / 1e6
    with tempfile.TemporaryDirectory(prefix="famos-bench-server-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "models").mkdir()
        (tmp / "store").mkdir()
        shutil.copytree(config.bundle, tmp / "models" / MODEL)
        renderer = Renderer(bundle)
        settings = RenderSettings(chunk=config.chunk)
        render_tiff(renderer, tmp / "warm.tif", settings=settings)  # session warm-up, like the server's below
        local = min(_seconds(lambda: render_tiff(renderer, tmp / "local.tif", settings=settings))
                    for _ in range(config.repeats))
        process, port = start_server(tmp / "models", tmp / "store", config)
        target = f"127.0.0.1:{port}"
        try:
            timed_stream(target, tmp / "warm-stream.tif", config.chunk)
            firsts = sorted(first_chunk(target, config.chunk) for _ in range(config.repeats))
            single = {
                "megapixels": megapixels,
                "local_s": local,
                "stream_s": min(timed_stream(target, tmp / "stream.tif", config.chunk) for _ in range(config.repeats)),
                "first_chunk_s": firsts[len(firsts) // 2],
            }
            rows = []
            for n in config.clients:
                def one(i: int):
                    try:
                        return timed_stream(target, tmp / f"c{n}-{i}.tif", config.chunk)
                    except ServerError as err:
                        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            return None
                        raise

                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(n) as pool:
                    results = list(pool.map(one, range(n)))
                seconds = time.perf_counter() - start
                done = [r for r in results if r is not None]
                rows.append(ConcurrencyRow(
                    clients=n, succeeded=len(done), refused=n - len(done), seconds=seconds,
                    megapixels_per_second=len(done) * megapixels / seconds,
                    latency_median=sorted(done)[len(done) // 2] if done else float("nan"),
                    latency_max=max(done, default=float("nan")),
                ))
                for path in tmp.glob(f"c{n}-*.tif"):
                    path.unlink()
        finally:
            process.terminate()
            process.wait(timeout=30)
    return single, rows


def _seconds(body) -> float:
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def table(config: BenchConfig, single: dict[str, float], rows: list[ConcurrencyRow]) -> str:
    mp = single["megapixels"]  # of the canvas, per render
    lines = [
        f"### Render server ({datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, chunk {config.chunk}, server workers {config.workers})",
        "",
        "| render | seconds | MP/s | vs local |",
        "|---|---:|---:|---:|",
        f"| local `render_tiff` ({mp:.2f} MP) | {single['local_s']:.3f} | {mp / single['local_s']:.2f} | 1.00 |",
        f"| streamed + client TIFF | {single['stream_s']:.3f} | {mp / single['stream_s']:.2f} | "
        f"{single['local_s'] / single['stream_s']:.2f} |",
        "",
        f"time to first chunk (median of {config.repeats}): {single['first_chunk_s'] * 1000:.1f} ms",
        "",
        "| clients | succeeded | refused | wall s | total MP/s | median s | slowest s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.clients} | {r.succeeded} | {r.refused} | {r.seconds:.2f} | {r.megapixels_per_second:.2f} | "
        f"{r.latency_median:.2f} | {r.latency_max:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_server.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=pathlib.Path, help="bundle folder written by `famos export`")
    parser.add_argument("--chunk", type=int, default=BenchConfig.chunk)
    parser.add_argument("--clients", type=int, nargs="+", default=list(BenchConfig.clients))
    parser.add_argument("--workers", type=int, default=BenchConfig.workers, help="server render workers")
    parser.add_argument("--max-queue", type=int, default=BenchConfig.max_queue)
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    args = parser.parse_args(argv)
    config = BenchConfig(bundle=args.bundle, chunk=args.chunk, clients=tuple(args.clients), workers=args.workers,
                         max_queue=args.max_queue, repeats=args.repeats)
    single, rows = run(config)
    print(table(config, single, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
