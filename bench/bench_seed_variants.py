"""The quality study of the seed's options: each variant trained at equal steps on the same images,
scored, rendered, and put on a picture sheet with 100 % crops.

    python bench/bench_seed_variants.py --out study/ [--sheet examples/readme/seed_variants.jpg]
    python bench/bench_seed_variants.py --out smoke/ --preset tiny --steps 2 --datasets samples   # a smoke run

Datasets: `samples` (the quick start's: brick and gravel for chelsea) and `colour` (the bundled
CC0 coffee photograph for chelsea: porcelain, coffee and wood grain in colour; the Hubble Deep
Field, mostly black, gave a magenta cat that kept the content and copied nothing, style distance
0.31 against 0.06). Variants: the quick
start's preset (`--preset mosaic`, mirror fold), the same with the wrap fold, `--multi-scale`,
`--refine`, fAdvM (`--copy-adversarial-weight 1`), and multi-scale with refine. Every run trains
the same number of steps from the same seed. Content error and style distance come from `famos
evaluate` (the centre 512 px, lower is better; the style distance is against the run's own style
images). Prints one markdown table per dataset, the seconds each run took to train, and writes
the sheet: per variant its whole render and a 300 px crop of it at 100 %.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

from bench_peak import cpu_model
from common import famos

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
DATASETS = {
    "samples": [EXAMPLES / "style" / "brick.png", EXAMPLES / "style" / "gravel.png"],
    "colour": [EXAMPLES / "style" / "coffee.png"],
}
VARIANTS: dict[str, list[str]] = {
    "mirror (preset)": [],
    "wrap fold": ["--fold", "wrap"],
    "multi-scale": ["--multi-scale"],
    "refine": ["--refine"],
    "fAdvM 1": ["--copy-adversarial-weight", "1"],
    "multi-scale + refine": ["--multi-scale", "--refine"],
}
# The preset as the study measured it, before its defaults were chosen from the study (the mosaic
# preset now turns multi-scale, refine and the alpha norm on): every variant starts from these.
STUDY_BASE = ["--no-multi-scale", "--no-refine", "--alpha-norm", "0"]
CROP = 300  # px of the render shown at 100 %, under its whole render at the same width


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def run_variant(out: pathlib.Path, styles: list[pathlib.Path], extra: list[str], steps: int | None, preset: str) -> dict:
    run, bundle, image = out / "run", out / "bundle", out / "render.tif"
    seconds = None
    if not (run / "checkpoint.safetensors").exists():
        started = time.perf_counter()
        famos("train", "--preset", preset, "--style", *styles, *STUDY_BASE, *extra, *(["--steps", str(steps)] if steps else []),
              "--out", run, "--quiet")
        seconds = time.perf_counter() - started
    if not bundle.exists():
        # the last checkpoint, the one scored: equal steps for every variant (export's default, the
        # best preview, would differ from run to run)
        famos("export", run / "checkpoint.safetensors", "--out", bundle, capture=True)
    if not image.exists():
        famos("render", bundle, "--out", image, "--quiet", capture=True)
    quality = json.loads(famos("evaluate", run / "checkpoint.safetensors", "--json", capture=True))
    return {"seconds": seconds, "image": image, **quality}


def sheet(rows: list[tuple[str, list[tuple[str, dict]]]], path: pathlib.Path, *, width: int = CROP) -> None:
    """One row per dataset: per variant the whole render (scaled to ``width``) over a crop of
    ``width`` px at 100 %."""
    import tifffile
    from PIL import Image, ImageDraw

    caption, gap = 30, 8
    cells = []
    for _, variants in rows:
        line = []
        for label, result in variants:
            render = Image.fromarray(tifffile.imread(result["image"]))
            whole = render.resize((width, round(render.height * width / render.width)), Image.LANCZOS)
            # the crop: the cat's face region of the quick start's canvas (a third across, a third down)
            x, y = render.width // 3, render.height // 4
            crop = render.crop((x, y, x + width, y + width))
            line.append((label, result, whole, crop))
        cells.append(line)
    columns = max(len(line) for line in cells)
    row_height = caption + max(w.height for line in cells for _, _, w, _ in line) + gap + width + gap
    page = Image.new("RGB", (columns * (width + gap) - gap, len(cells) * row_height), "white")
    draw = ImageDraw.Draw(page)
    for r, ((dataset, _), line) in enumerate(zip(rows, cells)):
        top = r * row_height
        for c, (label, result, whole, crop) in enumerate(line):
            left = c * (width + gap)
            draw.text((left + 2, top + 2), f"{dataset}: {label}", fill="black")
            draw.text((left + 2, top + 15), f"content {result['content_error']:.4f}, style {result['style_distance']:.4f}",
                      fill="black")
            page.paste(whole, (left, top + caption))
            page.paste(crop, (left, top + caption + whole.height + gap))
    path.parent.mkdir(parents=True, exist_ok=True)
    page.save(path, quality=85)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="runs, bundles and renders (reused when present)")
    parser.add_argument("--sheet", type=pathlib.Path, help="write the picture sheet here (JPEG)")
    parser.add_argument("--steps", type=int, help="training steps of every run (default: the preset's)")
    parser.add_argument("--preset", default="mosaic", help="the preset every variant starts from (tiny: a smoke run)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    print(f"# seed variants: {cpu_model()}, {os.cpu_count()} cores, {platform.node()}; famos train --preset {args.preset} "
          f"{'--steps ' + str(args.steps) if args.steps else '(its steps)'} + the variant's options\n")
    rows = []
    for dataset in args.datasets:
        print(f"## {dataset}: {', '.join(p.name for p in DATASETS[dataset])} for chelsea\n")
        print("| variant | train (s) | content error | style distance |")
        print("|---|---|---|---|")
        results = []
        for label in args.variants:
            result = run_variant(args.out / dataset / slug(label), DATASETS[dataset], VARIANTS[label], args.steps,
                                 args.preset)
            seconds = f"{result['seconds']:.0f}" if result["seconds"] is not None else "(kept)"
            print(f"| {label} | {seconds} | {result['content_error']:.4f} | {result['style_distance']:.4f} |", flush=True)
            results.append((label, result))
        print()
        rows.append((dataset, results))
    if args.sheet:
        sheet(rows, args.sheet)
        print(f"sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
