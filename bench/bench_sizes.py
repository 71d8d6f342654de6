"""One model, any size: `famos render` at 1, 4, 16, 64 (and 256) megapixels of one bundle.

    python bench/bench_sizes.py [--bundle BUNDLE] [--megapixels 1 4 16 64] [--chunk 1024]

Each size is its own `famos render --size WxH` process (the model's proportions kept); peak RSS
comes from wait4(). Without --bundle a small random-weight model is built (bench_render.py's).
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import platform
import sys
import tempfile

from common import measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=pathlib.Path, help="default: a small random-weight model")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--compression", default="deflate")
    parser.add_argument("--keep", type=pathlib.Path, help="keep the TIFFs in this folder")
    args = parser.parse_args(argv)

    work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="famos-bench-sizes-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle
    if bundle is None:
        from bench_render import build_bundle

        bundle = build_bundle(work, side=512, width=8)
    from famos.bundle import load_bundle

    canvas = load_bundle(bundle).spec.canvas
    print(f"# famos render --size: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, bundle "
          f"{bundle.name} (canvas {canvas.width}x{canvas.height}), chunk {args.chunk}, {args.compression}\n")
    print("| megapixels | size | x trained canvas | seconds | MP/s | peak RSS (MiB) | file (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for mp in args.megapixels:
        scale = math.sqrt(mp * 1e6 / (canvas.width * canvas.height))
        width, height = round(canvas.width * scale), round(canvas.height * scale)
        out = work / f"size_{width}x{height}.tif"
        command = [sys.executable, "-m", "famos.cli", "render", str(bundle), "--out", str(out), "--quiet",
                   "--size", f"{width}x{height}", "--chunk", str(args.chunk), "--compression", args.compression]
        seconds, peak = measured(command)
        real_mp = width * height / 1e6
        print(f"| {real_mp:.1f} | {width}x{height} | {scale:.2f} | {seconds:.1f} | {real_mp / seconds:.2f} | "
              f"{peak:.0f} | {out.stat().st_size / 2**20:.1f} |", flush=True)
        if not args.keep:
            out.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
