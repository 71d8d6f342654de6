"""The window contract between the chunk loop and every runner (ONNX, TorchScript, eager).

A runner computes one input window of the canvas: content float32 (B, 3, h, w) in [-1, 1], origin
int64 (B, 2) (the window's global y, x), noise float32 or None, and optionally canvas int64 (B, 2)
(the aligned canvas being rendered; None: the model's trained canvas) -> image float32 (B, 3, h, w).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np

WindowRunner = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]], np.ndarray]


def check_window(content: np.ndarray, origin: np.ndarray, alignment: int) -> None:
    """Refuse a window the U-Net would compute differently from a whole-canvas pass: its origin and
    size must be multiples of 2^depth, or the pooling grid shifts and chunks stop matching."""
    height, width = content.shape[-2:]
    if height % alignment or width % alignment or np.any(np.asarray(origin) % alignment):
        raise ValueError(
            f"window at origin {np.asarray(origin).tolist()} of {height}x{width} px is not aligned to "
            f"{alignment} px (origin and size must be multiples of the model's alignment)"
        )

