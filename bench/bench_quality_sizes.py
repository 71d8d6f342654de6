"""Does one model look right at other sizes? Content error and style distance at 0.5x, 1x, 2x and
4x the trained canvas, for a model trained with `same` crops and one with `independent` crops.

    python bench/bench_quality_sizes.py --out sizes/ [--steps 300] [--scales 0.5 1 2 4]

Trains both models on the bundled samples (tiny preset), evaluates the centre 512 px of each
size (`famos evaluate --scale`), and writes a centre crop per size as PNG to look at.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform

from common import famos

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1, 2, 4])
    parser.add_argument("--style", type=pathlib.Path, default=EXAMPLES / "style" / "brick.png")
    parser.add_argument("--content", type=pathlib.Path, default=EXAMPLES / "content" / "chelsea.png")
    parser.add_argument("--canvas", default="452x300")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# quality at other sizes: {platform.node()}, {os.cpu_count()} cores, tiny preset, {args.steps} steps, "
          f"canvas {args.canvas}, content {args.content.name}, style {args.style.name}\n")
    print("| crops | scale | canvas | content error | style distance |")
    print("|---|---|---|---|---|")
    for crop in ("same", "independent"):
        run = args.out / f"run-{crop}"
        if not (run / "checkpoint.safetensors").exists():
            famos("train", "--preset", "tiny", "--content", args.content, "--style", args.style, "--canvas", args.canvas,
                  "--crop", crop, "--steps", args.steps, "--preview-every", args.steps, "--out", run, "--quiet")
        bundle = args.out / f"bundle-{crop}"
        if not bundle.exists():
            famos("export", run, "--out", bundle)
        for scale in args.scales:
            result = json.loads(famos("evaluate", run / "checkpoint.safetensors", "--scale", scale, "--json", capture=True))
            print(f"| {crop} | {scale:g}x | {result['canvas']} | {result['content_error']:.4f} | "
                  f"{result['style_distance']:.4f} |", flush=True)
            width, height = (int(v) for v in result["canvas"].split("x"))
            side_w, side_h = min(width, 512), min(height, 512)
            region = f"{(width - side_w) // 2},{(height - side_h) // 2},{side_w},{side_h}"
            famos("render", bundle, "--out", args.out / f"{crop}_{scale:g}x_centre.png", "--scale", scale,
                  "--region", region, "--chunk", 512, capture=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
