"""The run's pictures a person reads: losses.png, quality.png and the captioned patch grid, and
the warning when the style distance keeps rising. The charts' arithmetic on known series; one
short `famos train --preset tiny` run for the files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from famos.canvas import to_uint8
from famos.cli import main as famos
from famos.config import BlendMode
from famos.training.metrics import Quality
from famos.training.plots import PALETTE, nice_ticks, plot_losses, plot_quality, running_mean, tick_labels
from famos.training.previews import DIVERGENCE_RISES, QualityLog, divergence_warning, grid_rows, patch_grid


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def readable(picture, *, min_size: tuple[int, int]) -> np.ndarray:
    """The picture (a PNG's path or uint8 RGB) as uint8 RGB, checked to be at least ``min_size``
    (w, h) and not blank."""
    pixels = picture if isinstance(picture, np.ndarray) else np.asarray(Image.open(picture).convert("RGB"))
    height, width = pixels.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (width, height)
    assert pixels.astype(np.float64).var() > 100, "blank picture"
    assert (pixels.min(axis=2) < 128).mean() > 0.005, "no dark pixels: no text, axes or lines"
    return pixels


def has_colour(pixels: np.ndarray, colour) -> bool:
    return bool(np.all(pixels == np.array(colour, dtype=np.uint8), axis=2).any())


# --- a short run writes them ----------------------------------------------------------------------


def test_a_short_tiny_run_writes_readable_pictures(tmp_path):
    out = tmp_path / "tiny"
    assert famos(["train", "--preset", "tiny", "--steps", "6", "--preview-every", "2", "--checkpoint-every", "100",
                  "--out", str(out), "--threads", "1", "--quiet"]) == 0
    with open(out / "quality.csv") as f:
        # before training, at each preview; the final step's preview measured the final weights
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 2, 4, 6]
    losses = readable(out / "losses.png", min_size=(800, 400))
    for i in range(4):  # d, g, g_adv, content: a line in each term's colour
        assert has_colour(losses, PALETTE[i]), i
    quality = readable(out / "quality.png", min_size=(800, 250))
    assert has_colour(quality, PALETTE[0]) and has_colour(quality, PALETTE[1])
    grid = readable(out / "previews" / "step_000006_patches.png", min_size=(4 * 64 + 100, 7 * 64))
    tiles_left = grid.shape[1] - (4 * 66 + 2)
    caption = grid[:, :tiles_left]
    assert (caption.min(axis=2) < 128).any() and tiles_left > 100  # the caption strip holds text


# --- the arithmetic of the charts -----------------------------------------------------------------


def test_running_mean_of_a_known_series():
    assert running_mean([1, 2, 3, 4, 5], window=2) == [1, 1.5, 2.5, 3.5, 4.5]
    assert running_mean([1, 2, 3, 4, 5], window=3) == [1, 1.5, 2, 3, 4]
    assert running_mean([4, 4, 4], window=10) == [4, 4, 4]
    assert running_mean([2, 5], window=1) == [2, 5]
    # a NaN loss is skipped, not spread: it neither bends nor hides the mean
    mean = running_mean([1, math.nan, 3, math.nan, math.nan], window=2)
    assert mean[:4] == [1, 1, 3, 3] and math.isnan(mean[4])
    with pytest.raises(ValueError):
        running_mean([1], window=0)


def test_running_mean_equals_the_definition_on_a_long_series():
    values = np.random.default_rng(0).normal(size=500).tolist()
    expected = [float(np.mean(values[max(0, i - 24) : i + 1])) for i in range(500)]
    assert running_mean(values, window=25) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False), span=st.floats(0, 1e6, allow_nan=False),
    integer=st.booleans(),
)
def test_ticks_cover_the_data_evenly_and_their_labels_say_their_values(lo, span, integer):
    hi = lo + span
    ticks = nice_ticks(lo, hi, integer=integer)
    assert ticks[0] <= lo and ticks[-1] >= hi
    assert 2 <= len(ticks) <= 7
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0], rtol=1e-6) and steps[0] > 0
    if integer:
        assert all(t == int(t) for t in ticks)
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(labels)
    assert [float(label) for label in labels] == pytest.approx(ticks, rel=1e-3, abs=steps[0] * 1e-3)


def test_ticks_of_typical_axes():
    assert nice_ticks(1, 200, integer=True) == [0, 50, 100, 150, 200]
    assert nice_ticks(0.02, 0.105) == [0.02, 0.04, 0.06, 0.08, 0.1, 0.12]
    assert tick_labels(nice_ticks(0.0, 0.125)) == ["0.000", "0.025", "0.050", "0.075", "0.100", "0.125"]
    assert nice_ticks(3, 3, integer=True) == [2, 3, 4]  # one step: widened around it
    assert nice_ticks(0.0, 5e-324) == [-1.0, -0.5, 0.0, 0.5, 1.0]  # a subnormal sliver is one value


def test_charts_of_synthetic_series_show_every_series():
    steps = range(1, 301)
    rows = [{"step": s, "d": 1.4 - s / 1000, "g": 1.0 + math.sin(s / 20), "content": 0.001 * s, "gp": math.nan}
            for s in steps]
    losses = readable(plot_losses(rows, title="synthetic"), min_size=(800, 500))
    for i in range(3):
        assert has_colour(losses, PALETTE[i]), i  # d, g, content; gp (all NaN) says so instead
    quality = [{"step": s, "content_error": 0.01 / (1 + s), "style_distance": 0.1 - s * 1e-4} for s in (0, 100, 200, 300)]
    readable(plot_quality(quality, title="synthetic"), min_size=(800, 250))
    readable(plot_losses([{"step": 1, "d": 1.0}], title="one step"), min_size=(400, 250))
    assert plot_losses([], title="nothing").shape[0] > 0


# --- the patch grid -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_templates, blend", [(3, BlendMode.BLEND), (0, BlendMode.PAINT)])
def test_patch_grid_names_each_row_and_keeps_the_tiles_exact(n_templates, blend):
    rng = torch.Generator().manual_seed(0)
    b, h, w = 2, 16, 24
    image = torch.rand(b, 3, h, w, generator=rng) * 2 - 1
    weights = torch.softmax(torch.randn(b, n_templates, h, w, generator=rng), dim=1)
    grid = patch_grid(content=image, copied=-image, painted=image.flip(2), image=image.flip(3), style=image * 0.5,
                      alpha=torch.rand(b, 1, h, w, generator=rng), weights=weights, blend=blend, title="step 7")
    labels = grid_rows(n_templates=n_templates, blend=blend)
    assert len(labels) == 7 and len({name for name, _ in labels}) == 7
    gap = 2
    grid_width = b * (w + gap) + gap
    strip, header = grid.shape[1] - grid_width, grid.shape[0] - (7 * (h + gap) + gap)
    assert strip > 100 and header > 0
    for r in range(7):  # each row's caption holds text
        band = grid[header + gap + r * (h + gap) : header + gap + r * (h + gap) + h, :strip]
        assert (band.min(axis=2) < 128).any(), r
    # the tiles are the tensors, pixel for pixel: row 4 is the real style patch
    y, x = header + gap + 4 * (h + gap), strip + gap + (w + gap)
    assert np.array_equal(grid[y : y + h, x : x + w], to_uint8((image[1] * 0.5).numpy()).transpose(1, 2, 0))


def test_grid_captions_follow_the_blend_mode():
    assert "copy mode" in dict(grid_rows(n_templates=4, blend=BlendMode.COPY))["I generated"]
    assert "no templates" in dict(grid_rows(n_templates=0, blend=BlendMode.PAINT))["I_M copied"]
    assert "weight of I_G" in dict(grid_rows(n_templates=4, blend=BlendMode.BLEND))["alpha"]


# --- the divergence warning -----------------------------------------------------------------------


def warnings_along(values: list[float]) -> list[tuple[int, str]]:
    """(index, warning) each time a preview with these style distances would warn."""
    rows = [{"step": 100 * i, "content_error": 0.01, "style_distance": v} for i, v in enumerate(values)]
    said = [(i, divergence_warning(rows[: i + 1])) for i in range(len(rows))]
    return [(i, w) for i, w in said if w is not None]


def test_divergence_warns_once_per_rising_streak():
    assert DIVERGENCE_RISES == 3
    said = warnings_along([0.5, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.3, 0.35, 0.4, 0.45, 0.5])
    assert [i for i, _ in said] == [4, 10]  # the third rise of each streak; the 4th and 5th say nothing
    assert said[0][1] == ("style distance rose for 3 previews (0.4 -> 0.55 at step 400); the run may be diverging: "
                          "try a lower --lr, or a snapshot in checkpoints/ from step 100 or earlier")
    assert "\n" not in said[0][1]


@pytest.mark.parametrize("values", [
    [0.5, 0.4, 0.3, 0.2, 0.1, 0.05],  # falling
    [0.5, 0.6, 0.7, 0.6, 0.7, 0.8, 0.8, 0.9, 1.0],  # two rises at most, then a fall or an equal value
    [0.1, 0.2, 0.3],  # two rises: not yet
    [],
])
def test_divergence_is_quiet_without_three_rises_in_a_row(values):
    assert warnings_along(values) == []


def test_quality_log_replaces_a_step_measured_again_and_drops_rows_past_a_resume(tmp_path):
    path = tmp_path / "quality.csv"
    log = QualityLog(path, resume_step=0)
    for step, distance in ((0, 0.1), (10, 0.2), (20, 0.3), (30, 0.4), (40, 0.5)):
        said = log.append(step, Quality(content_error=0.01, style_distance=distance))
        assert (said is not None) == (step == 30)
    assert log.at(40) == Quality(0.01, 0.5) and log.at(30) is None
    log.append(40, Quality(content_error=0.02, style_distance=0.05))
    resumed = QualityLog(path, resume_step=25)  # killed after the preview of 40, checkpoint at 25
    assert [r["step"] for r in resumed.rows] == [0, 10, 20]
    with open(path) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 10, 20]


def test_the_run_prints_the_warning_once_on_stderr(tmp_path, monkeypatch, capsys):
    """The loop's hook, with the measurement replaced by a style distance rising at every preview."""
    from famos.training import loop

    distances = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    monkeypatch.setattr(loop, "_quality", lambda trainer: Quality(0.01, next(distances)))
    assert famos(["train", "--preset", "tiny", "--steps", "5", "--preview-every", "1", "--checkpoint-every", "100",
                  "--out", str(tmp_path / "run"), "--threads", "1", "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines == ["famos train: warning: style distance rose for 3 previews (0.1 -> 0.4 at step 3); the run may "
                     "be diverging: try a lower --lr, or a snapshot in checkpoints/ from step 0 or earlier"]
