"""Megapixels per second of one window through each backend of a bundle: onnxruntime (CPU EP),
TorchScript and eager PyTorch, as ratios to eager measured in the same run.

    python bench/bench_backends.py --windows 256,512 --archs default,small

The models have random weights (speed does not depend on them); each is exported with the real
exporter (`export.writer.export_bundle`) and loaded back through `famos.bundle`, so the graphs
timed are the ones a render server runs. The same window inputs go to every backend.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import pathlib
import platform
import statistics
import sys
import tempfile
import time

# runnable as a plain script from a checkout, without installing the package
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

BACKENDS = ("onnx", "torchscript", "torch")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    windows: tuple[int, ...] = (256, 512)
    archs: tuple[str, ...] = ("default", "small")
    repeats: int = 5  # timed runs per backend and window (after warm-up); the median counts
    warmup: int = 2


@dataclasses.dataclass(frozen=True)
class BenchRow:
    arch: str
    window: int
    backend: str
    seconds: float  # median of the timed runs

    @property
    def megapixels_per_s(self) -> float:
        return self.window * self.window / 1e6 / self.seconds


def architecture(name: str):
    from famos.config import GeneratorConfig, NoiseConfig

    if name == "default":  # the paper's generator: depth 4, width 80, N = 30
        return GeneratorConfig(noise=NoiseConfig(n_local=4))
    if name == "head":  # the same with famos's earlier decoder (a full-resolution head)
        return GeneratorConfig(noise=NoiseConfig(n_local=4), full_resolution_head=True)
    if name == "small":
        return GeneratorConfig(depth=3, width=16, n_templates=8, noise=NoiseConfig(n_local=2))
    raise SystemExit(f"unknown architecture {name!r}: use default, head or small")


def export_random_model(arch: str, folder: pathlib.Path, *, side: int):
    """A random-weight checkpoint of ``arch`` on a ``side``² canvas, exported to a bundle."""
    import numpy as np
    import torch

    from famos.bundle import load_bundle
    from famos.export.writer import ExportOptions, export_bundle
    from famos.checkpoint import generator_tensors, save, spec_of
    from famos.config import CanvasConfig
    from famos.generator import build_generator

    rng = np.random.default_rng(0)
    styles = [rng.integers(0, 256, (192, 256, 3), dtype=np.uint8), rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)]
    torch.manual_seed(0)
    model = build_generator(architecture(arch), CanvasConfig(side, side), styles).eval()
    content = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    checkpoint = folder / f"{arch}.safetensors"
    spec = spec_of(model, [s.shape[:2] for s in styles])
    save(checkpoint, {**generator_tensors(model), "content_image": torch.from_numpy(content)}, spec.to_json())
    # The export checks the four corner windows; the preview is a small crop (this is a speed run).
    options = ExportOptions(parity_windows=0, preview_pixels=64 * 64)
    export_bundle(checkpoint, folder / arch, options=options)
    return load_bundle(folder / arch)


def time_runner(run, args, *, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_bench(config: BenchConfig) -> list[BenchRow]:
    from famos.runners import Backend, RunnerOptions, open_runner
    from famos.canvas import to_unit_range
    from famos.planning import Rect
    from famos.chunk_loop import WindowInputs

    rows = []
    side = max(config.windows)
    with tempfile.TemporaryDirectory(prefix="famos-bench-") as tmp:
        for arch in config.archs:
            bundle = export_random_model(arch, pathlib.Path(tmp), side=side)
            spec = bundle.spec
            inputs = WindowInputs(
                config=spec.generator, canvas=spec.canvas, content=to_unit_range(bundle.default_content()), seed=0
            )
            runners = {name: open_runner(bundle, RunnerOptions(backend=Backend(name))) for name in BACKENDS}
            for window in config.windows:
                args = inputs(Rect(0, 0, window, window))
                for name, run in runners.items():
                    seconds = time_runner(run, args, repeats=config.repeats, warmup=config.warmup)
                    rows.append(BenchRow(arch, window, name, seconds))
                    print(f"  {arch} {window}² {name}: {rows[-1].megapixels_per_s:.3f} MP/s", file=sys.stderr)
    return rows


def table(rows: list[BenchRow]) -> str:
    eager = {(r.arch, r.window): r.seconds for r in rows if r.backend == "torch"}
    lines = [
        "| architecture | window | backend | ms / window | MP/s | vs eager |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = eager[(r.arch, r.window)] / r.seconds
        lines.append(
            f"| {r.arch} | {r.window}² | {r.backend} | {r.seconds * 1e3:.1f} | {r.megapixels_per_s:.3f} | {ratio:.2f}× |"
        )
    return "\n".join(lines)


def machine() -> str:
    import onnxruntime
    import torch

    return (
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__} (CPU EP)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", default="256,512", help="window sides in pixels, comma-separated")
    parser.add_argument("--archs", default="default,small", help="architectures: default, head, small")
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--warmup", type=int, default=BenchConfig.warmup)
    args = parser.parse_args(argv)
    config = BenchConfig(
        windows=tuple(int(v) for v in args.windows.split(",")),
        archs=tuple(a.strip() for a in args.archs.split(",")),
        repeats=args.repeats,
        warmup=args.warmup,
    )
    for arch in config.archs:
        architecture(arch)  # reject an unknown name before minutes of export
    rows = run_bench(config)
    print(f"\nBackends on one window, CPU ({machine()})\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
