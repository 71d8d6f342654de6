"""One render path for the CPU and CUDA: the device way of ``TorchRunner`` (pinned staging, streams,
crop and quantization on the device) in every precision and memory layout.

Each test runs on the CPU here and in CI, and again on CUDA (the ``gpu`` marker: skipped where
torch sees no CUDA device, run by ``bench/gpu_check.py`` on a GPU machine), so the logic a GPU run
depends on is tested on every commit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_content, tiny_model
from famos.config import CanvasConfig, Fold, GeneratorConfig, NoiseConfig, Precision
from famos.pipeline import pipelined_strips
from famos.planning import Rect
from famos.chunk_loop import WindowInputs, plan_for, render_chunks, render_strips
from famos.torch_runners import DeviceSettings, EagerRunner, configure_math, quantize
from famos.canvas import PIXEL_SCALES, to_pixels

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
CONFIG = GeneratorConfig(depth=3, width=12, n_templates=5, noise=NoiseConfig(n_global=2, n_local=3, n_periodic=2))
CANVAS = CanvasConfig(149, 211, style_scale=0.8, fold=Fold.MIRROR, template_seed=3)

# Reduced precisions against float32, in output units ([-1, 1]; 1/127.5 = 0.0078 is one 8-bit
# level). Measured on the CPU (torch 2.13): bf16 max 0.0017 (mean 0.0003), fp16 max 0.0002, channels-
# last float32 3e-7; the tolerances leave room for a GPU's other kernels: bfloat16 keeps 8 bits of
# mantissa, float16 11.
TOLERANCE = {Precision.FP32: 1e-4, Precision.BF16: 0.03, Precision.FP16: 0.01}


def runner(device: str, precision: Precision = Precision.FP32, *, channels_last: bool | None = None) -> EagerRunner:
    settings = DeviceSettings(device=device, precision=precision, channels_last=channels_last)
    configure_math(settings)
    return EagerRunner(tiny_model(CONFIG, CANVAS), settings=settings)


def inputs() -> WindowInputs:
    return WindowInputs(config=CONFIG, canvas=CANVAS, content=random_content(), seed=5)


def whole(run) -> np.ndarray:
    (_, image), = render_chunks(plan_for(CONFIG, CANVAS, chunk_size=10**6), inputs(), run)
    return image


def device_strips(run, chunk: int, bits: int = 8) -> np.ndarray:
    plan = plan_for(CONFIG, CANVAS, chunk_size=chunk)
    assert len(plan.chunks) > 4
    return np.concatenate(list(pipelined_strips(plan, inputs(), run, bits=bits, queue_chunks=2)))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_on_the_device_matches_the_cpu_reference(device):
    reference = whole(runner("cpu", channels_last=False))
    for channels_last in (False, True):
        image = whole(runner(device, channels_last=channels_last))
        assert np.abs(image - reference).max() <= TOLERANCE[Precision.FP32], (device, channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", [Precision.BF16, Precision.FP16])
def test_reduced_precision_is_within_its_stated_tolerance(device, precision):
    reference = whole(runner("cpu"))
    image = whole(runner(device, precision))
    difference = np.abs(image - reference)
    assert difference.max() <= TOLERANCE[precision], (precision, difference.max())
    assert difference.max() > 0, "the reduced precision did not run"
    assert difference.mean() < TOLERANCE[precision] / 10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [8, 16])
def test_chunks_on_the_device_equal_the_whole_canvas(device, bits):
    run = runner(device)
    chunked = device_strips(run, chunk=48, bits=bits)  # 4 x 5 chunks through stage/submit
    values = whole(run)
    expected = to_pixels(values, bits=bits).transpose(1, 2, 0)
    assert chunked.dtype == expected.dtype and chunked.shape == expected.shape == (149, 211, 3)
    if device == "cpu":
        assert np.array_equal(chunked, expected)
    else:
        # cuDNN may pick another algorithm for another window shape: sums in another order, the
        # last float bits differ. A pixel may then round the other way, but only within that
        # difference of a rounding tie.
        plan = plan_for(CONFIG, CANVAS, chunk_size=48)
        drift = max(np.abs(p - values[:, r.y : r.bottom, r.x : r.right]).max() for r, p in render_chunks(plan, inputs(), run))
        assert drift <= TOLERANCE[Precision.FP32]
        scale = PIXEL_SCALES[bits][0]
        scaled = (values.transpose(1, 2, 0).astype(np.float64) + 1) * scale
        at_tie = np.abs(scaled - np.floor(scaled) - 0.5) <= drift * scale + 1e-6
        differs = chunked != expected
        assert np.all(np.abs(chunked.astype(np.int64) - expected) <= 1)
        assert not np.any(differs & ~at_tie), f"{np.count_nonzero(differs & ~at_tie)} pixels differ off a rounding tie"
    # and the device way equals the float32 contract's way (numpy cropping and quantization)
    plan = plan_for(CONFIG, CANVAS, chunk_size=48)
    assert np.array_equal(chunked, np.concatenate(list(render_strips(plan, inputs(), run, bits=bits))))


@pytest.mark.parametrize("device", DEVICES)
def test_quantizing_on_the_device_gives_canvas_integers(device):
    values = np.concatenate([np.linspace(-1.2, 1.2, 20001, dtype=np.float32),
                             (np.arange(-128, 128, dtype=np.float32) + 0.5) / 127.5 - 1])  # exact halves
    values = np.tile(values, 3).reshape(3, 1, -1)
    for bits in (8, 16):
        on_device = quantize(torch.from_numpy(values).to(device), bits).cpu().numpy()
        assert np.array_equal(on_device.astype(np.uint16), to_pixels(values, bits=bits).transpose(1, 2, 0))


@pytest.mark.gpu
def test_the_gpu_default_chunk_follows_free_memory():
    run = runner("cuda")
    chunk = run.suggest_chunk(inputs(), margin=64)
    assert chunk % CONFIG.alignment == 0 and 256 <= chunk <= 8192


def test_the_cpu_keeps_the_default_chunk():
    assert runner("cpu").suggest_chunk(inputs(), margin=64) is None


def _onnx_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _onnx_cuda(), reason="needs onnxruntime-gpu (CUDAExecutionProvider) and a CUDA device")
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_onnx_on_cuda_with_io_binding_matches_the_cpu(tmp_path, precision):
    from conftest import make_bundle
    from famos.bundle import load_bundle
    from famos.cli import main
    from famos.runners import Backend, RunnerOptions, open_runner

    bundle_path = make_bundle(tmp_path / "m", CONFIG, CANVAS)
    half = tmp_path / "half"
    assert main(["export", str(tmp_path / "m" / "model.safetensors"), "--out", str(half), "--fp16"]) == 0
    bundle = load_bundle(half if precision is Precision.FP16 else bundle_path)
    cuda = open_runner(bundle, RunnerOptions(backend=Backend.ONNX, device="cuda", precision=precision))
    assert cuda.session.get_providers()[0] == "CUDAExecutionProvider"
    cpu = open_runner(bundle, RunnerOptions(backend=Backend.ONNX))
    window = inputs()(Rect(0, 0, 64, 96))
    tolerance = TOLERANCE[precision] if precision is Precision.FP32 else bundle.manifest.fp16_tolerance
    assert np.abs(cuda(*window) - cpu(*window)).max() <= tolerance
