"""bench/gpu_check.py works before a GPU minute is spent on it: --smoke runs every step at tiny
sizes on the CPU and writes what a GPU run writes, within its file limit."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
CHECK = [sys.executable, str(REPO / "bench" / "gpu_check.py")]


def test_the_smoke_check_runs_every_step_and_writes_at_most_eight_files(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run([*CHECK, str(out), "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"report.md", "figures.json", "gigapixel_overview.png", "training_canvas.png"} <= set(files)
    figures = json.loads((out / "figures.json").read_text())
    steps = figures["steps"]
    assert set(steps) == {"gpu_tests", "bundle", "throughput", "gigapixel", "gigapixel_zstd", "training"}
    assert all(step["ok"] for step in steps.values()), steps
    assert steps["gpu_tests"]["counts"]["passed"] > 0 and not steps["gpu_tests"]["failures"]
    rows = steps["throughput"]["rows"]
    assert {(r["backend"], r["precision"]) for r in rows if "mp_per_s" in r} >= {("torch", "fp32"), ("torch", "bf16"), ("torchscript", "fp32")}
    assert any(r["precision"] == "fp16" and "needs --device cuda" in r.get("error", "") for r in rows)  # not on a CPU
    assert steps["throughput"]["macs_per_pixel"] > 0
    assert steps["gigapixel"]["timings"]["device_busy"] > 0 and steps["gigapixel"]["peak_rss_gib"] > 0
    assert steps["training"]["quality"]["content_error"] >= 0 and set(steps["training"]["steps_per_s"]) == {"fp32", "bf16"}
    report = (out / "report.md").read_text()
    assert "smoke" in report and "Throughput" in report and "Training" in report
    assert not list(scratch.glob("famos-gpu-check-*"))  # its work folder (bundle, gigapixel files) is gone


def test_without_cuda_the_real_check_refuses_in_one_line(tmp_path):
    if torch.cuda.is_available():
        return  # on a GPU machine the real check is what runs
    done = subprocess.run([*CHECK, str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--smoke" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
