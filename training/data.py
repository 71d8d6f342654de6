"""Training batches: random P x P windows of the canvas and real patches of the style images.

Every generator input comes from the same window functions the renderer uses
(famos.canvas.content_window / window_noise, origins on the alignment grid), so what G learns on
windows is exactly what it computes when a canvas is rendered chunk by chunk. All randomness
comes from one torch.Generator that the checkpoint stores, so a resumed run draws the same batches.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from famos.canvas import content_window, to_unit_range, window_noise
from famos.config import CanvasConfig, GeneratorConfig
from famos.generator import fold
from famos.planning import Rect
from famos.training.config import CropMode

_SEED_LIMIT = 2**31


@dataclasses.dataclass(frozen=True)
class Batch:
    content: torch.Tensor  # (B, 3, h, w) in [-1, 1]: content windows I_C
    origin: torch.Tensor  # (B, 2) int64: window origins that psi and the templates see
    noise: Optional[torch.Tensor]  # (B, C, h', w') or None
    style: torch.Tensor  # (B, 3, h, w) in [-1, 1]: real patches for the discriminator

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.content), move(self.origin), move(self.noise), move(self.style))


class WindowSampler:
    """Draws batches of canvas windows (generator inputs) and style patches (discriminator reals)."""

    def __init__(
        self,
        *,
        config: GeneratorConfig,
        canvas: CanvasConfig,
        contents: list[np.ndarray],
        styles: list[np.ndarray],
        patch: int,
        batch: int,
        crop: CropMode,
        mirror_style: bool,
    ):
        # contents and styles: uint8 (H, W, 3). The window is P x P, or the aligned canvas side
        # where the canvas is smaller than P.
        self.config = config
        self.canvas = canvas
        self.contents = [to_unit_range(c) for c in contents]
        self.styles = [to_unit_range(s) for s in styles]
        self.aligned = canvas.aligned(config.alignment)
        self.window = (min(patch, self.aligned[0]), min(patch, self.aligned[1]))
        self.batch = batch
        self.crop = crop
        self.mirror_style = mirror_style

    def sample(self, rng: torch.Generator) -> Batch:
        contents, origins, noises, styles = [], [], [], []
        for _ in range(self.batch):
            origin = self._random_window(rng)
            source, image = origin, self.contents[0]
            if self.crop is CropMode.INDEPENDENT:
                source = self._random_window(rng)
                image = self.contents[_randint(rng, len(self.contents))]
            contents.append(
                content_window(image, canvas_height=self.canvas.height, canvas_width=self.canvas.width, window=source)
            )
            origins.append((origin.y, origin.x))
            noises.append(window_noise(self.config, seed=_randint(rng, _SEED_LIMIT), window=origin))
            styles.append(self._style_patch(rng))
        return Batch(
            content=torch.from_numpy(np.stack(contents)),
            origin=torch.tensor(origins, dtype=torch.int64),
            noise=None if noises[0] is None else torch.from_numpy(np.stack(noises)),
            style=torch.from_numpy(np.stack(styles)),
        )

    def _random_window(self, rng: torch.Generator) -> Rect:
        step = self.config.alignment
        height, width = self.window
        y = _randint(rng, (self.aligned[0] - height) // step + 1) * step
        x = _randint(rng, (self.aligned[1] - width) // step + 1) * step
        return Rect(y, x, height, width)

    def _style_patch(self, rng: torch.Generator) -> np.ndarray:
        """A window of a style image at the templates' pixel scale: (3, h, w) float32.

        Sampled like the templates (nearest style pixel of floor(s * position)) so real and copied
        pixels share one scale. The patch stays inside the image when it fits: a wrapped seam of a
        non-periodic photo would teach D that seams are real. Smaller images are mirror-folded.
        """
        style = self.styles[_randint(rng, len(self.styles))]
        rows = self._axis(rng, self.window[0], style.shape[0])
        cols = self._axis(rng, self.window[1], style.shape[1])
        patch = style[rows][:, cols]
        if self.mirror_style:
            if _randint(rng, 2):
                patch = patch[::-1]
            if _randint(rng, 2):
                patch = patch[:, ::-1]
        return np.ascontiguousarray(patch.transpose(2, 0, 1))

    def _axis(self, rng: torch.Generator, length: int, size: int) -> np.ndarray:
        steps = np.floor(np.arange(length) * self.canvas.style_scale).astype(np.int64)
        extent = int(steps[-1]) + 1
        if extent <= size:
            return steps + _randint(rng, size - extent + 1)
        return fold(torch.from_numpy(steps + _randint(rng, 2 * size)), torch.tensor(size), mirror=True).numpy()


def _randint(rng: torch.Generator, high: int) -> int:
    return int(torch.randint(high, (), generator=rng))
