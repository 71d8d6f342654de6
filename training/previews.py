"""What the artist keeps while a model learns: patch grids, canvas previews, the loss and quality logs.

All images are PNGs written next to the checkpoints (RUN_DIR/previews/); the charts of the logs
(losses.png, quality.png) are drawn by training/plots.py.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
import torch

from famos.canvas import to_uint8
from famos.config import BlendMode
from famos.generator import FamosGenerator
from famos.planning import Rect
from famos.training.metrics import Quality, region_strips, render_region
from famos.training.plots import font


def template_palette(n_templates: int) -> torch.Tensor:
    """(N, 3) distinct colours in [-1, 1]: golden-angle hues, so neighbouring templates differ."""
    hues = (np.arange(n_templates) * 0.618033988749895) % 1.0
    channels = [np.clip(np.abs((hues * 6 + shift) % 6 - 3) - 1, 0, 1) for shift in (0, 4, 2)]
    return torch.from_numpy(np.stack(channels, axis=1).astype(np.float32) * 2 - 1)


def grid_rows(*, n_templates: int, blend: BlendMode) -> list[tuple[str, str]]:
    """(name, what it shows) of each row of the patch grid, top to bottom, true for this model."""
    no_templates = n_templates == 0
    output = {
        BlendMode.BLEND: "I = alpha I_G + (1 - alpha) I_M",
        BlendMode.COPY: "I = I_M (copy mode)",
        BlendMode.PAINT: "I = I_G (paint mode)",
    }[blend]
    alpha = {
        BlendMode.BLEND: "weight of I_G: white 1, black 0",
        BlendMode.COPY: "unused in copy mode",
        BlendMode.PAINT: "unused in paint mode",
    }[blend]
    return [
        ("I_C content", "the canvas window's content"),
        ("I_M copied", "none: no templates" if no_templates else "mosaic of template pixels"),
        ("I_G painted", "painted by the U-Net"),
        ("I generated", f"{output}: what D judges"),
        ("real style patch", "what D learns as real (unpaired)"),
        ("alpha", alpha),
        ("A template choice", "none: no templates" if no_templates else f"a colour for each of {n_templates}"),
    ]


def patch_grid(
    *, content: torch.Tensor, copied: torch.Tensor, painted: torch.Tensor, image: torch.Tensor,
    style: torch.Tensor, alpha: torch.Tensor, weights: torch.Tensor, blend: BlendMode = BlendMode.BLEND,
    title: str = "",
) -> np.ndarray:
    """uint8 grid: one column per sample, one row per ``grid_rows`` (I_C, I_M, I_G, I, a real style
    patch, alpha, A colourized by template), each row named in a caption strip on its left, and
    ``title`` above."""
    from PIL import Image, ImageDraw

    n = weights.shape[1]
    if n:
        mix = torch.einsum("bnhw,nc->bchw", weights.float(), template_palette(n).to(weights.device))
    else:
        mix = torch.zeros_like(image)
    rows = [content, copied, painted, image, style, (alpha * 2 - 1).expand_as(image), mix]
    gap = 2
    tiles = [[to_uint8(t[i].float().cpu().numpy()).transpose(1, 2, 0) for i in range(t.shape[0])] for t in rows]
    height, width = tiles[0][0].shape[:2]
    columns = len(tiles[0])
    # grey between the tiles: a white tile (alpha = 1) still shows its edges
    out = np.full((len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 200, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            y, x = gap + r * (height + gap), gap + c * (width + gap)
            out[y : y + height, x : x + width] = tile
    labels = grid_rows(n_templates=n, blend=blend)
    name_font, note_font = font(12), font(11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    strip = 12 + int(max(max(measure.textlength(a, font=name_font), measure.textlength(b, font=note_font))
                         for a, b in labels))
    header = _CAPTION + 6 if title else 0
    sheet = Image.new("RGB", (strip + out.shape[1], header + out.shape[0]), "white")
    sheet.paste(Image.fromarray(out), (strip, header))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 3), title, fill="black", font=name_font)
    for r, (name, note) in enumerate(labels):
        y = header + gap + r * (height + gap) + max(0, (height - 28) // 2)
        draw.text((4, y), name, fill="black", font=name_font)
        draw.text((4, y + 15), note, fill=(90, 90, 90), font=note_font)
    return np.asarray(sheet)


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
        rows = read_log(path) if resume_step > 0 else []
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
    except ImportError:  # optional: the CSV and the PNG chart are always written
        return None
    return SummaryWriter(str(folder))


def read_log(path: pathlib.Path) -> list[dict[str, float]]:
    """The rows of a log CSV (losses.csv, quality.csv): an int step and float columns."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


class QualityLog:
    """quality.csv: content error and style distance before training (step 0), at each preview
    and at the end. A step measured again replaces its row; on resume, rows past the checkpoint's
    step are dropped, as LossLog does."""

    FIELDS = ("step", "content_error", "style_distance")

    def __init__(self, path: pathlib.Path, *, resume_step: int):
        self.path = path
        self.rows = [r for r in read_log(path) if r["step"] <= resume_step] if resume_step > 0 else []
        self._write()

    def append(self, step: int, quality: Quality) -> str | None:
        """Record ``quality`` at ``step``; the divergence warning that this row starts, if any."""
        self.rows = [r for r in self.rows if r["step"] < step]
        self.rows.append({"step": step, "content_error": quality.content_error, "style_distance": quality.style_distance})
        self._write()
        return divergence_warning(self.rows)

    def at(self, step: int) -> Quality | None:
        """The quality measured at ``step`` if it is the last row (the final preview's weights)."""
        if self.rows and self.rows[-1]["step"] == step:
            return Quality(content_error=self.rows[-1]["content_error"], style_distance=self.rows[-1]["style_distance"])
        return None

    def _write(self) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.FIELDS)
            writer.writeheader()
            writer.writerows({k: _fmt(v) for k, v in r.items()} for r in self.rows)


# Rises in a row before the warning. The style distance is measured with fixed seeds, so a rise is
# the model's doing, but a GAN wobbles: one or two rises are common in a healthy run, three rarely.
DIVERGENCE_RISES = 3


def divergence_warning(rows: list[dict[str, float]], *, rises: int = DIVERGENCE_RISES) -> str | None:
    """The warning when the style distance of the last row completes ``rises`` rises in a row;
    None otherwise. Said once per streak: a fourth rise says nothing, a fall (or an equal value)
    ends the streak and ``rises`` new rises say it again."""
    values = [r["style_distance"] for r in rows]
    streak = 0
    while streak < len(values) - 1 and values[-1 - streak] > values[-2 - streak]:
        streak += 1
    if streak != rises:
        return None
    start, end = rows[-1 - rises], rows[-1]
    return (f"style distance rose for {rises} previews ({start['style_distance']:.3g} -> {end['style_distance']:.3g} "
            f"at step {end['step']}); the run may be diverging: try a lower --lr, or a snapshot in checkpoints/ "
            f"from step {start['step']} or earlier")
