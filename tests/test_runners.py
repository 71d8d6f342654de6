"""Runner choices: one device grammar for every command, misaligned windows refused, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from famos.bundle import load_bundle  # noqa: E402
from famos.cli import main  # noqa: E402
from famos.errors import BackendUnavailable, UserError  # noqa: E402
from famos.config import Precision  # noqa: E402
from famos.runners import Backend, RunnerOptions, check_device, open_runner  # noqa: E402
from famos.window import check_window  # noqa: E402
from conftest import SERVER_MODEL  # noqa: E402


def test_device_grammar():
    assert check_device("cpu") is None
    assert check_device("cuda") == 0
    assert check_device("cuda:3") == 3
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0", "CUDA"):
        with pytest.raises(UserError, match="cpu, cuda or cuda:N"):
            check_device(bad)


def test_tensorrt_needs_onnx_on_cuda():
    with pytest.raises(BackendUnavailable, match="onnx backend only"):
        RunnerOptions(backend=Backend.TORCH, device="cuda", tensorrt=True)
    with pytest.raises(BackendUnavailable, match="needs --device cuda"):
        RunnerOptions(tensorrt=True)


def has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not has_openvino(), reason="OpenVINO is not installed"))
            if b is Backend.OPENVINO else b for b in Backend]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_runner_refuses_a_misaligned_window(models, backend):
    bundle = load_bundle(models / SERVER_MODEL)
    run = open_runner(bundle, RunnerOptions(backend=backend))
    a = bundle.manifest.alignment
    noise = None
    if bundle.manifest.takes_noise():
        noise = np.zeros((1, bundle.spec.generator.noise.channels, 2, 2), np.float32)
    content = np.zeros((1, 3, 2 * a, 2 * a), np.float32)
    assert run(content, np.array([[a, 0]], np.int64), noise).shape == content.shape
    with pytest.raises(ValueError, match="not aligned"):
        run(content, np.array([[a + 1, 0]], np.int64), noise)
    with pytest.raises(ValueError, match="not aligned"):
        run(content[..., : 2 * a - 1], np.array([[0, 0]], np.int64), noise)


def test_check_window_accepts_the_alignment_grid():
    check_window(np.zeros((1, 3, 32, 48)), np.array([[16, 32]]), 16)
    with pytest.raises(ValueError):
        check_window(np.zeros((1, 3, 32, 48)), np.array([[8, 32]]), 16)


@pytest.mark.parametrize("command", ["render", "batch", "serve"])
def test_the_same_device_options_in_every_command(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for option in ("--backend", "--device", "--precision", "--tensorrt", "--autotune", "cuda:N"):
        assert option in text, (command, option)


def test_unusable_devices_are_one_line_errors(models, tmp_path, capsys):
    bundle = str(models / SERVER_MODEL)
    out = str(tmp_path / "x.tif")
    assert main(["render", bundle, "--out", out, "--device", "gpu"]) == 2
    assert main(["render", bundle, "--out", out, "--device", "cuda:0", "--backend", "torch", "--tensorrt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cpu, cuda or cuda:N" in err[0] and "onnx backend only" in err[1]
    assert not (tmp_path / "x.tif").exists()


def test_a_format_1_bundle_says_it_renders_only_its_canvas(models, tmp_path, capsys):
    """Bundles from before the canvas input still load; asking them for another size is a clear
    one-line error, not a wrong image."""
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(models / SERVER_MODEL, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format"] = "famos-bundle/1"
    manifest["inputs"] = [t for t in manifest["inputs"] if t["name"] != "canvas"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert not load_bundle(old).manifest.takes_canvas()
    out = tmp_path / "x.tif"
    assert main(["render", str(old), "--out", str(out), "--scale", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "renders only its trained canvas" in err and "export it again" in err
    assert not out.exists()
    # a jobs file asking it for another size fails validation, before anything renders
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("model,output,size,dpi\nold,a.tif,320x192,150\nold,b.tif,,150\n")
    assert main(["batch", str(jobs), "--out", str(tmp_path / "prints"), "--check"]) == 2
    err = capsys.readouterr().err
    assert "row 2, size: old renders only its canvas 160x96" in err and "row 3" not in err


def test_sizes_and_numbers_out_of_range_are_one_line_errors(models, tmp_path, capsys):
    bundle = str(models / SERVER_MODEL)
    calls = [
        ["render", bundle, "--out", str(tmp_path / "a.tif"), "--size", "3000000000x2"],
        ["render", bundle, "--out", str(tmp_path / "a.tif"), "--scale", "1e300"],
        ["batch", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"), "--min-dpi", "nan"],
        ["batch", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"), "--chunk", "4"],
        ["serve", "--models", str(models), "--output", str(tmp_path), "--port", "99999"],
    ]
    for argv in calls:
        assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(calls) and all(": error: " in line for line in err), err
    assert "1048576" in err[0] and "--min-dpi" in err[2] and "--chunk" in err[3] and "--port" in err[4]
    assert list(tmp_path.iterdir()) == []


def test_float16_on_a_cpu_is_refused_for_torch_in_one_line(models, tmp_path, capsys):
    out = tmp_path / "x.tif"
    assert main(["render", str(models / SERVER_MODEL), "--out", str(out), "--backend", "torch", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --device cuda" in err[0] and not out.exists()


# The automatic backend and precision (RunnerOptions.resolved), on any machine: OpenVINO's probe of
# this CPU is replaced by each answer it can give.
NO_OPENVINO, NO_BF16, BF16 = None, frozenset({"FP32", "INT8"}), frozenset({"FP32", "BF16", "INT8"})
O, V, T, S = Backend.ONNX, Backend.OPENVINO, Backend.TORCH, Backend.TORCHSCRIPT
F32, B16, F16 = Precision.FP32, Precision.BF16, Precision.FP16
RESOLUTIONS = [
    # (capabilities, backend, device, precision) -> (backend, precision)
    ((BF16, Backend.AUTO, "cpu", None), (V, B16)),
    ((NO_BF16, Backend.AUTO, "cpu", None), (V, F32)),
    ((NO_OPENVINO, Backend.AUTO, "cpu", None), (O, F32)),
    ((BF16, Backend.AUTO, "cuda", None), (O, F32)),
    ((BF16, Backend.AUTO, "cuda:1", None), (O, F32)),
    # an explicit backend with the automatic precision: fp32, but bf16 for openvino where the CPU has it
    ((BF16, V, "cpu", None), (V, B16)),
    ((NO_BF16, V, "cpu", None), (V, F32)),
    ((NO_OPENVINO, V, "cpu", None), (V, F32)),  # opening it then says how to install OpenVINO
    ((BF16, O, "cpu", None), (O, F32)),
    ((BF16, T, "cpu", None), (T, F32)),
    ((BF16, S, "cuda", None), (S, F32)),
    # an explicit precision with the automatic backend: the first of openvino, onnx, torch that runs it
    ((BF16, Backend.AUTO, "cpu", F32), (V, F32)),
    ((NO_OPENVINO, Backend.AUTO, "cpu", F32), (O, F32)),
    ((BF16, Backend.AUTO, "cpu", B16), (V, B16)),
    ((NO_BF16, Backend.AUTO, "cpu", B16), (T, B16)),
    ((NO_OPENVINO, Backend.AUTO, "cpu", B16), (T, B16)),
    ((BF16, Backend.AUTO, "cpu", F16), (O, F16)),
    ((BF16, Backend.AUTO, "cuda", F32), (O, F32)),
    ((BF16, Backend.AUTO, "cuda", F16), (O, F16)),
    ((BF16, Backend.AUTO, "cuda", B16), (T, B16)),
    # explicit both: as asked
    ((BF16, T, "cpu", B16), (T, B16)),
    ((BF16, V, "cpu", F32), (V, F32)),
]


@pytest.mark.parametrize("case, expected", RESOLUTIONS)
def test_the_automatic_backend_and_precision(monkeypatch, case, expected):
    from famos import openvino_runner

    capabilities, backend, device, precision = case
    monkeypatch.setattr(openvino_runner, "cpu_capabilities", lambda: capabilities)
    options = RunnerOptions(backend=backend, device=device, precision=precision, threads=3)
    resolved = options.resolved()
    assert (resolved.backend, resolved.precision) == expected
    assert (resolved.device, resolved.threads) == (device, 3)
    assert resolved.resolved() == resolved


def test_tensorrt_resolves_to_onnx(monkeypatch):
    from famos import openvino_runner

    monkeypatch.setattr(openvino_runner, "cpu_capabilities", lambda: BF16)
    resolved = RunnerOptions(device="cuda", tensorrt=True).resolved()
    assert (resolved.backend, resolved.precision, resolved.tensorrt) == (O, F32, True)
    assert RunnerOptions(device="cuda", tensorrt=True, precision=F16).resolved().backend is O
    with pytest.raises(BackendUnavailable, match="bf16 with --backend onnx"):
        RunnerOptions(device="cuda", tensorrt=True, precision=B16).resolved()


@pytest.fixture
def without_openvino(monkeypatch):
    """As if OpenVINO were not installed: its import fails, and the probe asks again."""
    import functools
    import sys

    from famos import openvino_runner

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    monkeypatch.setattr(openvino_runner, "cpu_capabilities", functools.cache(openvino_runner.cpu_capabilities.__wrapped__))


def test_openvino_not_installed_is_a_one_line_error_and_the_default_falls_back_to_onnx(
    models, tmp_path, capsys, without_openvino
):
    import json

    import tifffile

    bundle, out = str(models / SERVER_MODEL), tmp_path / "x.tif"
    assert main(["render", bundle, "--out", str(out), "--backend", "openvino"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "famos[openvino]"' in err[0] and not out.exists()
    assert main(["render", bundle, "--out", str(out), "--chunk", "64", "--quiet"]) == 0
    with tifffile.TiffFile(out) as tif:
        recorded = json.loads(tif.pages[0].description)
    assert (recorded["backend"], recorded["precision"]) == ("onnx", "fp32")
