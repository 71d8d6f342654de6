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
import contextlib
import datetime
import importlib.util
import io
import json
import os
import pathlib
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NEEDED = ["PIL", "tifffile", "imagecodecs", "safetensors", "onnx", "onnxruntime", "grpc", "grpc_health", "grpc_reflection",
          "pytest", "tqdm"]
BUDGET_SECONDS = 450  # the whole check on a GPU, from process start: 8 minutes with room for the last writes
STARTED = time.perf_counter()
H200_BF16_FLOPS = 790e12  # measured dense bf16 matrix rate (the figure)
PAPER_MACS_PER_PIXEL = 610_465  # the count for depth 4, width 80, N 30, kernel 5

# name: (seconds on a GPU, seconds in --smoke)
STEPS = {
    "gpu_tests": (110, 120),
    "bundle": (45, 120),
    "throughput": (75, 120),
    "gigapixel": (100, 120),
    "training": (150, 180),
}
ZSTD_GIGAPIXEL_SECONDS = 90  # a second gigapixel in zstd, last, when this much of the budget is left


# --- the steps (each runs in its own process: `gpu_check.py --step NAME`) -------------------------


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
    import re

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
    """Multiply-adds of every convolution per output pixel, counted by hooks on one window."""
    import torch

    total = [0]

    def count(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += output[0].numel() * module.in_channels // module.groups * k

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(*window)
    for hook in hooks:
        hook.remove()
    return total[0] / (window[0].shape[-2] * window[0].shape[-1])


def step_throughput(work: pathlib.Path, smoke: bool) -> dict:
    import numpy as np
    import torch

    from famos.bundle import load_bundle
    from famos.config import CanvasConfig, Precision
    from famos.errors import BackendUnavailable
    from famos.planning import Rect
    from famos.rendering import WindowInputs
    from famos.runners import Backend, RunnerOptions, open_runner

    bundle = load_bundle(work / "bundle")
    device = "cpu" if smoke else "cuda"
    chunks = [64, 128] if smoke else [1024, 2048, 3840]  # windows to 3984 px: under MAX_WINDOW_SIDE
    repeats = 2 if smoke else 4
    config = bundle.spec.generator
    canvas = CanvasConfig(16384, 16384, style_scale=bundle.spec.canvas.style_scale)
    content = np.zeros((300, 451, 3), np.float32)
    inputs = WindowInputs(config=config, canvas=canvas, content=content, seed=0)
    from famos.planning import halo_for

    halo = halo_for(config)
    rows: list[dict] = []

    # first what needs no GPU time, so that a step killed at its limit still reports it
    from famos.checkpoint import load_generator
    from famos.torch_runners import DeviceSettings, EagerRunner

    model, _, _ = load_generator(bundle.path / "generator.safetensors")
    probe = EagerRunner(model, settings=DeviceSettings(device="cpu")).feed(*inputs(Rect(0, 0, 256, 256)))
    macs = macs_per_pixel(model, [None if a is None else torch.from_numpy(a) for a in probe])
    floor_mp_per_s = H200_BF16_FLOPS / (2 * macs) / 1e6
    figures = {"ok": True, "device": device, "rows": rows, "macs_per_pixel": macs,
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
                "share_of_floor": side * side / seconds / 1e6 / floor_mp_per_s}

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

    from famos.cli import main

    sys.path.insert(0, str(REPO / "bench"))
    from bench_training import _trainer

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


def famos_json(argv: list[str]) -> tuple[int, dict]:
    """`famos ARGV` in this process: its exit status and the JSON object it printed last ({} if none)."""
    from famos.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    lines = printed.getvalue().strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 and lines else {}


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


# --- the driver ------------------------------------------------------------------------------------


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
            result.update(pytest_figures((work / "gpu_tests.out").read_text()))
        if code is None:
            error = f"timed out after {limit:.0f} s (killed); figures so far kept"
        else:
            tail = (work / f"{name}{extra.get('suffix', '')}.log").read_text().strip().splitlines()[-3:]
            error = f"exit {code}: " + " | ".join(tail)
        result.update(ok=False, error=error)
    result["step_seconds"] = round(seconds, 1)
    result["limit_seconds"] = round(limit)
    return result


def environment() -> dict:
    import torch

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": "cpu"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    try:
        import onnxruntime

        info["onnxruntime"] = f"{onnxruntime.__version__} {onnxruntime.get_available_providers()}"
    except ImportError:
        info["onnxruntime"] = "not installed"
    return info


def report(figures: dict) -> str:
    env = figures["environment"]
    steps = figures["steps"]
    lines = [f"# famos GPU check{' (smoke, CPU)' if figures['smoke'] else ''}", "",
             f"{env['date']}, {env['host']}: {env['device']}"
             + (f" ({env['gpu_memory_gib']} GiB)" if "gpu_memory_gib" in env else "")
             + f", {env['cores']} cores, Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), "
               f"onnxruntime {env['onnxruntime']}. Command: `{figures['command']}`, {figures['seconds']:.0f} s in all.", ""]
    lines += ["| step | ok | seconds (limit) | note |", "|---|---|---:|---|"]
    for name, result in steps.items():
        note = result.get("error") or result.get("summary") or ""
        lines.append(f"| {name} | {'yes' if result.get('ok') else 'NO'} | {result['step_seconds']} ({result['limit_seconds']}) | {note} |")
    t = steps.get("throughput", {})
    if t.get("macs_per_pixel"):
        lines += ["", f"## Throughput ({t['device']}, inputs staged once; MP/s of delivered pixels, the share of the floor "
                  "of pixels computed, halo included)", "",
                  f"Multiply-adds per output pixel, counted by hooks on this model's convolutions: {t['macs_per_pixel']:,.0f} "
                  f"(the issue's figure for the paper's architecture: {t['paper_macs_per_pixel']:,}). The compute floor "
                  f"from the counted figure at 790 TFLOP/s bf16: "
                  f"{t['floor_mp_per_s_at_790_tflops']:,.0f} MP/s."
                  + (f" Default chunk on this GPU (bf16, half the free memory): {t['default_chunk_bf16']} px." if t.get("default_chunk_bf16") else ""), "",
                  "| backend | precision | autotune | chunk | window MP | s/chunk | MP/s | share of floor | peak GiB |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in t["rows"]:
            if "error" in r:
                lines.append(f"| {r['backend']} | {r.get('precision', '')} | | | | | {r['error']} | | |")
            elif "seconds_per_chunk" in r:
                peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
                lines.append(f"| {r['backend']} | {r['precision']} | {'yes' if r['autotune'] else 'no'} | {r['chunk']} | "
                             f"{r['window_mp']:.2f} | {r['seconds_per_chunk']:.3f} | {r['mp_per_s']:.1f} | "
                             f"{r['share_of_floor']:.1%} | {peak} |")
            else:
                lines.append(f"| {r['backend']} (host arrays) | fp32 | | {r['chunk']} | | | {r['mp_per_s']:.1f} | "
                             f"{r['share_of_floor']:.1%} | |")
    for key in ("gigapixel", "gigapixel_zstd"):
        g = steps.get(key, {})
        if g.get("ok"):
            tm = g["timings"]
            lines += ["", f"## {g['megapixels']:,.1f} MP end to end ({g['compression']})", "",
                      f"`{g['command']}`", "",
                      f"- wall {g['wall_seconds']:.1f} s (the render {g['render_seconds']} s; the rest: loading, the overview PNG), "
                      f"{g['megapixels'] / g['wall_seconds']:.1f} MP/s, file {g['bytes'] / 1e9:.2f} GB, {g['chunks']} chunks",
                      f"- device busy {tm.get('device_busy', 0):.1f} s = {g.get('device_busy_share', 0):.0%} of the render; "
                      f"writer waited for pixels {tm.get('waiting_for_pixels', 0):.1f} s, encoded {tm.get('encoding', 0):.1f} s, "
                      f"wrote {tm.get('writing', 0):.1f} s",
                      f"- peak host RSS {g['peak_rss_gib']:.2f} GiB"]
    tr = steps.get("training", {})
    if tr.get("steps_per_s"):
        lines += ["", f"## Training ({tr['preset']} preset)", "",
                  "- steps/s: " + ", ".join(f"{p} {rate:.2f}" for p, rate in tr["steps_per_s"].items())]
        if tr.get("ok"):
            q = tr["quality"]
            lines += [f"- bf16 run: {tr['run_steps']} steps in {tr['run_seconds']:.0f} s: content error "
                      f"{q.get('content_error', float('nan')):.5f}, style distance {q.get('style_distance', float('nan')):.5f}",
                      f"- `{tr['command']}`"]
    lines += ["", "PNGs next to this report: " + ", ".join(figures["pngs"]) if figures["pngs"] else ""]
    return "\n".join(lines) + "\n"


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
        function = globals()[f"step_{args.step}"]
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
            extra = {"preview": str(args.outdir / "gigapixel_overview.png")} if name == "gigapixel" else {}
            figures["steps"][name] = run_step(name, work, args.smoke, limit, **extra)
            print(f"gpu_check: {name}: {'ok' if figures['steps'][name].get('ok') else 'FAILED'} "
                  f"in {figures['steps'][name]['step_seconds']} s", file=sys.stderr, flush=True)
        if figures["steps"]["gigapixel"].get("ok") and left() > ZSTD_GIGAPIXEL_SECONDS + 5:
            limit = min(ZSTD_GIGAPIXEL_SECONDS, left() - 5)
            figures["steps"]["gigapixel_zstd"] = run_step("gigapixel", work, args.smoke, limit,
                                                          compression="zstd", suffix="_zstd")
        if (args.outdir / "gigapixel_overview.png").is_file():
            figures["pngs"].append("gigapixel_overview.png")
        training = figures["steps"].get("training", {})
        for source, target in [(training.get("final_preview"), "training_canvas.png"),
                               (next((p for p in reversed(training.get("previews", [])) if p.endswith("_patches.png")), None),
                                "training_patches.png")]:
            if source and pathlib.Path(source).is_file():
                shutil.copyfile(source, args.outdir / target)
                figures["pngs"].append(target)
    figures["seconds"] = time.perf_counter() - start
    (args.outdir / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    (args.outdir / "report.md").write_text(report(figures))
    print(f"gpu_check: {figures['seconds']:.0f} s; report in {args.outdir / 'report.md'}", file=sys.stderr)
    return 0 if all(s.get("ok") for s in figures["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
