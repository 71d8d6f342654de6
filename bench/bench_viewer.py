"""The viewer under load: IIIF tiles per second from a 1-gigapixel TIFF, and the server's peak RSS.

    python bench/bench_viewer.py [--side 32768] [--requests 400] [--clients 4] [--keep DIR]

Writes a side x side famos TIFF (deflate, with its pyramid; image-like content: colour waves and
grain), starts `famos view` on it in its own process, and asks for random 512 px IIIF tiles at every
zoom level the way OpenSeadragon does (region of 512 x 2^k px, size 512,) from several client
threads. Then the same for a quarter-size file without a pyramid, whose zoom levels `famos view`
builds once at start (that time is printed too). Peak RSS is the server's VmHWM.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def strips(side: int, rows: int = 1024):
    x = np.arange(side, dtype=np.float32)
    grain = np.random.default_rng(0).integers(0, 12, (rows, side, 3), dtype=np.uint8)
    for top in range(0, side, rows):
        y = np.arange(top, min(top + rows, side), dtype=np.float32)[:, None]
        r = 128 + 100 * np.sin(x / 900 + y / 1300)
        g = 128 + 100 * np.sin(x / 1700 - y / 700)
        b = 128 + 100 * np.cos((x + y) / 2300)
        yield (np.stack([r, g, b], -1).astype(np.uint8) + grain[: len(y)])


def write(path: pathlib.Path, side: int, *, pyramid: bool) -> float:
    from famos.tiff_options import TiffOptions
    from famos.tiff_writer import write_tiled_tiff

    start = time.perf_counter()
    write_tiled_tiff(path, strips(side), height=side, width=side, options=TiffOptions(pyramid=pyramid))
    return time.perf_counter() - start


def serve(path: pathlib.Path) -> tuple[subprocess.Popen, str, float]:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "famos.cli", "view", str(path), "--port", "0", "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    url = line.split("serving on ")[1].split()[0]
    return process, url, time.perf_counter() - start


def peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hammer(url: str, identifier: str, *, requests: int, clients: int) -> tuple[float, float, dict]:
    info = json.loads(urllib.request.urlopen(f"{url}iiif/3/{identifier}/info.json").read())
    width, height = info["width"], info["height"]
    tile = info["tiles"][0]["width"]
    factors = info["tiles"][0]["scaleFactors"]
    rng = random.Random(1)
    paths = []
    for _ in range(requests):
        factor = rng.choice(factors)
        span = tile * factor
        x = rng.randrange(0, math.ceil(width / span)) * span
        y = rng.randrange(0, math.ceil(height / span)) * span
        w, h = min(span, width - x), min(span, height - y)
        paths.append(f"{url}iiif/3/{identifier}/{x},{y},{w},{h}/{math.ceil(w / factor)},/0/default.jpg")
    latencies = []

    def fetch(path: str) -> int:
        start = time.perf_counter()
        size = len(urllib.request.urlopen(path).read())
        latencies.append(time.perf_counter() - start)
        return size

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        sizes = list(pool.map(fetch, paths))
    seconds = time.perf_counter() - start
    latencies.sort()
    return requests / seconds, sum(sizes) / len(sizes), {
        "p50_ms": 1000 * latencies[len(latencies) // 2], "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)],
        "levels": len(factors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=32768)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--keep", type=pathlib.Path, help="keep the TIFFs in this folder")
    args = parser.parse_args(argv)
    work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="famos-bench-viewer-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cores; "
          f"{args.requests} random 512 px tiles from {args.clients} client threads\n")
    print("| file | write s | server start s | tiles/s | p50 ms | p95 ms | mean tile KB | server peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for side, pyramid in ((args.side, True), (args.side // 2, False)):
        path = work / f"{side}-{'pyramid' if pyramid else 'flat'}.tif"
        written = write(path, side, pyramid=pyramid) if not path.exists() else float("nan")
        process, url, started = serve(path)
        try:
            rate, mean_bytes, stats = hammer(url, path.stem, requests=args.requests, clients=args.clients)
            rss = peak_rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait()
        mp = side * side / 1e6
        kind = "with pyramid" if pyramid else "no pyramid: levels built at start"
        print(f"| {mp:.0f} MP, {kind} | {written:.1f} | {started:.1f} | {rate:.1f} | {stats['p50_ms']:.0f} | "
              f"{stats['p95_ms']:.0f} | {mean_bytes / 1024:.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
