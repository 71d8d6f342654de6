"""Runner choices: one device grammar for every command, misaligned windows refused, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from famos.bundle import load_bundle  # noqa: E402
from famos.cli import main  # noqa: E402
from famos.errors import BackendUnavailable, UserError  # noqa: E402
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


@pytest.mark.parametrize("backend", list(Backend))
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
