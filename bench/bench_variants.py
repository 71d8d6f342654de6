"""The paper's three variants on the same samples: parametric (U-Net only), copy (memory only) and
blended (full), each trained with the quick start's `--preset mosaic`, rendered by the project,
scored, and put side by side for the README.

    python bench/bench_variants.py --out variants/ [--picture examples/readme/variants.jpg]

Prints a table of content error and style distance (`famos evaluate`, centre 512 px) and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

from common import famos

VARIANTS = (("parametric", "parametric (U-Net paints)"), ("copy", "copy (memory only)"), ("full", "blended (full FAMOS)"))



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--picture", type=pathlib.Path, help="write the side-by-side JPEG here")
    parser.add_argument("--width", type=int, default=600, help="width of each panel in the picture")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# variants: {platform.node()}, {os.cpu_count()} cores, famos train --preset mosaic --mode M\n")
    print("| variant | train + export + render (s) | content error | style distance |")
    print("|---|---|---|---|")
    panels = []
    for mode, label in VARIANTS:
        run, bundle, preview = args.out / f"run-{mode}", args.out / f"bundle-{mode}", args.out / f"{mode}.png"
        start = time.perf_counter()
        if not (run / "checkpoint.safetensors").exists():
            famos("train", "--preset", "mosaic", "--mode", mode, "--out", run, "--quiet")
        if not bundle.exists():
            famos("export", run, "--out", bundle, capture=True)
        famos("render", bundle, "--out", args.out / f"{mode}.tif", "--preview", preview, "--quiet", capture=True)
        seconds = time.perf_counter() - start
        quality = json.loads(famos("evaluate", run / "checkpoint.safetensors", "--json", capture=True))
        print(f"| {label} | {seconds:.0f} | {quality['content_error']:.4f} | {quality['style_distance']:.4f} |", flush=True)
        panels.append((preview, f"{label}: content {quality['content_error']:.4f}, style {quality['style_distance']:.4f}"))
    if args.picture:
        side_by_side(panels, args.picture, width=args.width)
    return 0


def side_by_side(panels: list[tuple[pathlib.Path, str]], path: pathlib.Path, *, width: int) -> None:
    from PIL import Image, ImageDraw

    images = []
    for preview, _ in panels:
        image = Image.open(preview).convert("RGB")
        images.append(image.resize((width, round(image.height * width / image.width)), Image.LANCZOS))
    caption, gap = 16, 8
    sheet = Image.new("RGB", (len(images) * (width + gap) - gap, caption + max(i.height for i in images)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, (_, text)) in enumerate(zip(images, panels)):
        draw.text((k * (width + gap) + 2, 2), text, fill="black")
        sheet.paste(image, (k * (width + gap), caption))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=82)


if __name__ == "__main__":
    raise SystemExit(main())
