"""`famos evaluate CHECKPOINT`: content error and style distance of a rendered canvas.

    famos evaluate runs/tiny/checkpoint.safetensors                  # against its own training data
    famos evaluate model.safetensors --content new.png --style s.png # against other images
    famos evaluate runs/tiny/checkpoint.safetensors --scale 4         # rendered at 4x its canvas

The canvas (centre region up to --max-side) is rendered with the chunked renderer in eval mode;
content error is blurred grey MSE against the content, style distance the sliced Wasserstein
distance of 7 x 7 patches against the style images (both on [0, 1] pixel values, lower is better).
"""

from __future__ import annotations

import argparse
import json
import pathlib

from famos.cli_parser import Parser
from famos.errors import UserError
from famos.units import add_size_arguments, output_size


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="famos evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=pathlib.Path, help="a checkpoint (checkpoint.safetensors of a run folder)")
    parser.add_argument("--content", type=pathlib.Path, help="default: the checkpoint's content image")
    parser.add_argument("--style", type=pathlib.Path, nargs="+", help="default: the checkpoint's style images")
    parser.add_argument("--max-side", type=int, default=512, help="evaluate the centre region at most this square")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the render")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_size_arguments(parser)
    parser.add_argument("--dpi", type=float, help="with --print-size")
    args = parser.parse_args(argv)
    if args.max_side < 8:
        raise UserError(f"--max-side {args.max_side} must be at least 8 (patches are 7 x 7)")

    from famos.canvas import load_rgb
    from famos.checkpoint import load_generator
    from famos.training.metrics import check_style_size, evaluate

    model, header, tensors = load_generator(args.checkpoint)
    content = load_rgb(args.content) if args.content else _tensor_image(tensors, "content_image", args.checkpoint)
    if args.style:
        styles = [load_rgb(p) for p in args.style]
        for path, style in zip(args.style, styles):  # as `famos train` checks them
            check_style_size(path, style.shape[:2], style_scale=model.canvas.style_scale)
    else:
        styles = [tensors[k].numpy() for k in sorted((k for k in tensors if k.startswith("data.style.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
        if not styles:
            raise UserError(f"{args.checkpoint}: holds no style images; pass --style")
    canvas = model.canvas
    size = output_size(canvas=(canvas.height, canvas.width), size=args.size, scale=args.scale,
                       print_size=args.print_size, dpi=args.dpi)
    if size is not None and min(size) < 7:
        raise UserError(f"output {size[1]}x{size[0]} px: needs at least 7 px a side (patches are 7 x 7)")
    quality = evaluate(model, content=content, styles=styles, max_side=args.max_side, seed=args.seed, size=size)
    height, width = size or (canvas.height, canvas.width)
    result = {"step": header.get("step"), "canvas": f"{width}x{height}",
              "content_error": quality.content_error, "style_distance": quality.style_distance}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"step {result['step']}, canvas {result['canvas']}: content error {quality.content_error:.5f}, style distance {quality.style_distance:.5f}")
    return 0


def _tensor_image(tensors, name: str, path: pathlib.Path):
    if name not in tensors:
        raise UserError(f"{path}: holds no {name}; pass --content")
    return tensors[name].numpy()
