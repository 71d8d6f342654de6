"""Whole-canvas pass vs exact chunked rendering: throughput and halo overhead (eager, CPU).

    python bench/bench_chunking.py --canvas 1024 --chunks 256 512 1024

Prints a markdown table. Every row renders the same canvas with the same random-weight model
(default architecture unless --width/--depth say otherwise), so ratios are comparable within a run.
"""

from __future__ import annotations

import argparse
import platform
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvas", type=int, default=1024, help="square canvas side in pixels")
    parser.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--plan-canvas", type=int, nargs="+", default=[1024, 2048, 4096, 16384],
                        help="canvas sides for the (compute-free) overhead table")
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--templates", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from famos.config import CanvasConfig, GeneratorConfig, NoiseConfig
    from famos.generator import build_generator
    from famos.torch_runners import EagerRunner
    from famos.chunk_loop import WindowInputs, plan_for, render_strips

    if args.threads:
        torch.set_num_threads(args.threads)
    config = GeneratorConfig(depth=args.depth, width=args.width, n_templates=args.templates, noise=NoiseConfig(n_local=8))
    print(f"# chunked vs whole: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"architecture: depth {config.depth}, width {config.width}, N {config.n_templates}\n")

    print("| canvas | chunk | chunks | overhead (computed/delivered) |")
    print("|---|---|---|---|")
    for side in args.plan_canvas:
        for chunk in sorted({*args.chunks, 2048}):
            plan = plan_for(config, CanvasConfig(side, side), chunk_size=chunk)
            print(f"| {side}² | {chunk} | {len(plan.chunks)} | {plan.overhead:.3f} |")
    print()

    rng = np.random.default_rng(0)
    canvas = CanvasConfig(args.canvas, args.canvas)
    styles = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    torch.manual_seed(0)
    run = EagerRunner(build_generator(config, canvas, styles))
    content = rng.random((args.canvas // 2, args.canvas // 2, 3), dtype=np.float32) * 2 - 1
    inputs = WindowInputs(config=config, canvas=canvas, content=content, seed=0)
    megapixels = args.canvas**2 / 1e6

    def timed(chunk: int) -> tuple[float, np.ndarray, int, float]:
        plan = plan_for(config, canvas, chunk_size=chunk)
        start = time.perf_counter()
        image = np.concatenate(list(render_strips(plan, inputs, run)))
        return time.perf_counter() - start, image, len(plan.chunks), plan.overhead

    whole_s, whole, _, _ = timed(10**7)
    print(f"canvas {args.canvas}² ({megapixels:.2f} MP)\n")
    print("| mode | chunks | overhead | seconds | MP/s | s/MP | vs whole | identical 8-bit |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| whole canvas | 1 | 1.000 | {whole_s:.1f} | {megapixels / whole_s:.3f} | {whole_s / megapixels:.1f} | 1.00 | - |")
    for chunk in args.chunks:
        seconds, image, n, overhead = timed(chunk)
        same = "yes" if np.array_equal(image, whole) else "NO"
        print(f"| chunk {chunk} | {n} | {overhead:.3f} | {seconds:.1f} | {megapixels / seconds:.3f} | "
              f"{seconds / megapixels:.1f} | {whole_s / seconds:.2f} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
