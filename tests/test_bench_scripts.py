"""The CPU-speed benchmarks run end to end (tiny sizes): their figures live in BENCHMARKS.md, and a
script that no longer runs would leave them unreproducible."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def run(*argv: str) -> str:
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_peak_measures_the_machine_and_every_runner():
    out = run(str(BENCH / "bench_peak.py"), "--smoke", "--repeats", "1", "--sweep", "64")
    assert "matmul 512³ bf16" in out and "Peaks taken" in out
    for row in ("before: onnx fp32, head decoder", "onnx fp32", "torch bf16 channels-last", "default (no flags)"):
        assert f"| {row}" in out, row
    assert "## The default runner" in out


def test_bench_exactness_compares_every_backend():
    pytest.importorskip("openvino")
    out = run(str(BENCH / "bench_exactness.py"), "--canvas", "96", "--chunk", "32")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "backend" not in line]
    assert len(rows) == 6
    # onnxruntime and torch are chunk-exact: the invariant famos is built on
    for row in rows[:4]:
        assert row.count("same bytes") == 4, row
    # every backend gives the same bytes twice, across processes and at another thread count
    assert all(row.count("same bytes") >= 3 for row in rows), rows


def test_bench_seed_variants_trains_scores_and_draws_each_variant(tmp_path):
    out = run(str(BENCH / "bench_seed_variants.py"), "--out", str(tmp_path / "study"), "--preset", "tiny", "--steps", "2",
              "--datasets", "samples", "--variants", "mirror (preset)", "multi-scale + refine",
              "--sheet", str(tmp_path / "sheet.jpg"))
    rows = [line for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| mirror (preset)", "| multi-scale + refine"]
    from PIL import Image

    assert Image.open(tmp_path / "sheet.jpg").width == 2 * 300 + 8  # two variants, 300 px each and a gap
