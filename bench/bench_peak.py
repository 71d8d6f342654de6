"""How near this CPU's own limit famos renders: the attainable rate measured here, then every
backend x precision on the paper-sized model at the default chunk, as a share of it.

    python bench/bench_peak.py [--chunk N] [--repeats 2]      # the paper-sized U-Net
    python bench/bench_peak.py --smoke                         # every step, tiny, in seconds

Attainable rate: torch's dense matrix product (bf16 and fp32) and the model's heaviest
convolution layer at its own shapes (channels-last bf16, fp32), best of a few runs on every core.
Backends: one window of the default chunk plus its halo, after a warm-up on the same shape (so
graph compilation is not timed), on a random-weight bundle exported by the real exporter. Printed
per row: delivered MP/s (chunk pixels, the halo is overhead), the convolution rate it implies, its
share of the measured peak of the same precision and of the bf16 peak, seconds per gigapixel,
and the ratio to famos's default before this (onnxruntime fp32 on the full-resolution-head
decoder). The last row is what `famos render` picks with no flags here.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import pathlib
import platform
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_backends import export_random_model  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Combo:
    label: str
    arch: str  # bench_backends architecture name
    backend: str
    precision: str
    channels_last: bool | None = None  # torch only; None: the runner's own choice


COMBOS = (
    Combo("before: onnx fp32, head decoder", "head", "onnx", "fp32"),
    Combo("onnx fp32", "default", "onnx", "fp32"),
    Combo("torch fp32", "default", "torch", "fp32", False),
    Combo("torch fp32 channels-last", "default", "torch", "fp32", True),
    Combo("torch bf16", "default", "torch", "bf16", False),
    Combo("torch bf16 channels-last", "default", "torch", "bf16", True),
    Combo("openvino fp32", "default", "openvino", "fp32"),
    Combo("openvino bf16", "default", "openvino", "bf16"),
)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "?"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(flag for flag in wanted if f" {flag}" in text) or "none of " + ", ".join(wanted)


def best_seconds(fn, *, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(dtype, side: int, repeats: int, device: str = "cpu") -> float:
    """FLOP/s of one dense side x side x side product on ``device`` (the GPU check's too)."""
    import torch

    a, b = (torch.randn(side, side, device=device).to(dtype) for _ in range(2))

    def product() -> None:
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize(device)

    return 2 * side**3 / best_seconds(product, repeats=repeats)


def heaviest_convolution(model, feeds: tuple):
    """(in, out, kernel, stride, input height, width, MACs) of the convolution with the most
    multiply-adds on the window ``feeds`` (a WindowInputs tuple) of ``model``, and the multiply-adds
    of all its convolutions per window pixel."""
    import torch

    from famos.generator import convolution_costs

    costs = convolution_costs(model, *[None if a is None else torch.from_numpy(a) for a in feeds])
    layer, shape, macs = max(costs, key=lambda c: c[2])
    heaviest = (layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.stride[0], shape[-2], shape[-1], macs)
    return heaviest, sum(c[2] for c in costs) / (feeds[0].shape[-2] * feeds[0].shape[-1])


def conv_rate(layer: tuple, dtype, channels_last: bool, repeats: int) -> float:
    import torch

    cin, cout, k, stride, h, w, macs = layer
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2).to(dtype).eval()
    x = torch.randn(1, cin, h, w).to(dtype)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = best_seconds(lambda: conv(x), repeats=repeats)
    return 2 * macs / seconds


def open_combo(bundle, combo: Combo):
    from famos.config import Precision
    from famos.runners import Backend, RunnerOptions, open_runner

    precision = Precision(combo.precision)
    if combo.backend == "torch":
        from famos.torch_runners import DeviceSettings, eager_runner

        settings = DeviceSettings(precision=precision, channels_last=combo.channels_last)
        return eager_runner(bundle.path / "generator.safetensors", settings=settings)
    return open_runner(bundle, RunnerOptions(backend=Backend(combo.backend), precision=precision))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk", type=int, help="output chunk side (default: famos's CPU default for the model)")
    parser.add_argument("--repeats", type=int, default=2, help="timed windows per backend (the fastest counts)")
    parser.add_argument("--smoke", action="store_true", help="the small model, tiny windows: checks the script")
    parser.add_argument("--sweep", metavar="CHUNKS", help="then the default runner at these chunks, e.g. 512,1024,1536,2048")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import torch

    from famos.canvas import to_unit_range
    from famos.checkpoint import load_generator
    from famos.chunk_loop import WindowInputs
    from famos.errors import BackendUnavailable
    from famos.planning import Rect
    from famos.runners import RunnerOptions

    try:
        import openvino
        openvino_version = openvino.__version__
    except ImportError:
        openvino_version = "not installed"
    threads = torch.get_num_threads()
    print(f"# bench_peak: {datetime.date.today().isoformat()}, {cpu_model()}, {threads} threads, flags: "
          f"{cpu_flags()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino_version}\n")

    arch_of = {"default": "small", "head": "small"} if args.smoke else {"default": "default", "head": "head"}
    side = 128 if args.smoke else 512
    with tempfile.TemporaryDirectory(prefix="famos-peak-") as tmp:
        bundles = {}
        for arch in arch_of:
            (pathlib.Path(tmp) / arch).mkdir()
            bundles[arch] = export_random_model(arch_of[arch], pathlib.Path(tmp) / arch, side=side)
        default = bundles["default"]
        halo = default.manifest.halo
        if args.chunk:
            chunk = args.chunk
        elif args.smoke:
            chunk = 64
        else:
            from famos.renderer import Renderer

            chunk = Renderer(default, RunnerOptions()).default_chunk(None)
        probe = 64 if args.smoke else 256

        def window_of(bundle, side: int) -> tuple:
            inputs = WindowInputs(config=bundle.spec.generator, canvas=bundle.spec.canvas,
                                  content=to_unit_range(bundle.default_content()), seed=0)
            return inputs(Rect(0, 0, side, side))

        model, _, _ = load_generator(default.path / "generator.safetensors")
        layer, macs_per_px = heaviest_convolution(model, window_of(default, probe))
        head_model, _, _ = load_generator(bundles["head"].path / "generator.safetensors")
        _, head_macs_per_px = heaviest_convolution(head_model, window_of(bundles["head"], probe))
        del model, head_model

        print("## Attainable rate (torch, every core)\n")
        print("| kernel | TFLOP/s |")
        print("|---|---:|")
        mm = 512 if args.smoke else 2048
        repeats = 2 if args.smoke else 5
        cin, cout, k, stride, h, w, _ = layer
        # (name, precision, FLOP/s): each kernel timed once; the peaks are the best of these rows
        rates = [
            (f"matmul {mm}³ fp32", "fp32", matmul_rate(torch.float32, mm, repeats)),
            (f"matmul {mm}³ bf16", "bf16", matmul_rate(torch.bfloat16, mm, repeats)),
            (f"conv {k}x{k} {cin}->{cout} on {h}x{w} (the model's heaviest) fp32", "fp32",
             conv_rate(layer, torch.float32, False, repeats)),
            ("the same conv fp32 channels-last", "fp32", conv_rate(layer, torch.float32, True, repeats)),
            ("the same conv bf16 channels-last", "bf16", conv_rate(layer, torch.bfloat16, True, repeats)),
        ]
        for name, _, value in rates:
            print(f"| {name} | {value / 1e12:.3f} |")
        peaks = {precision: max(v for _, p, v in rates if p == precision) for precision in ("fp32", "bf16")}
        print(f"\nPeaks taken: fp32 {peaks['fp32'] / 1e12:.3f}, bf16 {peaks['bf16'] / 1e12:.3f} TFLOP/s (the best of the rows).")
        print(f"Multiply-adds per output pixel: {macs_per_px:,.0f} (paper decoder), {head_macs_per_px:,.0f} (head).\n")

        window = chunk + halo.top + halo.bottom
        print(f"## Backends: one {window}² window (chunk {chunk} + halo {halo.top}/{halo.bottom}), "
              f"{args.repeats} timed after a warm-up\n")
        print("| runner | s / window | MP/s | TFLOP/s | share of its precision's peak | share of bf16 peak | s / GP | vs before |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        resolved = RunnerOptions().resolved()
        auto = Combo(f"default (no flags): {resolved.backend.value} {resolved.precision.value}", "default",
                     resolved.backend.value, resolved.precision.value)
        before = None
        for combo in (*COMBOS, auto):
            bundle = bundles[combo.arch]
            feeds = window_of(bundle, window)
            try:
                run = open_combo(bundle, combo)
            except BackendUnavailable as err:
                print(f"| {combo.label} | unavailable: {err} | | | | | | |", flush=True)
                continue
            seconds = best_seconds(lambda: run(*feeds), repeats=args.repeats)
            del run
            mp_per_s = chunk * chunk / 1e6 / seconds
            macs = head_macs_per_px if combo.arch == "head" else macs_per_px
            flops = window * window * 2 * macs / seconds
            before = before or mp_per_s
            print(f"| {combo.label} | {seconds:.2f} | {mp_per_s:.3f} | {flops / 1e12:.3f} | "
                  f"{flops / peaks[combo.precision]:.0%} | {flops / peaks['bf16']:.0%} | {1e3 / mp_per_s:,.0f} | "
                  f"{mp_per_s / before:.2f}× |", flush=True)

        if args.sweep:
            print(f"\n## The default runner ({auto.label.split(': ', 1)[1]}) at other chunks\n")
            print("| chunk | window | s / window | delivered MP/s | computed MP/s |")
            print("|---:|---:|---:|---:|---:|")
            run = open_combo(default, auto)
            for side in (int(v) for v in args.sweep.split(",")):
                window = side + halo.top + halo.bottom
                feeds = window_of(default, window)
                seconds = best_seconds(lambda: run(*feeds), repeats=args.repeats)
                print(f"| {side} | {window} | {seconds:.2f} | {side * side / 1e6 / seconds:.3f} | "
                      f"{window * window / 1e6 / seconds:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
