"""Eager PyTorch helpers: build a generator from style images, run it on numpy windows."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from famos.canvas import template_offsets, to_unit_range
from famos.config import CanvasConfig, GeneratorConfig
from famos.generator import FamosGenerator


def build_generator(config: GeneratorConfig, canvas: CanvasConfig, styles: list[np.ndarray]) -> FamosGenerator:
    """A generator (random weights) whose memory tiles ``styles`` (uint8 RGB images) on ``canvas``."""
    if config.n_templates and not styles:
        raise ValueError("a model with memory templates needs at least one style image")
    offsets = template_offsets(canvas, [s.shape[:2] for s in styles], config.n_templates)
    return FamosGenerator(config, canvas, [to_unit_range(s) for s in styles], offsets)


class EagerRunner:
    """Runs one window through an eval-mode generator: the reference backend."""

    def __init__(self, model: FamosGenerator, *, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, content: np.ndarray, origin: np.ndarray, noise: Optional[np.ndarray]) -> np.ndarray:
        to = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        image = self.model(to(content), to(origin), None if noise is None else to(noise))[0]
        return image.float().cpu().numpy()
