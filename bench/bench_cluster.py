"""Scale-out on Ray: tile encoding on every core, Ray against a local render, and the figures that
say where scaling over many GPUs stops.

    python bench/bench_cluster.py [--bundle BUNDLE] [--megapixels 16] [--chunk 512] [--workers 1 2]

1. Tile encoding (``famos.tiles.TileCodec``, deflate + predictor) on 1..N threads: MB/s of raw pixels.
2. The same canvas rendered locally (one runner on N threads) and on a local Ray cluster (N
   workers x 1 core each): wall time, and Ray's cost per strip against the local render on as many cores.
3. Per strip: compute (the runner), encode (one core), the object-store round trip of an encoded
   strip between processes, and the driver's write rate of encoded tiles (the serial part that
   bounds any number of workers).

Without --bundle a small random-weight model is built (bench_render.py's). Everything runs on
this machine's CPUs; a GPU's per-strip compute time enters the model in BENCHMARKS.md as a parameter.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import platform
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=pathlib.Path, help="default: a small random-weight model")
    parser.add_argument("--megapixels", type=float, default=16)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1..cores)")
    args = parser.parse_args(argv)

    import ray

    from famos.bundle import load_bundle
    from famos.cluster import ClusterOptions, WorkerPool
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings
    from famos.runners import RunnerOptions
    from famos.tiff_options import TiffOptions
    from famos.tiff_writer import tile_format, write_encoded_tiff
    from famos.tiles import TileCodec, encode_strip

    cores = os.cpu_count() or 1
    counts = args.workers or list(range(1, cores + 1))
    work = pathlib.Path(tempfile.mkdtemp(prefix="famos-bench-cluster-"))
    bundle_path = args.bundle
    if bundle_path is None:
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        from bench_render import build_bundle

        bundle_path = build_bundle(work, side=512, width=8)
    bundle = load_bundle(bundle_path)
    canvas = bundle.spec.canvas
    scale = math.sqrt(args.megapixels * 1e6 / (canvas.height * canvas.width))
    size = (round(canvas.height * scale) // 16 * 16, round(canvas.width * scale) // 16 * 16)
    settings = RenderSettings(seed=1, chunk=args.chunk, size=size)
    options = TiffOptions()  # deflate + predictor, 256 px tiles: the defaults
    mp = size[0] * size[1] / 1e6
    print(f"# {datetime.date.today()} {platform.node()} {cores} cores, {platform.processor() or platform.machine()}")
    print(f"# canvas {size[1]}x{size[0]} ({mp:.1f} MP), chunk {args.chunk}, bundle {bundle_path}\n")

    # 1. encoding threads
    strip = next(Renderer(bundle).strips(Renderer(bundle).task(settings)))
    print("| encode threads | MB/s (raw pixels) | speedup |\n|---:|---:|---:|")
    base = None
    for threads in counts:
        with TileCodec(tile_format(options), encode_workers=threads) as codec:
            encode_strip(strip, top=0, height=size[0], codec=codec)  # warm-up
            start = time.perf_counter()
            for _ in range(3):
                encode_strip(strip, top=0, height=size[0], codec=codec)
            rate = 3 * strip.nbytes / (time.perf_counter() - start) / 1e6
        base = base or rate
        print(f"| {threads} | {rate:.0f} | {rate / base:.2f}x |")

    # 2. local against Ray on the same cores
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    local_file, results = work / "local.tif", []
    print("\n| render | wall s | MP/s | strips | Ray cost per strip vs local, s | scaling efficiency |")
    print("|---|---:|---:|---:|---:|---:|")
    one_worker = None
    for n in counts:
        local = Renderer(bundle, RunnerOptions(threads=n))
        start = time.perf_counter()
        render_tiff(local, local_file, settings=settings, options=TiffOptions(encode_workers=n))
        t_local = time.perf_counter() - start
        strips = math.ceil(size[0] / args.chunk)
        pool = WorkerPool(ClusterOptions(workers=n, cpus_per_worker=1))
        pool.pids()  # started, not timed
        start = time.perf_counter()
        render_tiff(Renderer(bundle, cluster=pool), work / "ray.tif", settings=settings, options=options)
        t_ray = time.perf_counter() - start
        pool.close()
        same = (work / "ray.tif").read_bytes() == local_file.read_bytes()
        one_worker = one_worker or t_ray
        print(f"| local, {n} threads | {t_local:.2f} | {mp / t_local:.2f} | {strips} | | |")
        print(f"| Ray, {n} workers x 1 core | {t_ray:.2f} | {mp / t_ray:.2f} | {strips} | "
              f"{(t_ray - t_local) / strips:+.3f} | {one_worker / (n * t_ray):.2f} |"
              + ("" if same else " FILES DIFFER"))
        results.append((n, t_local, t_ray))

    # 3. the serial parts: per-strip compute, encode, transfer, and the driver's write rate
    renderer = Renderer(bundle, RunnerOptions(threads=1))
    task = renderer.task(settings)
    strips_iter = renderer.strips(task)
    next(strips_iter)  # warm-up: the first windows pay for the session's first allocations
    start = time.perf_counter()
    strip = next(strips_iter)
    t_compute = time.perf_counter() - start
    strips_iter.close()
    with TileCodec(tile_format(options), encode_workers=1) as codec:
        start = time.perf_counter()
        encoded = encode_strip(strip, top=0, height=size[0], codec=codec)
        t_encode = time.perf_counter() - start
    echo = ray.remote(lambda x: x)
    ray.get(echo.remote(encoded))  # warm-up
    start = time.perf_counter()
    for _ in range(5):
        ray.get(echo.remote(encoded))
    t_transfer = (time.perf_counter() - start) / 5
    with TileCodec(tile_format(options), encode_workers=cores) as codec:
        every = list(Renderer(bundle).encoded_strips(task, codec))
        start = time.perf_counter()
        write_encoded_tiff(work / "write.tif", every, height=size[0], width=size[1], options=options, codec=codec)
        t_write = time.perf_counter() - start
    written = sum(s.payload_bytes for s in every)
    print(f"\n| per strip ({strip.shape[1]}x{strip.shape[0]} px, {strip.nbytes / 1e6:.1f} MB raw, "
          f"{encoded.payload_bytes / 1e6:.1f} MB encoded) | s |\n|---|---:|")
    print(f"| compute, 1 CPU core | {t_compute:.3f} |")
    print(f"| encode, 1 core | {t_encode:.3f} |")
    print(f"| object store round trip (task in, strip out) | {t_transfer:.4f} |")
    print(f"| driver write, encoded bytes | {written / t_write / 1e6:.0f} MB/s ({mp / t_write:.0f} MP/s) |")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
