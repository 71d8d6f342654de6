"""Write the quick start's colour styles from the bundled greyscale CC0 textures: terracotta
bricks (`style/brick_terracotta.png`) and slate-and-cream gravel (`style/gravel_slate.png`).

    python examples/colour_styles.py          # rewrites both files, byte for byte the same

Each is a duotone: the texture's grey level mapped linearly between a dark and a light colour.
The bricks are kept dark and the gravel light, so that the content loss (on blurred grey) can lay
the cat's dark stripes in brick and its light fur in gravel and still keep tones within each.
CC0 allows the derivative; the result is CC0 too (LICENSES.md).
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

STYLE = pathlib.Path(__file__).resolve().parent / "style"
DUOTONES = {  # output: (source, dark RGB, light RGB)
    "brick_terracotta.png": ("brick.png", (30, 8, 4), (200, 92, 52)),
    "gravel_slate.png": ("gravel.png", (70, 84, 104), (255, 246, 214)),
}


def duotone(source: pathlib.Path, dark: tuple[int, int, int], light: tuple[int, int, int]) -> Image.Image:
    grey = np.asarray(Image.open(source).convert("L"), np.float32)[..., None] / 255.0
    low, high = np.array(dark, np.float32), np.array(light, np.float32)
    return Image.fromarray(np.clip(np.rint(low + grey * (high - low)), 0, 255).astype(np.uint8))


def main() -> int:
    for name, (source, dark, light) in DUOTONES.items():
        duotone(STYLE / source, dark, light).save(STYLE / name, optimize=True)
        print(STYLE / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
