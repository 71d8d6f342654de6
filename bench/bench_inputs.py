"""Input preparation per window on one thread: the content resampled onto the window and, for a
model with noise, its noise window (``famos.chunk_loop.WindowInputs``). A GPU renders a window in
well under a second, so this decides how many prepare threads (`famos render --workers`) it needs.

    python bench/bench_inputs.py --sides 1168 2176 4224
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[1168, 2176, 4224], help="window sides (chunk + halo)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np

    from famos.config import CanvasConfig, GeneratorConfig, NoiseConfig
    from famos.planning import Rect
    from famos.chunk_loop import WindowInputs

    content = np.random.default_rng(0).random((300, 451, 3), dtype=np.float32) * 2 - 1  # the samples' size
    canvas = CanvasConfig(32768, 32768)
    models = {"paper (no noise)": GeneratorConfig(),
              "with noise (2 global, 3 local, 2 periodic)": GeneratorConfig(noise=NoiseConfig(n_global=2, n_local=3, n_periodic=2))}
    print(f"{platform.node()}, {os.cpu_count()} cores, {datetime.date.today()}: python bench/bench_inputs.py "
          f"--sides {' '.join(map(str, args.sides))}")
    print("| model | window | seconds (best of %d) | MP/s per thread |" % args.repeats)
    print("|---|---:|---:|---:|")
    for name, config in models.items():
        inputs = WindowInputs(config=config, canvas=canvas, content=content, seed=0)
        for side in args.sides:
            inputs(Rect(0, 0, 64, 64))  # warm-up
            best = min(_timed(inputs, Rect(4096, 4096, side, side)) for _ in range(args.repeats))
            print(f"| {name} | {side}² | {best:.3f} | {side * side / best / 1e6:.1f} |")
    return 0


def _timed(inputs, window) -> float:
    start = time.perf_counter()
    inputs(window)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
