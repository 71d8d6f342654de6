"""Quality of a rendered canvas: content error and style distance.

- content error: MSE between the blurred grey render and the blurred grey content (both on the
  canvas, values in [0, 1]): does the mosaic still show the content at a glance?
- style distance: sliced Wasserstein distance between 7 x 7 patches of the render and of the
  style images (values in [0, 1]): do the local textures look like the style?

Both are measured on a region of the canvas rendered with the chunked renderer, exactly what a
user would get, with the generator in eval mode.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import torch

from famos.canvas import content_window, to_uint8, to_unit_range
from famos.torch_runners import DeviceSettings, EagerRunner
from famos.config import CanvasConfig
from famos.errors import UserError
from famos.generator import FamosGenerator
from famos.planning import Rect
from famos.chunk_loop import WindowInputs, plan_for, render_strips
from famos.training.losses import blur, gaussian_kernel, grey

CONTENT_BLUR_SIGMA = 3.0
STYLE_PATCH = 7  # side of the style distance's patches


@dataclasses.dataclass(frozen=True)
class Quality:
    content_error: float
    style_distance: float


def content_error(image: np.ndarray, content: np.ndarray) -> float:
    """Blurred grey MSE; both uint8 (H, W, 3) of the same size."""
    kernel = gaussian_kernel(CONTENT_BLUR_SIGMA)
    a, b = (grey(blur(_to_tensor(x), kernel)) for x in (image, content))
    return float(((a - b) ** 2).mean())


def sliced_wasserstein(
    image: np.ndarray, references: list[np.ndarray], *, patch: int = STYLE_PATCH, n_patches: int = 4096,
    n_projections: int = 128, seed: int = 0,
) -> float:
    """SWD between random patch x patch windows of ``image`` and of ``references`` (uint8 RGB)."""
    rng = torch.Generator().manual_seed(seed)
    ours = _random_patches(image, patch=patch, count=n_patches, rng=rng)
    share = -(-n_patches // len(references))
    theirs = torch.cat([_random_patches(r, patch=patch, count=share, rng=rng) for r in references])[:n_patches]
    directions = torch.randn(ours.shape[1], n_projections, generator=rng)
    directions /= directions.norm(dim=0, keepdim=True)
    a = torch.sort(ours @ directions, dim=0).values
    b = torch.sort(theirs @ directions, dim=0).values
    return float(((a - b) ** 2).mean(dim=0).sqrt().mean())


def _random_patches(image: np.ndarray, *, patch: int, count: int, rng: torch.Generator) -> torch.Tensor:
    pixels = torch.from_numpy(image.astype(np.float32) / 255.0)  # (H, W, 3)
    height, width = pixels.shape[:2]
    if height < patch or width < patch:
        raise ValueError(f"image {width}x{height} is smaller than the {patch}x{patch} patches")
    ys = torch.randint(height - patch + 1, (count,), generator=rng)
    xs = torch.randint(width - patch + 1, (count,), generator=rng)
    offsets = torch.arange(patch)
    rows = (ys[:, None] + offsets[None, :])[:, :, None]  # (count, patch, 1)
    cols = (xs[:, None] + offsets[None, :])[:, None, :]  # (count, 1, patch)
    return pixels[rows, cols].reshape(count, -1)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def centre_region(height: int, width: int, *, max_side: int) -> Rect:
    h, w = min(height, max_side), min(width, max_side)
    return Rect((height - h) // 2, (width - w) // 2, h, w)


def region_strips(
    model: FamosGenerator, content: np.ndarray, region: Rect | None, *, seed: int = 0, device: str = "cpu",
    chunk: int = 512, canvas: CanvasConfig | None = None,
) -> Iterator[np.ndarray]:
    """uint8 row strips of ``region`` (None: all) of ``canvas`` (default: the model's), chunk by
    chunk in eval mode: how evaluation and training previews render."""
    canvas = canvas or model.canvas
    inputs = WindowInputs(config=model.config, canvas=canvas, content=to_unit_range(content), seed=seed)
    plan = plan_for(model.config, canvas, chunk_size=chunk, region=region)
    return render_strips(plan, inputs, EagerRunner(model, settings=DeviceSettings(device=str(device))))


def render_region(
    model: FamosGenerator, content: np.ndarray, region: Rect | None, *, seed: int = 0, device: str = "cpu",
    chunk: int = 512, canvas: CanvasConfig | None = None,
) -> np.ndarray:
    """uint8 (h, w, 3) of ``region`` (None: all) of ``canvas`` (default: the model's)."""
    return np.concatenate(list(region_strips(model, content, region, seed=seed, device=device, chunk=chunk, canvas=canvas)))


def style_at_canvas_scale(style: np.ndarray, style_scale: float) -> np.ndarray:
    """A style image resampled so one of its pixels is one canvas pixel, as the templates tile it."""
    if style_scale == 1.0:
        return style
    from PIL import Image

    height, width = style.shape[:2]
    size = (max(1, round(width / style_scale)), max(1, round(height / style_scale)))
    return np.asarray(Image.fromarray(style).resize(size, Image.NEAREST))


# The style images at canvas scale (style_at_canvas_scale) are the style distance's references: an
# image scaled to fewer pixels than its patches has no patch, and a tiny --style-scale of a photo
# would allocate gigapixels for them.
MAX_SCALED_STYLE_PIXELS = 2**26


def check_style_size(path: pathlib.Path, size: tuple[int, int], *, style_scale: float) -> None:
    """A style image of ``size`` (height, width) at ``style_scale``: enough for the style distance's
    patches, and not so many canvas pixels that scaling it would allocate gigapixels. Both `famos
    train` and `famos evaluate --style` check it before anything is scaled."""
    height, width = size
    scaled = (round(height / style_scale), round(width / style_scale))
    at_scale = f"at --style-scale {style_scale:g}"
    if min(scaled) < STYLE_PATCH:
        raise UserError(f"{path}: {width}x{height} px {at_scale} covers {scaled[1]}x{scaled[0]} canvas px; "
                        f"style images must cover at least {STYLE_PATCH}x{STYLE_PATCH}")
    if scaled[0] * scaled[1] > MAX_SCALED_STYLE_PIXELS:
        raise UserError(f"{path}: {width}x{height} px {at_scale} covers {scaled[1]}x{scaled[0]} canvas px, over the "
                        f"limit of {MAX_SCALED_STYLE_PIXELS / 1e6:,.0f} MP; raise --style-scale or downscale the image")


def evaluate(
    model: FamosGenerator, *, content: np.ndarray, styles: list[np.ndarray], max_side: int = 512,
    seed: int = 0, device: str = "cpu", size: tuple[int, int] | None = None,
) -> Quality:
    """Quality of the centre region (at most max_side square) of the model's canvas, or of the
    model rendered at ``size`` (height, width): the same bounded cost at any canvas size."""
    canvas = model.canvas if size is None else dataclasses.replace(model.canvas, height=size[0], width=size[1])
    region = centre_region(canvas.height, canvas.width, max_side=max_side)
    image = render_region(model, content, region, seed=seed, device=device, canvas=canvas)
    target = content_window(
        to_unit_range(content), canvas_height=canvas.height, canvas_width=canvas.width, window=region
    )
    target8 = to_uint8(target.transpose(1, 2, 0))
    references = [style_at_canvas_scale(s, canvas.style_scale) for s in styles]
    return Quality(
        content_error=content_error(image, target8),
        style_distance=sliced_wasserstein(image, references),
    )
