"""Parity of a backend against the eager reference on windows of the model's canvas.

Windows are aligned, of assorted sizes, and include the four canvas corners: at a border the
graph's zero padding is the canvas edge, the case an exported graph is most likely to get wrong.
Torch-free: it compares any two ``WindowRunner``s.
"""

from __future__ import annotations

import numpy as np

from famos.config import ModelSpec
from famos.planning import Rect
from famos.chunk_loop import WindowInputs
from famos.window import WindowRunner

ONNX_TOLERANCE = 1e-4  # max |diff| on outputs in [-1, 1]: onnxruntime CPU vs eager PyTorch
TORCHSCRIPT_TOLERANCE = 1e-5
FP16_TOLERANCE = 2e-2  # the fp16 U-Net vs float32: about 2.5 levels of 8-bit output


def parity_windows(spec: ModelSpec, *, count: int, seed: int = 0, max_cells: int = 8) -> list[Rect]:
    """The four corner windows, then ``count`` random aligned windows, each at most ``max_cells``
    alignment cells on a side."""
    alignment = spec.generator.alignment
    height, width = spec.canvas.aligned(alignment)
    cells_y, cells_x = height // alignment, width // alignment
    rng = np.random.default_rng(seed)

    def side(cells: int) -> int:
        return int(rng.integers(1, min(cells, max_cells) + 1))

    windows = []
    for corner in range(4 + count):
        h, w = side(cells_y), side(cells_x)
        if corner < 4:
            y = 0 if corner % 2 == 0 else cells_y - h
            x = 0 if corner < 2 else cells_x - w
        else:
            y, x = int(rng.integers(0, cells_y - h + 1)), int(rng.integers(0, cells_x - w + 1))
        windows.append(Rect(y * alignment, x * alignment, h * alignment, w * alignment))
    return windows


def max_differences(
    reference: WindowRunner, candidates: dict[str, WindowRunner], *, inputs: WindowInputs, windows: list[Rect]
) -> dict[str, float]:
    """Largest |candidate - reference| over all windows and pixels, per candidate."""
    worst = dict.fromkeys(candidates, 0.0)
    for window in windows:
        args = inputs(window)
        expected = reference(*args)
        for name, run in candidates.items():
            worst[name] = max(worst[name], float(np.abs(run(*args) - expected).max()))
    return worst
