"""Print-shop batch throughput: the example jobs file (examples/jobs.csv), rendered on CPU.

    python bench/bench_batch.py [--scales 1 4] [--chunk 1024]

For each scale, builds a random-weight bundle with the architecture of `famos train --preset tiny`
on the preset's canvas (chelsea.png at 0.5, 226x150 px) times the scale, exports it with
`famos export`, and runs the example jobs file against it with `--bundles`. Random weights cost
the same as trained ones: the work is set by the architecture and the canvas. Prints total
seconds (validation, model load, rendering, TIFF encoding, checksums) and megapixels per second,
then the time of a re-run, which only verifies the finished outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import platform
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TINY_CANVAS = (150, 226)  # (height, width) of `famos train --preset tiny`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="canvas side multipliers")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--jobs", type=pathlib.Path, default=EXAMPLES / "jobs.csv")
    args = parser.parse_args(argv)

    from famos.clients.batch.engines import LocalEngine
    from famos.clients.batch.jobs_file import BatchSettings, load_jobs
    from famos.clients.batch.run import run_batch

    print(f"# famos batch: {args.jobs.name} on CPU ({platform.processor() or platform.machine()}), "
          f"chunk {args.chunk}, {time.strftime('%Y-%m-%d')}")
    print(f"{'canvas':>10} {'jobs':>4} {'files':>5} {'MP':>7} {'total s':>8} {'MP/s':>6} {'render MP/s':>11} {'re-run s':>8}")
    for scale in args.scales:
        with tempfile.TemporaryDirectory(prefix="famos-bench-batch-") as tmp:
            bundles = pathlib.Path(tmp) / "bundles"
            height, width = TINY_CANVAS[0] * scale, TINY_CANVAS[1] * scale
            export_tiny_bundle(bundles / "tiny", height=height, width=width)
            settings = BatchSettings(out=pathlib.Path(tmp) / "prints", bundles=bundles)
            start = time.perf_counter()
            engine = LocalEngine(chunk=args.chunk)
            report = run_batch(load_jobs(args.jobs, engine=engine, settings=settings), engine=engine, settings=settings)
            total = time.perf_counter() - start
            if not report.ok:
                raise SystemExit(f"batch failed: {[r.error for r in report.results if r.error]}")
            start = time.perf_counter()
            engine = LocalEngine(chunk=args.chunk)
            run_batch(load_jobs(args.jobs, engine=engine, settings=settings), engine=engine, settings=settings)
            rerun = time.perf_counter() - start
            mp = report.rendered_pixels / 1e6
            files = sum(r.files for r in report.results)
            print(f"{f'{width}x{height}':>10} {len(report.results):>4} {files:>5} {mp:>7.2f} {total:>8.2f} "
                  f"{mp / total:>6.2f} {report.megapixels_per_second:>11.2f} {rerun:>8.2f}")
    return 0


def export_tiny_bundle(folder: pathlib.Path, *, height: int, width: int) -> None:
    """A random-weight model with the tiny preset's architecture and styles, exported to ``folder``."""
    import torch

    from famos.canvas import load_rgb
    from famos.checkpoint import save_generator
    from famos.cli import main as famos
    from famos.config import CanvasConfig, GeneratorConfig
    from famos.generator import build_generator

    styles = [load_rgb(EXAMPLES / "style" / name) for name in ("brick.png", "gravel.png")]
    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(depth=3, width=16, n_templates=8), CanvasConfig(height, width), styles)
    folder.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = folder.parent / "tiny.safetensors"
    save_generator(checkpoint, model.eval(), style_sizes=[s.shape[:2] for s in styles],
                   content=load_rgb(EXAMPLES / "content" / "chelsea.png"))
    with contextlib.redirect_stdout(io.StringIO()):  # keep the table free of the exporter's report
        exported = famos(["export", str(checkpoint), "--out", str(folder)])
    if exported != 0:
        raise SystemExit("famos export failed")


if __name__ == "__main__":
    raise SystemExit(main())
