"""The GPU check: everything a scarce GPU minute should measure, in one run of at most 8 minutes.

    python bench/gpu_check.py OUTDIR            # on a CUDA machine, from the tree (PYTHONPATH=.)
    python bench/gpu_check.py OUTDIR --smoke    # every step at tiny sizes on the CPU (CI runs it)

Steps, each in its own process under its own time limit (a step that overruns is killed and
reported, and the next one starts):

    gpu_tests    the ``gpu``-marked tests (tests/test_devices.py, tests/test_server_resume.py)
    bundle       an untrained model of the paper's architecture (depth 4, width 80, N 30) exported
    throughput   MP/s of the torch device path per precision x chunk size (the inputs staged once:
                 device throughput), TorchScript float32, ONNX Runtime where it has CUDA; the
                 multiply-adds per output pixel counted on the model, and the ratio to the compute
                 floor at the H200's measured bf16 matrix rate
    gigapixel    32768 x 32768 through `famos render` as a user runs it (bf16, deflate; at the end
                 zstd too when time is left): wall time, GPU busy share, peak host RSS, where the
                 time went
    training     default-preset steps/s in fp32 and bf16, then up to 2 minutes of bf16 training
                 (what its limit leaves) on the bundled samples with its previews, content error
                 and style distance

OUTDIR receives at most 8 files: report.md, figures.json and PNGs (the gigapixel's overview, the
training run's canvas and patch previews). Nothing else is written outside a temporary folder.

A bare GPU machine lacks some wheels (Pillow, imagecodecs, pytest, gRPC health): ``bench/gpu_wheels.sh``
downloads them into .gpu-wheels/ here; carry that folder and run there

    pip install --no-deps --no-index .gpu-wheels/*.whl && PYTHONPATH=. python bench/gpu_check.py $OUT/check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import gpu_steps
from gpu_report import GIGAPIXEL_OVERVIEW, environment, keep_pngs, write_report

REPO = gpu_steps.REPO
sys.path.insert(0, str(REPO))

NEEDED = ["PIL", "tifffile", "imagecodecs", "safetensors", "onnx", "onnxruntime", "grpc", "grpc_health", "grpc_reflection",
          "pytest", "tqdm"]
BUDGET_SECONDS = 450  # the whole check on a GPU, from process start: 8 minutes with room for the last writes
STARTED = time.perf_counter()

# name (gpu_steps.step_NAME): (seconds on a GPU, seconds in --smoke)
STEPS = {
    "gpu_tests": (110, 120),
    "bundle": (45, 120),
    "throughput": (75, 120),
    "gigapixel": (100, 120),
    "training": (150, 180),
}
ZSTD_GIGAPIXEL_SECONDS = 90  # a second gigapixel in zstd, last, when this much of the budget is left


def run_step(name: str, work: pathlib.Path, smoke: bool, limit: float, **extra: str) -> dict:
    """One step in its own process group, killed with its children after ``limit`` seconds."""
    result_file = work / f"{name}{extra.get('suffix', '')}.json"
    command = [sys.executable, __file__, "--step", name, "--work", str(work), "--limit", f"{limit:.0f}"]
    command += ["--smoke"] if smoke else []
    for key, value in extra.items():
        command += [f"--{key}", value]
    start = time.perf_counter()
    log = open(work / f"{name}{extra.get('suffix', '')}.log", "w")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    try:
        code = process.wait(timeout=max(1.0, limit))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = None
    log.close()
    seconds = time.perf_counter() - start
    partial = work / f"{name}{extra.get('suffix', '')}.partial.json"
    if code is not None and result_file.is_file():
        result = json.loads(result_file.read_text())
    else:  # killed at its limit or crashed: what it measured so far, and why it stopped
        result = json.loads(partial.read_text()) if partial.is_file() else {}
        if name == "gpu_tests" and (work / "gpu_tests.out").is_file():
            result.update(gpu_steps.pytest_figures((work / "gpu_tests.out").read_text()))
        if code is None:
            error = f"timed out after {limit:.0f} s (killed); figures so far kept"
        else:
            tail = (work / f"{name}{extra.get('suffix', '')}.log").read_text().strip().splitlines()[-3:]
            error = f"exit {code}: " + " | ".join(tail)
        result.update(ok=False, error=error)
    result["step_seconds"] = round(seconds, 1)
    result["limit_seconds"] = round(limit)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", nargs="?", type=pathlib.Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds for the whole check")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--compression", default="deflate", help=argparse.SUPPRESS)
    parser.add_argument("--preview", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--suffix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.step:  # inside a step's own process
        function = getattr(gpu_steps, f"step_{args.step}")
        extra = {"compression": args.compression, "preview": args.preview} if args.step == "gigapixel" else {}
        if args.step == "training":
            extra["limit"] = args.limit
        result = function(args.work, args.smoke, **extra)
        (args.work / f"{args.step}{args.suffix}.json").write_text(json.dumps(result, default=str))
        return 0

    if args.outdir is None:
        parser.error("OUTDIR is required")
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device here; use --smoke to check the script on a CPU", file=sys.stderr)
        return 2
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gpu_check: missing modules {', '.join(missing)} (bench/gpu_wheels.sh downloads their wheels)",
              file=sys.stderr)
        return 2
    args.outdir.mkdir(parents=True, exist_ok=True)
    start = STARTED
    figures = {"smoke": args.smoke, "command": "python bench/gpu_check.py " + " ".join(argv or sys.argv[1:]),
               "environment": environment(), "steps": {}, "pngs": []}
    with tempfile.TemporaryDirectory(prefix="famos-gpu-check-") as folder:
        work = pathlib.Path(folder)

        def left() -> float:
            return args.budget - (time.perf_counter() - start) if not args.smoke else 10**6

        for name, (gpu_limit, smoke_limit) in STEPS.items():
            limit = min(smoke_limit if args.smoke else gpu_limit, left() - 5)
            if limit < 10:
                figures["steps"][name] = {"ok": False, "error": "skipped: the check's time budget is spent",
                                          "step_seconds": 0, "limit_seconds": 0}
                continue
            extra = {"preview": str(args.outdir / GIGAPIXEL_OVERVIEW)} if name == "gigapixel" else {}
            figures["steps"][name] = run_step(name, work, args.smoke, limit, **extra)
            print(f"gpu_check: {name}: {'ok' if figures['steps'][name].get('ok') else 'FAILED'} "
                  f"in {figures['steps'][name]['step_seconds']} s", file=sys.stderr, flush=True)
        if figures["steps"]["gigapixel"].get("ok") and left() > ZSTD_GIGAPIXEL_SECONDS + 5:
            limit = min(ZSTD_GIGAPIXEL_SECONDS, left() - 5)
            figures["steps"]["gigapixel_zstd"] = run_step("gigapixel", work, args.smoke, limit,
                                                          compression="zstd", suffix="_zstd")
        figures["pngs"] = keep_pngs(args.outdir, figures["steps"])
    figures["seconds"] = time.perf_counter() - start
    report = write_report(args.outdir, figures)
    print(f"gpu_check: {figures['seconds']:.0f} s; report in {report}", file=sys.stderr)
    return 0 if all(s.get("ok") for s in figures["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
