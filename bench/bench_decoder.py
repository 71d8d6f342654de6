"""The paper's decoder (the last up-block emits the N + 4 outputs, the default) against the
full-resolution head (famos's decoder before), at equal data and steps: quality and cost.

    python bench/bench_decoder.py --out decoder/ [--seeds 0 1] [--preset mosaic]

Trains `famos train --preset P --seed S` with and without `--full-resolution-head`, scores each
checkpoint with `famos evaluate` (content error, style distance: lower is better), and times one
`famos render` of each bundle on onnxruntime fp32 (the same runner for both, so only the
architecture differs). Also prints multiply-adds per output pixel of the paper-sized U-Net
(depth 4, width 80, 30 templates) and of the preset's, both decoders, counted on the models.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

from common import famos

DECODERS = (("paper", []), ("full-resolution head", ["--full-resolution-head"]))


def macs_per_pixel(config) -> float:
    import numpy as np
    import torch

    from famos.config import CanvasConfig
    from famos.generator import build_generator, convolution_costs

    model = build_generator(config, CanvasConfig(128, 128), [np.zeros((64, 64, 3), np.uint8)]).eval()
    costs = convolution_costs(model, torch.zeros(1, 3, 128, 128), torch.zeros(1, 2, dtype=torch.int64))
    return sum(cost for _, _, cost in costs) / 128**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--preset", default="mosaic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    import dataclasses

    from famos.config import GeneratorConfig
    from famos.training.cli import PRESETS

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"# decoders: {cpu}, {os.cpu_count()} cores, famos train --preset {args.preset}, seeds {args.seeds}\n")
    preset = PRESETS[args.preset]
    small = GeneratorConfig(depth=preset["depth"], width=preset["width"], kernel=preset["kernel"],
                            n_templates=preset["templates"])
    print("| decoder | MACs/px, paper-sized U-Net | MACs/px, preset's U-Net |")
    print("|---|---:|---:|")
    for name, flags in DECODERS:
        head = bool(flags)
        paper_sized = macs_per_pixel(GeneratorConfig(full_resolution_head=head))
        preset_sized = macs_per_pixel(dataclasses.replace(small, full_resolution_head=head))
        print(f"| {name} | {paper_sized:,.0f} | {preset_sized:,.0f} |", flush=True)

    print("\n| decoder | seed | train (s) | render (s) | content error | style distance |")
    print("|---|---:|---:|---:|---:|---:|")
    scores: dict[str, list[tuple[float, float]]] = {}
    for name, flags in DECODERS:
        for seed in args.seeds:
            tag = f"{'head' if flags else 'paper'}-{seed}"
            run, bundle = args.out / f"run-{tag}", args.out / f"bundle-{tag}"
            start = time.perf_counter()
            if not (run / "checkpoint.safetensors").exists():
                famos("train", "--preset", args.preset, "--seed", seed, *flags, "--out", run, "--quiet")
            trained = time.perf_counter() - start
            if not bundle.exists():
                famos("export", run, "--out", bundle, capture=True)
            start = time.perf_counter()
            famos("render", bundle, "--out", args.out / f"{tag}.tif", "--preview", args.out / f"{tag}.png",
                  "--backend", "onnx", "--precision", "fp32", "--overwrite", "--quiet", capture=True)
            rendered = time.perf_counter() - start
            quality = json.loads(famos("evaluate", run / "checkpoint.safetensors", "--json", capture=True))
            scores.setdefault(name, []).append((quality["content_error"], quality["style_distance"]))
            print(f"| {name} | {seed} | {trained:.0f} | {rendered:.1f} | {quality['content_error']:.4f} | "
                  f"{quality['style_distance']:.4f} |", flush=True)
    print("\n| decoder | mean content error | mean style distance |")
    print("|---|---:|---:|")
    for name, values in scores.items():
        print(f"| {name} | {statistics.mean(v[0] for v in values):.4f} | {statistics.mean(v[1] for v in values):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
