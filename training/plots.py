"""The run's charts, drawn with Pillow (training needs no plotting library): losses.png and
quality.png, with axes, tick labels, axis titles and a legend a person can read without the CSV.

    losses.png   one panel per loss term (each its own y-range: d is near 1, a weighted
                 regularizer may be near 0.001): the value at each step faint, its running mean bold
    quality.png  content error and style distance at each measurement (before training, at each
                 preview, at the end), side by side; the best step (best.safetensors) marked by a
                 vertical line and ringed points in BEST_COLOUR

The arithmetic (``nice_ticks``, ``tick_labels``, ``running_mean``) is pure and unit-tested; the
drawing only consumes it. Imports numpy and Pillow only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

Colour = tuple[int, int, int]

# matplotlib's tab10: distinct on white and for the common colour blindnesses
PALETTE: tuple[Colour, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
BEST_COLOUR: Colour = PALETTE[2]  # the best step in quality.png: neither series' colour
RAW_TINT = 0.3  # the raw values at 30 % of their colour over white: visible, behind the mean
PANEL = (480, 240)  # one panel in pixels, axes and titles included
SMOOTHING_FRACTION = 20  # the running mean spans 1/20 of the logged steps

# What each column of losses.csv is (training/trainer.py names them); a new term shows its name only.
LOSS_TERMS = {
    "d": "discriminator loss",
    "gp": "gradient penalty of D (WGAN-GP)",
    "g": "generator loss: the sum of the terms below",
    "g_adv": "adversarial term of G",
    "content": "content term of G, weighted",
    "content_copy": "content term of I_M, weighted",
    "entropy": "mix entropy term, weighted",
    "mix_tv": "total variation of the mix, weighted",
    "alpha_norm": "mean alpha term, weighted",
    "alpha_tv": "total variation of alpha, weighted",
    "diversity": "template diversity term, weighted",
}


# --- arithmetic ------------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, *, most: int = 7, integer: bool = False) -> list[float]:
    """Evenly spaced round ticks (1, 2, 2.5 or 5 times a power of ten; whole numbers if
    ``integer``), the finest spacing that needs at most ``most`` of them, from one at or below
    ``lo`` to one at or above ``hi``: the axis runs from the first tick to the last, so the ticks
    cover the data. An empty range is widened around its value."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"ticks need a finite range, not [{lo}, {hi}]")
    if most < 2:
        raise ValueError(f"an axis needs at least 2 ticks, not {most}")
    lo, hi = min(lo, hi), max(lo, hi)
    # one value, float noise around it or a subnormal sliver: widened (and steps stay normal floats)
    if hi - lo <= max(abs(lo), abs(hi)) * 1e-6 or hi - lo < 1e-200:
        pad = 1.0 if integer or abs(lo) < 1e-200 else abs(lo) * 0.05
        lo, hi = lo - pad, hi + pad
    exponent = math.floor(math.log10(hi - lo)) - 2
    while True:
        for m in (1, 2, 2.5, 5):
            step = m * 10.0**exponent
            if integer and (step < 1 or step != round(step)):
                continue
            # the tolerance keeps a value that sits on a tick (0.3 / 0.1 = 2.9999999999999996) on it
            first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
            first -= _clean(first * step, step) > lo  # ...and these keep the data between the ends
            last += _clean(last * step, step) < hi or last == first
            if last - first + 1 <= most:
                return [_clean((first + i) * step, step) for i in range(last - first + 1)]
        exponent += 1


def _clean(value: float, step: float) -> float:
    """``value`` without the float noise of ``k * step`` (0.30000000000000004 -> 0.3)."""
    return round(value, max(0, 3 - math.floor(math.log10(step))))


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """The ticks as text, all with the same number of decimals: the fewest that write every tick
    exactly (0.025 apart gets three: 0.075 must not read 0.07)."""
    if len(ticks) < 2:
        return [f"{t:g}" for t in ticks]
    step = abs(ticks[1] - ticks[0])
    if max(abs(t) for t in ticks) >= 1e7 or step < 1e-4:
        digits = 1
        while digits < 15 and any(abs(float(f"{t:.{digits}g}") - t) > step * 1e-6 for t in ticks):
            digits += 1
        return [f"{t:.{digits}g}" for t in ticks]
    decimals = 0
    while decimals < 6 and any(abs(round(t, decimals) - t) > step * 1e-6 for t in ticks):
        decimals += 1
    return [f"{t:.{decimals}f}" for t in ticks]


def running_mean(values: Sequence[float], *, window: int) -> list[float]:
    """Trailing mean of the last ``window`` values at each point (fewer at the start), skipping
    values that are not finite (NaN where a window holds none)."""
    if window < 1:
        raise ValueError(f"window {window} must be positive")
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(1, len(x) + 1)
    starts = np.maximum(ends - window, 0)
    n = counts[ends] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums[ends] - sums[starts]) / n
    return [float(m) if c else math.nan for m, c in zip(means, n)]


def smoothing_window(n_values: int) -> int:
    return max(1, n_values // SMOOTHING_FRACTION)


# --- the two charts --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Line:
    steps: tuple[float, ...]
    values: tuple[float, ...]
    colour: Colour
    width: int = 1
    markers: bool = False


@dataclasses.dataclass(frozen=True)
class ChartPanel:
    title: str
    y_title: str
    lines: tuple[Line, ...]
    x_title: str = "training step"
    marked_step: float | None = None  # a vertical line in BEST_COLOUR, its points on the lines ringed


def plot_losses(rows: list[dict[str, float]], *, title: str) -> np.ndarray:
    """losses.csv's rows as uint8 RGB: a panel per loss term, step on x, the loss value on y."""
    names = [k for k in (rows[0] if rows else {}) if k != "step"]
    if not names:
        return _message(f"{title}: no losses logged yet")
    steps = tuple(float(r["step"]) for r in rows)
    window = smoothing_window(len(rows))
    panels = []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        values = tuple(r[name] for r in rows)
        mean = running_mean(values, window=window)
        if window > 1:
            lines = [Line(steps, values, _tint(colour, RAW_TINT)), Line(steps, tuple(mean), colour, width=2)]
        else:  # too few steps to smooth: the values themselves, in full colour
            lines = [Line(steps, values, colour, width=2)]
        caption = f"{name}: {LOSS_TERMS[name]}" if name in LOSS_TERMS else name
        last = next((m for m in reversed(mean) if math.isfinite(m)), math.nan)
        panels.append(ChartPanel(f"{caption}   (now {last:.4g})", "loss value", tuple(lines)))
    grey = PALETTE[7]
    if window > 1:
        legend = [(_tint(grey, RAW_TINT), 1, False, "each step"),
                  (grey, 2, False, f"running mean of the last {window} steps")]
    else:
        legend = [(grey, 2, False, "each step")]
    heading = f"{title}: losses of steps {int(steps[0])}-{int(steps[-1])}"
    return _figure(panels, heading=heading, legend=legend, columns=2)


QUALITY_PANELS = (
    ("content_error", "content error (lower: the content reads better)", "blurred grey MSE, 0-1"),
    ("style_distance", "style distance (lower: textures closer to the style)", "sliced Wasserstein, 0-1"),
)


def plot_quality(rows: list[dict[str, float]], *, title: str, best_step: int | None = None) -> np.ndarray:
    """quality.csv's rows as uint8 RGB: content error and style distance against the step, the
    ``best_step`` (the run's best.safetensors) marked."""
    if not rows:
        return _message(f"{title}: no quality measured yet")
    steps = tuple(float(r["step"]) for r in rows)
    panels = [
        ChartPanel(caption, y_title, (Line(steps, tuple(r[name] for r in rows), PALETTE[i], width=2, markers=True),),
                   marked_step=None if best_step is None else float(best_step))
        for i, (name, caption, y_title) in enumerate(QUALITY_PANELS)
    ]
    legend = [(PALETTE[7], 2, True, "measured on the canvas's centre: before training (step 0), at each preview, at the end")]
    if best_step is not None:
        legend.append((BEST_COLOUR, 2, False, f"best: step {best_step} (best.safetensors)"))
    heading = f"{title}: quality of the render, {len(rows)} measurements"
    return _figure(panels, heading=heading, legend=legend, columns=2)


# --- drawing ---------------------------------------------------------------------------------------

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 14, 24, 40
_HEADING, _LEGEND = 30, 24


def font(size: int):
    """Pillow's bundled font at ``size`` pixels (its fixed bitmap font before Pillow 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _figure(panels: list[ChartPanel], *, heading: str, legend: list[tuple[Colour, int, bool, str]], columns: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    columns = min(columns, len(panels))
    grid_rows = math.ceil(len(panels) / columns)
    pw, ph = PANEL
    image = Image.new("RGB", (columns * pw, _HEADING + _LEGEND + grid_rows * ph), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 7), heading, fill="black", font=font(16))
    x, y, small = 10, _HEADING + 4, font(12)
    for colour, width, markers, text in legend:
        draw.line((x, y + 8, x + 28, y + 8), fill=colour, width=width)
        if markers:
            _dot(draw, x + 14, y + 8, colour)
        x += 34
        draw.text((x, y + 1), text, fill="black", font=small)
        x += int(draw.textlength(text, font=small)) + 24
    for i, panel in enumerate(panels):
        left, top = (i % columns) * pw, _HEADING + _LEGEND + (i // columns) * ph
        _draw_panel(image, draw, panel, (left, top, left + pw, top + ph))
    return np.asarray(image)


def _draw_panel(image, draw, panel: ChartPanel, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    small = font(11)
    draw.text((x0 + _MARGIN_LEFT, y0 + 5), panel.title, fill="black", font=font(13))
    left, top, right, bottom = x0 + _MARGIN_LEFT, y0 + _MARGIN_TOP, x1 - _MARGIN_RIGHT, y1 - _MARGIN_BOTTOM
    steps = [s for line in panel.lines for s in line.steps] + ([] if panel.marked_step is None else [panel.marked_step])
    values = [v for line in panel.lines for v in line.values if math.isfinite(v)]
    if not values:
        draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
        draw.text((left + 8, top + 8), "no finite value", fill=(214, 39, 40), font=small)
        return
    x_ticks = nice_ticks(min(steps), max(steps), integer=True)
    y_ticks = nice_ticks(min(values), max(values))

    def px(step: float) -> float:
        return left + (step - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def py(value: float) -> float:
        return bottom - (value - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    for tick, label in zip(x_ticks, tick_labels(x_ticks)):
        draw.line((px(tick), top, px(tick), bottom), fill=(232, 232, 232))
        draw.line((px(tick), bottom, px(tick), bottom + 4), fill=(80, 80, 80))
        width = draw.textlength(label, font=small)
        draw.text((px(tick) - width / 2, bottom + 6), label, fill="black", font=small)
    for tick, label in zip(y_ticks, tick_labels(y_ticks)):
        draw.line((left, py(tick), right, py(tick)), fill=(232, 232, 232))
        draw.line((left - 4, py(tick), left, py(tick)), fill=(80, 80, 80))
        width = draw.textlength(label, font=small)
        draw.text((left - 7 - width, py(tick) - 7), label, fill="black", font=small)
    x_title_width = draw.textlength(panel.x_title, font=small)
    draw.text(((left + right - x_title_width) / 2, bottom + 22), panel.x_title, fill="black", font=small)
    _vertical_text(image, panel.y_title, centre=(x0 + 10, (top + bottom) // 2), font=small)
    if panel.marked_step is not None:
        draw.line((px(panel.marked_step), top, px(panel.marked_step), bottom), fill=BEST_COLOUR, width=2)
    for line in panel.lines:
        for segment in _finite_segments(line):
            points = [(px(s), py(v)) for s, v in segment]
            if len(points) > 1:
                draw.line(points, fill=line.colour, width=line.width, joint="curve")
            if line.markers or len(points) == 1:
                for x, y in points:
                    _dot(draw, x, y, line.colour)
        for step, value in zip(line.steps, line.values):
            if step == panel.marked_step and math.isfinite(value):
                x, y = px(step), py(value)
                draw.ellipse((x - 6, y - 6, x + 6, y + 6), outline=BEST_COLOUR, width=2)
    draw.rectangle((left, top, right, bottom), outline=(80, 80, 80))  # over the lines' ends


def _finite_segments(line: Line) -> list[list[tuple[float, float]]]:
    """The runs of finite values: a NaN loss breaks the line instead of bending it."""
    segments: list[list[tuple[float, float]]] = [[]]
    for step, value in zip(line.steps, line.values):
        if math.isfinite(value):
            segments[-1].append((step, value))
        elif segments[-1]:
            segments.append([])
    return [s for s in segments if s]


def _vertical_text(image, text: str, *, centre: tuple[int, int], font) -> None:
    from PIL import Image, ImageDraw

    width = int(ImageDraw.Draw(image).textlength(text, font=font)) + 4
    label = Image.new("RGB", (width, 16), "white")
    ImageDraw.Draw(label).text((2, 1), text, fill="black", font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (centre[0] - label.width // 2, centre[1] - label.height // 2))


def _dot(draw, x: float, y: float, colour: Colour) -> None:
    draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour, outline="white")


def _tint(colour: Colour, strength: float) -> Colour:
    return tuple(round(255 - (255 - c) * strength) for c in colour)  # type: ignore[return-value]


def _message(text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PANEL[0], 60), "white")
    ImageDraw.Draw(image).text((10, 20), text, fill="black", font=font(14))
    return np.asarray(image)
