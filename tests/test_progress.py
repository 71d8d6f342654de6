"""Progress a person can trust: the rate leaves out the first chunk's warm-up, the time left is
right early, and off a terminal progress is a line every LOG_EVERY_SECONDS, not a bar."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from conftest import make_bundle
from famos.bundle import load_bundle
from famos.canvas import to_unit_range
from famos.chunk_loop import WindowInputs, plan_for
from famos.cli import main
from famos.config import CanvasConfig, GeneratorConfig
from famos.pipeline import pipelined_strips
from famos.progress import Eta, ProgressLines, clock, status
from famos.runners import Backend, RunnerOptions, open_runner


def test_the_rate_counts_from_the_end_of_the_first_unit():
    eta = Eta(100)
    assert eta.rate is None and eta.remaining is None and eta.warming_up
    eta.update(10, 5.0)  # a slow first unit: 3 s of warm-up and 2 s of work
    assert eta.warming_up and eta.rate == 2.0  # its own rate, warm-up included, until a second one
    eta.update(20, 7.0)
    assert not eta.warming_up and eta.rate == 5.0 and eta.remaining == 16.0
    assert "warm-up included" not in status(eta, unit="MP")
    assert clock(59) == "59 s" and clock(185) == "3 min 05 s" and clock(7620) == "2 h 07 min"


def test_the_time_left_is_right_within_a_quarter_after_a_tenth_of_a_slowed_render(tmp_path):
    """A real pipeline over a runner slowed to a known cost per window pixel, its first window
    paying a warm-up as a graph compile would: after 10 % of the pixels the estimate of the time
    left is within 25 % of the time it really took."""
    config = GeneratorConfig(depth=2, width=4, n_templates=2)
    bundle = load_bundle(make_bundle(tmp_path, config, CanvasConfig(64, 96)))
    inner = open_runner(bundle, RunnerOptions(backend=Backend.ONNX))
    calls = []

    def slowed(content, origin, noise, canvas=None):
        time.sleep(content.shape[-2] * content.shape[-1] * 2e-6 + (0.4 if not calls else 0.0))
        calls.append(1)
        return inner(content, origin, noise, canvas)

    canvas = dataclasses.replace(bundle.spec.canvas, height=400, width=400)
    plan = plan_for(config, canvas, chunk_size=40, halo=bundle.manifest.halo)
    inputs = WindowInputs(config=config, canvas=canvas, content=to_unit_range(bundle.default_content()), seed=0)
    updates = []
    start = time.perf_counter()
    for _ in pipelined_strips(plan, inputs, slowed, progress=updates.append):
        pass
    total = time.perf_counter() - start
    assert len(plan.chunks) >= 50
    first = next(p for p in updates if p.fraction >= 0.1)
    eta = Eta(first.pixels_total)
    for p in updates[: updates.index(first) + 1]:
        eta.update(p.pixels_done, p.seconds)
    actual = total - first.seconds
    assert eta.remaining == pytest.approx(actual, rel=0.25), (eta.remaining, actual)
    # the first estimate from the start (warm-up included) is the one that was far off
    naive = first.seconds * (first.pixels_total - first.pixels_done) / first.pixels_done
    assert abs(naive - actual) > abs(eta.remaining - actual)


def test_off_a_terminal_progress_is_a_line_every_so_often(tmp_path, capsys, monkeypatch):
    import famos.progress

    monkeypatch.setattr(famos.progress, "LOG_EVERY_SECONDS", 0.0)
    bundle = make_bundle(tmp_path, GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(64, 96))
    assert main(["render", str(bundle), "--out", str(tmp_path / "a.tif"), "--size", "320x320", "--chunk", "64"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("famos render:") and "MP/s" in line]
    assert len(lines) >= 5 and "\r" not in err
    assert "left" in lines[2] and lines[-1].startswith("famos render: 100%")
    assert main(["render", str(bundle), "--out", str(tmp_path / "b.tif"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_one_redrawn_line(capsys):
    class Terminal:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    terminal = Terminal()
    lines = ProgressLines("famos x", 4e6, unit="MP", scale=1e6, stream=terminal)
    for done in range(1, 5):
        lines.update(done * 1e6, done * 0.5)
    lines.close()
    drawn = terminal.text.split("\r")
    assert "warm-up" in drawn[1] and "[####################] 100%" in drawn[-1]
    assert terminal.text.endswith("\n") and terminal.text.count("\n") == 1
    assert np.all([len(d.rstrip()) <= 120 for d in drawn])


def test_the_viewer_reports_building_zoom_levels(tmp_path):
    import tifffile

    from famos.viewer.sources import TiffImage

    path = tmp_path / "flat.tif"  # no pyramid: the viewer builds its levels
    tifffile.imwrite(path, np.zeros((1024, 768, 3), np.uint8), tile=(128, 128), photometric="rgb")
    heard = []
    image = TiffImage(path, progress=lambda done, total, seconds: heard.append((done, total, seconds)))
    image.close()
    assert len(heard) == 1024 // 128
    assert [d for d, _, _ in heard] == sorted(d for d, _, _ in heard) and heard[-1][:2] == (1024 * 768, 1024 * 768)
