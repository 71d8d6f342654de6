"""What the artist keeps while a model learns: patch grids, canvas previews, the loss log and plot.

All images are PNGs written next to the checkpoints (RUN_DIR/previews/, RUN_DIR/losses.png); the
plot is drawn with Pillow so training needs no plotting library.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
from collections.abc import Iterator

import numpy as np
import torch

from famos.canvas import to_uint8
from famos.generator import FamosGenerator
from famos.planning import Rect
from training.metrics import region_strips, render_region

GRID_ROWS = ("I_C", "I_M", "I_G", "I", "alpha", "A")


def template_palette(n_templates: int) -> torch.Tensor:
    """(N, 3) distinct colours in [-1, 1]: golden-angle hues, so neighbouring templates differ."""
    hues = (np.arange(n_templates) * 0.618033988749895) % 1.0
    channels = [np.clip(np.abs((hues * 6 + shift) % 6 - 3) - 1, 0, 1) for shift in (0, 4, 2)]
    return torch.from_numpy(np.stack(channels, axis=1).astype(np.float32) * 2 - 1)


def patch_grid(
    *, content: torch.Tensor, copied: torch.Tensor, painted: torch.Tensor, image: torch.Tensor,
    alpha: torch.Tensor, weights: torch.Tensor,
) -> np.ndarray:
    """uint8 grid: one column per sample, rows I_C, I_M, I_G, I, alpha, A colourized by template."""
    n = weights.shape[1]
    if n:
        mix = torch.einsum("bnhw,nc->bchw", weights.float(), template_palette(n).to(weights.device))
    else:
        mix = torch.zeros_like(image)
    rows = [content, copied, painted, image, (alpha * 2 - 1).expand_as(image), mix]
    gap = 2
    tiles = [[to_uint8(t[i].float().cpu().numpy()).transpose(1, 2, 0) for i in range(t.shape[0])] for t in rows]
    height, width = tiles[0][0].shape[:2]
    columns = len(tiles[0])
    out = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            out[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = tile
    return out


# A preview renders at most this many pixels whatever the canvas: a gigapixel canvas would take
# hours per preview on a CPU, and the run is there to train.
PREVIEW_PIXELS = 4_000_000
CROP_SIDE = 512  # the 100 % crops of a large canvas
_CAPTION = 14  # caption strip height in pixels


def canvas_preview(
    model: FamosGenerator, content: np.ndarray, *, max_side: int, seed: int = 0, device: str = "cpu",
    chunk: int = 512, max_pixels: int = PREVIEW_PIXELS,
) -> np.ndarray:
    """What a person needs to judge the canvas, from at most ``max_pixels`` rendered pixels.

    A canvas within the budget is rendered whole and downscaled to ``max_side``. A larger one gets
    a captioned sheet: the whole composition small (the model rendered onto a canvas of the same
    proportions, ``max_side`` long: templates keep their trained pixel size, so textures look
    larger there than in the print), and three crops of the real canvas at 100 %.
    """
    canvas = model.canvas
    render = dict(seed=seed, device=device, chunk=chunk)
    if canvas.height * canvas.width <= max_pixels:
        return _downscaled(region_strips(model, content, None, **render), canvas, max_side=max_side)
    factor = max_side / max(canvas.height, canvas.width)
    small = dataclasses.replace(
        canvas, height=max(1, round(canvas.height * factor)), width=max(1, round(canvas.width * factor))
    )
    overview = render_region(model, content, None, canvas=small, **render)
    panels = [(overview, f"whole canvas {canvas.width}x{canvas.height}, rendered at {small.width}x{small.height}")]
    side_y, side_x = min(CROP_SIDE, canvas.height), min(CROP_SIDE, canvas.width)
    for fy, fx in ((0.25, 0.25), (0.5, 0.5), (0.75, 0.75)):
        y = min(max(0, round(canvas.height * fy) - side_y // 2), canvas.height - side_y)
        x = min(max(0, round(canvas.width * fx) - side_x // 2), canvas.width - side_x)
        crop = render_region(model, content, Rect(y, x, side_y, side_x), **render)
        panels.append((crop, f"100% at x={x} y={y}"))
    return _contact_sheet(panels[0], panels[1:])


def _downscaled(rendered: Iterator[np.ndarray], canvas, *, max_side: int) -> np.ndarray:
    """The whole canvas, each strip downscaled as it arrives (never held at full size)."""
    from PIL import Image

    factor = min(1.0, max_side / max(canvas.height, canvas.width))
    width = max(1, round(canvas.width * factor))
    strips, top = [], 0
    for strip in rendered:
        bottom = top + strip.shape[0]
        rows = round(bottom * factor) - round(top * factor)  # cumulative rounding: no drift
        if rows > 0:
            strips.append(np.asarray(Image.fromarray(strip).resize((width, rows), Image.BILINEAR)))
        top = bottom
    return np.concatenate(strips)


def _contact_sheet(top: tuple[np.ndarray, str], row: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """``top`` above a row of panels, each under its caption, on white."""
    from PIL import Image, ImageDraw

    gap = 8
    row_width = sum(p.shape[1] for p, _ in row) + gap * (len(row) - 1)
    row_height = max(p.shape[0] for p, _ in row)
    width = max(top[0].shape[1], row_width)
    height = 2 * _CAPTION + top[0].shape[0] + gap + row_height
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 1), top[1], fill="black")
    sheet.paste(Image.fromarray(top[0]), (0, _CAPTION))
    x, y = 0, _CAPTION + top[0].shape[0] + gap
    for pixels, caption in row:
        draw.text((x + 2, y + 1), caption, fill="black")
        sheet.paste(Image.fromarray(pixels), (x, y + _CAPTION))
        x += pixels.shape[1] + gap
    return np.asarray(sheet)


class LossLog:
    """losses.csv (and TensorBoard when installed). On resume, rows past the checkpoint's step are
    dropped: they belong to steps that are about to be trained again."""

    def __init__(self, path: pathlib.Path, *, resume_step: int, tensorboard_dir: pathlib.Path | None):
        self.path = path
        self.fields: list[str] | None = None
        rows = read_losses(path) if resume_step > 0 else []
        rows = [r for r in rows if r["step"] <= resume_step]
        if rows:
            self.fields = list(rows[0])
            self._write(rows)
        elif path.exists():
            path.unlink()
        self.tensorboard = _summary_writer(tensorboard_dir)

    def append(self, step: int, losses: dict[str, float]) -> None:
        row = {"step": step, **losses}
        if self.fields is None:
            self.fields = list(row)
            self._write([])
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow({k: _fmt(v) for k, v in row.items()})
        if self.tensorboard is not None:
            for name, value in losses.items():
                self.tensorboard.add_scalar(f"loss/{name}", value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _write(self, rows: list[dict[str, float]]) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _summary_writer(folder: pathlib.Path | None):
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: the CSV and the PNG plot are always written
        return None
    return SummaryWriter(str(folder))


def read_losses(path: pathlib.Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_losses(rows: list[dict[str, float]], *, panel: tuple[int, int] = (320, 160)) -> np.ndarray:
    """One small panel per loss (own y-range), step on x: uint8 RGB."""
    from PIL import Image, ImageDraw

    names = [k for k in (rows[0] if rows else {}) if k != "step"]
    columns = 3
    grid_rows = max(1, math.ceil(len(names) / columns))
    pw, ph = panel
    image = Image.new("RGB", (columns * pw, grid_rows * ph), "white")
    draw = ImageDraw.Draw(image)
    steps = [r["step"] for r in rows]
    for i, name in enumerate(names):
        x0, y0 = (i % columns) * pw, (i // columns) * ph
        left, top, right, bottom = x0 + 8, y0 + 18, x0 + pw - 8, y0 + ph - 8
        draw.rectangle((left, top, right, bottom), outline=(200, 200, 200))
        values = [r[name] for r in rows]
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            continue
        lo, hi = min(finite), max(finite)
        draw.text((x0 + 8, y0 + 3), f"{name}  last {values[-1]:.4g}  [{lo:.3g}, {hi:.3g}]", fill="black")
        span_x = max(steps[-1] - steps[0], 1)
        span_y = (hi - lo) or 1.0
        points = [
            (left + (s - steps[0]) / span_x * (right - left), bottom - (v - lo) / span_y * (bottom - top))
            for s, v in zip(steps, values)
            if math.isfinite(v)
        ]
        if len(points) > 1:
            draw.line(points, fill=(31, 119, 180), width=1)
    return np.asarray(image)
