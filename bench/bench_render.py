"""End-to-end `famos render`: peak RSS against canvas size, pipeline efficiency, time per canvas.

    python bench/bench_render.py --sides 4096 8192 16384 --chunk 1024

Builds one small random-weight model whose canvas is the largest side², exports it, and renders
square regions of each side (16, 67 and 268 MP by default) in separate processes, reading each
process's peak RSS from wait4(). Pipeline efficiency = end-to-end MP/s over the bare graph's MP/s
on the same windows (the graph alone, inputs prepared beforehand), measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

from common import measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--width", type=int, default=8, help="U-Net width of the small model")
    parser.add_argument("--keep", type=pathlib.Path, help="keep the bundle and TIFFs in this folder")
    args = parser.parse_args(argv)

    work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="famos-bench-render-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(work, side=max(args.sides), width=args.width)
    print(f"# famos render: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"small model (depth 3, width {args.width}, N 4), chunk {args.chunk}, {args.compression}\n")

    graph_mps = bare_graph_throughput(bundle, chunk=args.chunk)
    print("| region | megapixels | seconds | MP/s end to end | pipeline efficiency | peak RSS (MiB) | file (MiB) |")
    print("|---|---|---|---|---|---|---|")
    rss = []
    for side in args.sides:
        out = work / f"render_{side}.tif"
        command = [sys.executable, "-m", "famos.cli", "render", str(bundle), "--out", str(out), "--quiet",
                   "--region", f"0,0,{side},{side}", "--chunk", str(args.chunk), "--compression", args.compression]
        seconds, peak = measured(command)
        mp = side * side / 1e6
        rss.append(peak)
        print(f"| {side}² | {mp:.0f} | {seconds:.1f} | {mp / seconds:.2f} | {mp / seconds / graph_mps:.2f} | "
              f"{peak:.0f} | {out.stat().st_size / 2**20:.0f} |")
        if not args.keep:
            out.unlink()
    print(f"\nbare graph (onnxruntime CPU, {args.chunk}-pixel chunks with halo): {graph_mps:.2f} MP/s delivered")
    print(f"peak RSS largest / smallest: {rss[-1] / rss[0]:.2f}")
    return 0


def build_bundle(work: pathlib.Path, *, side: int, width: int) -> pathlib.Path:
    import numpy as np
    import torch

    from famos.checkpoint import save_generator
    from famos.cli import main as famos
    from famos.config import CanvasConfig, GeneratorConfig, NoiseConfig
    from famos.generator import build_generator

    bundle = work / "bundle"
    if (bundle / "manifest.json").exists():
        return bundle
    rng = np.random.default_rng(0)
    styles = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    config = GeneratorConfig(depth=3, width=width, n_templates=4, noise=NoiseConfig(n_local=4))
    torch.manual_seed(0)
    model = build_generator(config, CanvasConfig(side, side), styles)
    content = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    save_generator(work / "model.safetensors", model, style_sizes=[(256, 256)], content=content)
    if famos(["export", str(work / "model.safetensors"), "--out", str(bundle)]) != 0:
        raise SystemExit("export failed")
    return bundle


def bare_graph_throughput(bundle: pathlib.Path, *, chunk: int, repeats: int = 4) -> float:
    """Delivered MP/s of the graph alone on interior windows (halo included in the work)."""
    from famos.bundle import load_bundle
    from famos.renderer import Renderer
    from famos.chunk_loop import RenderSettings

    renderer = Renderer(load_bundle(bundle))
    task = renderer.task(RenderSettings(chunk=chunk))
    plan = task.plan
    interior = [c for c in plan.chunks if c.window.y > 0 and c.window.x > 0][:repeats] or list(plan.chunks[:repeats])
    prepared = [task.inputs(c.window) for c in interior]
    renderer.run(*prepared[0])  # warm-up
    start = time.perf_counter()
    for window_inputs in prepared:
        renderer.run(*window_inputs)
    seconds = time.perf_counter() - start
    return sum(c.output.pixels for c in interior) / 1e6 / seconds


if __name__ == "__main__":
    raise SystemExit(main())
