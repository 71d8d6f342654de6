"""Where "the same bytes" holds, per backend x precision: chunked against whole canvas, twice in
one process, across processes, and at other thread counts.

    python bench/bench_exactness.py [--canvas 384] [--chunk 96] [--arch small]

Each configuration renders, in its own process, the whole canvas in one window and the same canvas
in chunks (8-bit pixels, as famos writes them), twice; a second process renders the same again,
and a third with one thread (the Ray worker's default) instead of every core. The table gives the
largest difference in 8-bit levels and the share of values that differ.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

CONFIGS = (("onnx", "fp32"), ("torch", "fp32"), ("torch", "bf16"), ("torchscript", "fp32"),
           ("openvino", "fp32"), ("openvino", "bf16"))


def render(bundle_path: pathlib.Path, backend: str, precision: str, threads: int, canvas: int, chunk: int,
           out: pathlib.Path) -> None:
    """This process's renders, saved as uint8 arrays: whole, chunked, chunked again."""
    import dataclasses

    import numpy as np

    from famos.bundle import load_bundle
    from famos.canvas import to_unit_range
    from famos.chunk_loop import WindowInputs, plan_for, render_strips
    from famos.config import Precision
    from famos.runners import Backend, RunnerOptions, open_runner

    bundle = load_bundle(bundle_path)
    run = open_runner(bundle, RunnerOptions(backend=Backend(backend), precision=Precision(precision), threads=threads))
    config = bundle.spec.generator
    size = dataclasses.replace(bundle.spec.canvas, height=canvas, width=canvas)
    inputs = WindowInputs(config=config, canvas=size, content=to_unit_range(bundle.default_content()), seed=3)

    def pixels(side: int) -> np.ndarray:
        plan = plan_for(config, size, chunk_size=side, halo=bundle.manifest.halo)
        return np.concatenate(list(render_strips(plan, inputs, run)))

    np.savez(out, whole=pixels(10**6), chunked=pixels(chunk), again=pixels(chunk))


def compare(a, b) -> str:
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    if not diff.any():
        return "same bytes"
    return f"max {diff.max()}, {(diff > 0).mean():.2%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvas", type=int, default=384)
    parser.add_argument("--chunk", type=int, default=96)
    parser.add_argument("--arch", default="small", help="bench_backends architecture: small, default, head")
    parser.add_argument("--render", nargs=5, metavar=("BUNDLE", "BACKEND", "PRECISION", "THREADS", "OUT"),
                        help=argparse.SUPPRESS)  # one configuration's process
    args = parser.parse_args(argv)
    if args.render:
        bundle, backend, precision, threads, out = args.render
        render(pathlib.Path(bundle), backend, precision, int(threads), args.canvas, args.chunk, pathlib.Path(out))
        return 0

    import numpy as np

    from bench_backends import export_random_model
    from bench_peak import cpu_model

    cores = os.cpu_count() or 1
    print(f"# bench_exactness: {cpu_model()}, {cores} cores; {args.arch} model, canvas {args.canvas}², "
          f"chunk {args.chunk}; 8-bit values compared\n")
    print(f"| backend | precision | chunked vs whole | twice in one process | across processes | 1 vs {cores} threads |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="famos-exact-") as tmp:
        bundle = export_random_model(args.arch, pathlib.Path(tmp), side=args.canvas)
        for backend, precision in CONFIGS:
            runs = {}
            failed = None
            for name, threads in (("first", 0), ("second", 0), ("one-thread", 1)):
                out = pathlib.Path(tmp) / f"{backend}-{precision}-{name}.npz"
                done = subprocess.run([sys.executable, __file__, "--canvas", str(args.canvas), "--chunk", str(args.chunk),
                                       "--render", str(bundle.path), backend, precision, str(threads), str(out)],
                                      capture_output=True, text=True)
                if done.returncode:
                    failed = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    break
                runs[name] = np.load(out)
            if failed:
                print(f"| {backend} | {precision} | unavailable: {failed} | | | |", flush=True)
                continue
            first = runs["first"]
            print(f"| {backend} | {precision} | {compare(first['chunked'], first['whole'])} | "
                  f"{compare(first['chunked'], first['again'])} | {compare(first['chunked'], runs['second']['chunked'])} | "
                  f"{compare(first['chunked'], runs['one-thread']['chunked'])} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
