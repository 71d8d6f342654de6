"""`famos demo`: a random-weight generator rendered in chunks over a bundled sample, to PNG.

A smoke test of the whole core (canvas, memory, chunk planner, exact chunked rendering) that
needs no trained model.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="famos demo", description=__doc__)
    parser.add_argument("--content", type=pathlib.Path, default=EXAMPLES / "content" / "chelsea.png")
    parser.add_argument("--style", type=pathlib.Path, nargs="+", default=[EXAMPLES / "style" / "brick.png"])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo.png"))
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from famos.canvas import load_rgb, to_unit_range
    from famos.config import CanvasConfig, GeneratorConfig, NoiseConfig
    from famos.eager import EagerRunner, build_generator
    from famos.rendering import WindowInputs, plan_for, render_strips

    content = load_rgb(args.content)
    config = GeneratorConfig(depth=4, width=16, n_templates=8, noise=NoiseConfig(n_local=4))
    canvas = CanvasConfig(content.shape[0], content.shape[1])
    torch.manual_seed(args.seed)
    model = build_generator(config, canvas, [load_rgb(p) for p in args.style])
    inputs = WindowInputs(config=config, canvas=canvas, content=to_unit_range(content), seed=args.seed)
    plan = plan_for(config, canvas, chunk_size=args.chunk)
    image = np.concatenate(list(render_strips(plan, inputs, EagerRunner(model))))
    Image.fromarray(image).save(args.out)
    print(f"wrote {args.out} ({canvas.width}x{canvas.height}, {len(plan.chunks)} chunks, overhead {plan.overhead:.2f})")
    return 0
