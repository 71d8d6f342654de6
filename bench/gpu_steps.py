"""The GPU check's steps: each measures one thing and returns its figures as a JSON-ready dict.

bench/gpu_check.py runs each in its own process (`gpu_check.py --step NAME` calls ``step_NAME``)
under its own time limit; a step saves what it has so far with ``save_partial`` so that a step
killed at its limit still reports it. ``step_bundle`` also serves bench/bench_precision.py as the
way to get a bundle of the paper's architecture.
"""

from __future__ import annotations

import json
import pathlib
import re
import resource
import subprocess
import sys
import time

from common import famos_json

REPO = pathlib.Path(__file__).resolve().parents[1]
H200_BF16_FLOPS = 790e12  # measured dense bf16 matrix rate (the figure)
PAPER_MACS_PER_PIXEL = 610_465  # the count for depth 4, width 80, N 30, kernel 5


def step_gpu_tests(work: pathlib.Path, smoke: bool) -> dict:
    tests = ["tests/test_devices.py", "tests/test_server_resume.py"]
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-v", "-rfE", "-p", "no:cacheprovider", *tests]
    if not smoke:
        command += ["-m", "gpu"]
    with open(work / "gpu_tests.out", "w") as out:  # line by line: read back even if the step is killed
        code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    return {"command": " ".join(command[1:]), **pytest_figures((work / "gpu_tests.out").read_text()), "ok": code == 0}


def pytest_figures(text: str) -> dict:
    """Counts and failures from pytest -v output, finished or cut short."""
    outcomes = re.findall(r"^\S+::\S+ (PASSED|FAILED|SKIPPED|ERROR)", text, flags=re.MULTILINE)
    counts = {kind.lower(): outcomes.count(kind) for kind in ("PASSED", "FAILED", "SKIPPED", "ERROR") if kind in outcomes}
    lines = text.strip().splitlines()
    summary = lines[-1].strip("= ") if lines and " in " in lines[-1] else f"{counts} so far"
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {"summary": summary, "counts": counts, "failures": failures[:10]}


def _architecture(smoke: bool):
    from famos.config import CanvasConfig, GeneratorConfig

    if smoke:
        return GeneratorConfig(depth=3, width=12, n_templates=6, kernel=3), CanvasConfig(300, 451)
    return GeneratorConfig(), CanvasConfig(300, 451)  # the paper's: depth 4, width 80, N 30, kernel 5


def step_bundle(work: pathlib.Path, smoke: bool) -> dict:
    import torch

    from famos.canvas import load_rgb
    from famos.checkpoint import save_generator
    from famos.cli import main
    from famos.generator import build_generator

    config, canvas = _architecture(smoke)
    styles = [load_rgb(REPO / "examples" / "style" / name) for name in ("brick.png", "gravel.png")]
    torch.manual_seed(0)
    model = build_generator(config, canvas, styles)
    save_generator(work / "model.safetensors", model, style_sizes=[s.shape[:2] for s in styles],
                   content=load_rgb(REPO / "examples" / "content" / "chelsea.png"), step=0)
    start = time.perf_counter()
    code = main(["export", str(work / "model.safetensors"), "--out", str(work / "bundle")])
    return {"ok": code == 0, "export_seconds": round(time.perf_counter() - start, 1),
            "architecture": {"depth": config.depth, "width": config.width, "templates": config.n_templates,
                             "kernel": config.kernel}}


def macs_per_pixel(model, window: tuple) -> float:
    """Multiply-adds of every convolution per output pixel, counted on one window."""
    from famos.generator import convolution_costs

    return sum(cost for _, _, cost in convolution_costs(model, *window)) / (window[0].shape[-2] * window[0].shape[-1])


def step_throughput(work: pathlib.Path, smoke: bool) -> dict:
    import numpy as np
    import torch

    from famos.bundle import load_bundle
    from famos.checkpoint import load_generator
    from famos.chunk_loop import WindowInputs
    from famos.config import CanvasConfig, Precision
    from famos.errors import BackendUnavailable
    from famos.planning import Rect, halo_for
    from famos.runners import Backend, RunnerOptions, open_runner
    from famos.torch_runners import DeviceSettings, EagerRunner

    bundle = load_bundle(work / "bundle")
    device = "cpu" if smoke else "cuda"
    chunks = [64, 128] if smoke else [1024, 2048, 3840]  # windows to 3984 px: under MAX_WINDOW_SIDE
    repeats = 2 if smoke else 4
    config = bundle.spec.generator
    canvas = CanvasConfig(16384, 16384, style_scale=bundle.spec.canvas.style_scale)
    content = np.zeros((300, 451, 3), np.float32)
    inputs = WindowInputs(config=config, canvas=canvas, content=content, seed=0)
    halo = halo_for(config)
    rows: list[dict] = []

    # first what needs no GPU time, so that a step killed at its limit still reports it
    model, _, _ = load_generator(bundle.path / "generator.safetensors")
    probe = EagerRunner(model, settings=DeviceSettings(device="cpu")).feed(*inputs(Rect(0, 0, 256, 256)))
    macs = macs_per_pixel(model, [None if a is None else torch.from_numpy(a) for a in probe])
    floor_mp_per_s = H200_BF16_FLOPS / (2 * macs) / 1e6
    from bench_peak import matmul_rate  # this device's own attainable rate, as bench_peak.py measures a CPU's

    measured_peak = matmul_rate(torch.bfloat16, 512 if smoke else 8192, 3 if smoke else 10, device=device)
    figures = {"ok": True, "device": device, "rows": rows, "macs_per_pixel": macs,
               "measured_bf16_flops": measured_peak,
               "paper_macs_per_pixel": PAPER_MACS_PER_PIXEL, "floor_mp_per_s_at_790_tflops": floor_mp_per_s,
               "default_chunk_bf16": None}
    if not smoke:
        run = open_runner(bundle, RunnerOptions(backend=Backend.TORCH, device=device, precision=Precision.BF16))
        figures["default_chunk_bf16"] = run.suggest_chunk(inputs, margin=halo.top + halo.bottom)
        del run
        _release_device()

    def measure(run, chunk: int) -> dict:
        side = chunk + halo.top + halo.bottom
        staged = run.stage(inputs(Rect(0, 0, side, side)))
        crop = Rect(halo.top, halo.left, chunk, chunk)
        if run.cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):  # warm-up: kernels, allocator, autotuning, TorchScript's profiling runs
            run.submit(staged, crop, 8).result()
        start = time.perf_counter()
        pending = [run.submit(staged, crop, 8) for _ in range(repeats)]  # queued back to back
        for p in pending:
            p.result()
        seconds = (time.perf_counter() - start) / repeats
        peak = torch.cuda.max_memory_allocated() / 2**30 if run.cuda else None
        # MP/s counts delivered pixels; the share of the floor counts the pixels computed (halo included)
        return {"mp_per_s": chunk * chunk / seconds / 1e6, "window_mp": side * side / 1e6,
                "seconds_per_chunk": seconds, "peak_gib": peak,
                "share_of_floor": side * side / seconds / 1e6 / floor_mp_per_s,
                "share_of_measured_peak": side * side * 2 * macs / seconds / measured_peak}

    def add(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        save_partial(work, "throughput", figures)

    combos = [(Backend.TORCH, p, False) for p in Precision] + [(Backend.TORCH, Precision.BF16, True),
                                                              (Backend.TORCHSCRIPT, Precision.FP32, False)]
    for backend, precision, autotune in combos:
        try:
            run = open_runner(bundle, RunnerOptions(backend=backend, device=device, precision=precision, autotune=autotune))
        except BackendUnavailable as err:
            add({"backend": backend.value, "precision": precision.value, "error": str(err)})
            continue
        for chunk in chunks if backend is Backend.TORCH and not autotune else chunks[1:2]:
            row = {"backend": backend.value, "precision": precision.value, "autotune": autotune, "chunk": chunk}
            try:
                row.update(measure(run, chunk))
            except Exception as err:  # out of memory, a kernel refused: this row's figure, not the step's
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            add(row)
        del run
        _release_device()
    onnx = {"backend": "onnx", "precision": "fp32"}
    try:  # the float32 contract (host arrays in and out), one chunk of the smallest size
        run = open_runner(bundle, RunnerOptions(backend=Backend.ONNX, device=device))
        side = chunks[0] + halo.top + halo.bottom
        window = inputs(Rect(0, 0, side, side))
        run(*window)
        start = time.perf_counter()
        run(*window)
        seconds = time.perf_counter() - start
        onnx.update(chunk=chunks[0], mp_per_s=chunks[0] ** 2 / seconds / 1e6,
                    share_of_floor=side * side / seconds / 1e6 / floor_mp_per_s, providers=run.providers)
    except Exception as err:  # BackendUnavailable without onnxruntime-gpu, or a provider failing
        onnx["error"] = f"{type(err).__name__}: {err}"[:300]
    add(onnx)
    return figures


def step_gigapixel(work: pathlib.Path, smoke: bool, *, compression: str = "deflate", preview: pathlib.Path | None = None) -> dict:
    side = 512 if smoke else 32768
    out = work / f"giga-{compression}.tif"
    argv = [str(work / "bundle"), "--out", str(out), "--size", f"{side}x{side}", "--backend", "torch",
            "--device", "cpu" if smoke else "cuda", "--precision", "bf16", "--compression", compression, "--quiet"]
    if smoke:
        argv += ["--chunk", "128"]
    if preview is not None:
        argv += ["--preview", str(preview)]
    start = time.perf_counter()
    code, report = famos_json(["render", *argv])
    wall = time.perf_counter() - start
    timings = report.get("timings", {})
    result = {"ok": code == 0, "command": "famos render " + " ".join(argv),
              "compression": compression, "megapixels": side * side / 1e6, "wall_seconds": wall,
              "render_seconds": report.get("seconds"), "timings": timings, "bytes": report.get("bytes"),
              "chunks": report.get("chunks"),
              "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if timings.get("device_busy") is not None and report.get("seconds"):
        result["device_busy_share"] = timings["device_busy"] / report["seconds"]
    out.unlink(missing_ok=True)
    return result


def step_training(work: pathlib.Path, smoke: bool, *, limit: float = 170) -> dict:
    import torch

    from bench_training import _trainer
    from famos.cli import main

    started = time.perf_counter()
    device = torch.device("cpu" if smoke else "cuda")
    preset = "tiny" if smoke else "default"
    rates = {}
    for precision in ("fp32", "bf16"):
        trainer = _trainer(preset, device=device, steps=10, precision=precision)
        trainer.train_step()  # warm-up
        steps = 2 if smoke else 5
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        _sync(device)
        rates[precision] = steps / (time.perf_counter() - start)
        save_partial(work, "training", {"preset": preset, "steps_per_s": rates})
        del trainer
    # the run takes what the step's limit leaves after the rates, start-up, previews and evaluation
    seconds = 10 if smoke else max(10.0, min(120.0, limit - (time.perf_counter() - started) - 35))
    steps = max(4, int(rates["bf16"] * seconds) // 2 * 2)
    run = work / "run"
    samples = REPO / "examples"
    argv = ["train", "--preset", preset, "--style", str(samples / "style" / "brick.png"), str(samples / "style" / "gravel.png"),
            "--content", str(samples / "content" / "chelsea.png"), "--precision", "bf16", "--device", device.type,
            "--steps", str(steps), "--preview-every", str(steps // 2), "--checkpoint-every", str(steps), "--out", str(run), "--quiet"]
    start = time.perf_counter()
    code = main(argv)
    train_seconds = time.perf_counter() - start
    quality = famos_json(["evaluate", str(run / "checkpoint.safetensors"), "--json"])[1] if code == 0 else {}
    previews = sorted((run / "previews").glob("*.png")) if (run / "previews").is_dir() else []
    return {"ok": code == 0, "preset": preset, "steps_per_s": rates, "run_steps": steps,
            "run_seconds": train_seconds, "command": "famos " + " ".join(argv), "quality": quality,
            "previews": [str(p) for p in previews], "final_preview": str(run / "preview.png")}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _release_device() -> None:
    """Frees a dropped runner's model now (its closures refer back to it: a cycle), so the next
    combination's peak memory is its own."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def save_partial(work: pathlib.Path, step: str, figures: dict) -> None:
    """What a step has measured so far: reported even if the step is then killed at its limit."""
    (work / f"{step}.partial.json").write_text(json.dumps(figures, default=str))
