"""The OpenVINO backend: float32 equals onnxruntime, bfloat16 within its stated tolerance, the same
bytes every time (one process, another process, any thread count), and every door renders with it.

OpenVINO is not chunk-exact (a window's pixels may differ by a rounding step from the same pixels
in a window of another shape), so nothing here compares a chunked render with a whole-canvas pass.
The automatic choice of backend and precision, and the errors without OpenVINO, are tested in
test_runners.py, which runs where OpenVINO is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
tifffile = pytest.importorskip("tifffile")

from conftest import SERVER_MODEL, make_bundle  # noqa: E402
from famos.bundle import load_bundle  # noqa: E402
from famos.chunk_loop import RenderSettings, WindowInputs  # noqa: E402
from famos.canvas import to_unit_range  # noqa: E402
from famos.cli import main  # noqa: E402
from famos.config import CanvasConfig, Fold, GeneratorConfig, NoiseConfig, Precision  # noqa: E402
from famos.openvino_runner import OpenVinoRunner, cpu_capabilities  # noqa: E402
from famos.pipeline import pipelined_strips  # noqa: E402
from famos.planning import Rect  # noqa: E402
from famos.renderer import Renderer  # noqa: E402
from famos.runners import Backend, RunnerOptions, open_runner  # noqa: E402

CONFIG = GeneratorConfig(depth=3, width=8, n_templates=3, noise=NoiseConfig(n_global=1, n_local=2, n_periodic=1))
CANVAS = CanvasConfig(90, 150, fold=Fold.MIRROR, template_seed=3)
# Windows of the canvas (aligned to 8): the whole aligned canvas, an interior one, a corner.
WINDOWS = [Rect(0, 0, 96, 152), Rect(8, 16, 48, 64), Rect(64, 120, 32, 32)]
# Against onnxruntime in float32, in output units ([-1, 1]; 1/127.5 = 0.0078 is one 8-bit level).
# Measured on these windows (OpenVINO 2026.4, a Xeon with AMX): float32 max 2.2e-7; bfloat16 max
# 1.8e-3, mean 4e-4, as torch's bfloat16 (max 1.2e-3, mean 2.8e-4): bfloat16 keeps 8 bits of
# mantissa. The paper's U-Net (random weights, 512 px window) measured max 1.1e-3, with 1.9 % of its
# 8-bit values a level apart. The bounds leave room for other CPUs' kernels, under one 8-bit level.
FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 0.006
BF16_MEAN_TOLERANCE = 0.0015

needs_bf16 = pytest.mark.skipif("BF16" not in (cpu_capabilities() or ()), reason="this CPU has no native bfloat16")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("openvino"), CONFIG, CANVAS)


@pytest.fixture(scope="module")
def windows(bundle):
    loaded = load_bundle(bundle)
    inputs = WindowInputs(config=loaded.spec.generator, canvas=loaded.spec.canvas,
                          content=to_unit_range(loaded.default_content()), seed=3)
    return [inputs(window) for window in WINDOWS]


def runner(bundle, precision: Precision, threads: int = 0):
    return open_runner(load_bundle(bundle), RunnerOptions(backend=Backend.OPENVINO, precision=precision, threads=threads))


@pytest.fixture(scope="module")
def reference(bundle, windows):
    onnx = open_runner(load_bundle(bundle), RunnerOptions(backend=Backend.ONNX, precision=Precision.FP32))
    return [onnx(*window) for window in windows]


def test_float32_matches_onnxruntime(bundle, windows, reference):
    run = runner(bundle, Precision.FP32)
    assert isinstance(run, OpenVinoRunner)
    for window, expected in zip(windows, reference):
        image = run(*window)
        assert image.dtype == np.float32 and image.shape == expected.shape
        assert np.abs(image - expected).max() <= FP32_TOLERANCE


@needs_bf16
def test_bfloat16_is_within_its_stated_tolerance(bundle, windows, reference):
    run = runner(bundle, Precision.BF16)
    for window, expected in zip(windows, reference):
        difference = np.abs(run(*window) - expected)
        assert difference.max() <= BF16_TOLERANCE, difference.max()
        assert difference.max() > 1e-5, "bfloat16 did not run (float32 agrees to 1e-7)"
        assert difference.mean() <= BF16_MEAN_TOLERANCE


@pytest.mark.parametrize("precision", [Precision.FP32, pytest.param(Precision.BF16, marks=needs_bf16)])
def test_the_same_bytes_every_time_and_at_any_thread_count(bundle, windows, precision):
    """A resumed job and a cluster's workers rely on it: the same window, the same bytes."""
    one, two = runner(bundle, precision, threads=1), runner(bundle, precision, threads=2)
    for window in windows:  # windows of three shapes, through one infer request
        first = one(*window)
        assert np.array_equal(one(*window), first)
        assert np.array_equal(two(*window), first)
    loaded = load_bundle(bundle)
    renderer = Renderer(loaded, RunnerOptions(backend=Backend.OPENVINO, precision=precision))
    task = renderer.task(RenderSettings(seed=2, chunk=32))
    assert len({c.window.height * 1000 + c.window.width for c in task.plan.chunks}) > 1
    strips = [np.concatenate(list(pipelined_strips(task.plan, task.inputs, run))) for run in (one, two, one)]
    assert np.array_equal(strips[0], strips[1]) and np.array_equal(strips[0], strips[2])


def test_concurrent_renders_of_one_model_take_turns(bundle, windows):
    """A server's renders of one model share its runner (one infer request) from their threads."""
    import threading

    run = runner(bundle, Precision.FP32)
    expected = [run(*window) for window in windows]
    wrong: list[object] = []

    def render(i: int) -> None:
        for _ in range(10):
            try:
                if not np.array_equal(run(*windows[i]), expected[i]):
                    wrong.append(i)
            except Exception as err:  # noqa: BLE001 - what a busy request raises
                wrong.append(err)

    threads = [threading.Thread(target=render, args=(i,)) for i in range(len(windows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def description(path) -> dict:
    with tifffile.TiffFile(path) as tif:
        return json.loads(tif.pages[0].description)


@needs_bf16
def test_famos_render_with_openvino_bf16_records_it_and_another_process_makes_the_same_file(bundle, tmp_path):
    args = [str(bundle), "--seed", "4", "--chunk", "48", "--backend", "openvino", "--precision", "bf16", "--quiet"]
    here, there = tmp_path / "here.tif", tmp_path / "there.tif"
    assert main(["render", *args, "--out", str(here)]) == 0
    recorded = description(here)
    assert (recorded["backend"], recorded["precision"]) == ("openvino", "bf16")
    assert tifffile.imread(here).shape == (90, 150, 3)
    subprocess.run([sys.executable, "-m", "famos.cli", "render", *args, "--out", str(there)], check=True)
    assert there.read_bytes() == here.read_bytes()


def test_the_default_records_a_concrete_backend_and_precision(bundle, tmp_path):
    out = tmp_path / "default.tif"
    assert main(["render", str(bundle), "--out", str(out), "--chunk", "64", "--quiet"]) == 0
    resolved = RunnerOptions().resolved()
    assert resolved.backend is Backend.OPENVINO  # OpenVINO is installed here: the CPU's default
    recorded = description(out)
    assert (recorded["backend"], recorded["precision"]) == (resolved.backend.value, resolved.precision.value)


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "runs on the CPU only"),
    (["--precision", "fp16"], "use bf16 or fp32"),
])
def test_what_openvino_cannot_run_is_a_one_line_error(bundle, tmp_path, capsys, argv, message):
    out = tmp_path / "x.tif"
    assert main(["render", str(bundle), "--out", str(out), "--backend", "openvino", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_bfloat16_on_a_cpu_without_it_is_a_one_line_error(bundle, tmp_path, capsys, monkeypatch):
    from famos import openvino_runner

    monkeypatch.setattr(openvino_runner, "cpu_capabilities", lambda: frozenset({"FP32", "INT8"}))
    out = tmp_path / "x.tif"
    assert main(["render", str(bundle), "--out", str(out), "--backend", "openvino", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bfloat16" in err[0] and "BF16" in err[0] and not out.exists()


def test_famos_batch_renders_with_openvino(models, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"model,output,dpi,seed\n{SERVER_MODEL},print.tif,150,3\n")
    out = tmp_path / "prints"
    assert main(["batch", str(jobs), "--out", str(out), "--bundles", str(models), "--chunk", "48",
                 "--backend", "openvino", "--precision", "fp32", "--quiet"]) == 0
    recorded = description(out / "print.tif")
    assert (recorded["backend"], recorded["precision"]) == ("openvino", "fp32")


def test_the_server_renders_with_openvino_as_famos_render_does(models, start_render_server, tmp_path):
    from famos.clients.render_client import RenderClient
    from famos.tiff_options import Compression, TiffOptions

    options = RunnerOptions(backend=Backend.OPENVINO, precision=Precision.FP32)
    server = start_render_server(models, runner=options)
    local, streamed = tmp_path / "local.tif", tmp_path / "streamed.tif"
    assert main(["render", str(models / SERVER_MODEL), "--out", str(local), "--seed", "5", "--chunk", "32",
                 "--tile", "32", "--compression", "deflate", "--backend", "openvino", "--precision", "fp32",
                 "--quiet"]) == 0
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        assert client.model(SERVER_MODEL).backend == "openvino"
        client.render_to_tiff(SERVER_MODEL, streamed, seed=5, chunk=32,
                              tiff=TiffOptions(tile=32, compression=Compression.DEFLATE))
    assert streamed.read_bytes() == local.read_bytes()
    assert (description(streamed)["backend"], description(streamed)["precision"]) == ("openvino", "fp32")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the signal stack through glibc")
def test_opening_a_runner_leaves_this_threads_signal_stack_alone(bundle):
    """OpenVINO's CPU plugin puts its own signal stack on the thread that compiles and frees it with
    the model: the runner compiles on a thread of its own, so a later Ctrl-C runs on ours."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    libc = ctypes.CDLL(None)

    def signal_stack() -> tuple:
        stack = Stack()
        assert libc.sigaltstack(None, ctypes.byref(stack)) == 0
        return stack.sp, stack.flags, stack.size

    before = signal_stack()
    run = runner(bundle, Precision.FP32)
    assert signal_stack() == before
    del run
    assert signal_stack() == before
