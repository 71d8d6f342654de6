"""Export invariants: every backend of a bundle equals the eager model (random and border windows),
chunked ONNX rendering equals the eager whole-canvas pass, bundles describe and verify themselves,
a damaged bundle is refused with a one-line error, and the ONNX path runs without torch."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import tiny_model  # noqa: E402
from conftest import write_checkpoint as save_checkpoint  # noqa: E402
from famos.bundle import load_bundle  # noqa: E402
from famos.errors import BundleError  # noqa: E402
from famos.runners import Backend, RunnerOptions, open_runner  # noqa: E402
from famos.export.parity import (  # noqa: E402
    FP16_TOLERANCE,
    ONNX_TOLERANCE,
    TORCHSCRIPT_TOLERANCE,
    max_differences,
    parity_windows,
)
from famos.export.writer import ExportOptions, export_bundle  # noqa: E402
from famos.canvas import to_unit_range  # noqa: E402
from famos.cli import main as famos_main  # noqa: E402
from famos.config import BlendMode, CanvasConfig, Fold, GeneratorConfig, NoiseConfig, NoisePlacement, Precision  # noqa: E402
from famos.checkpoint import load_generator  # noqa: E402
from famos.torch_runners import DeviceSettings, EagerRunner  # noqa: E402
from famos.planning import Rect  # noqa: E402
from famos.chunk_loop import WindowInputs, plan_for, render_chunks, render_strips  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
NOISE = NoiseConfig(n_global=1, n_local=2, n_periodic=1)

CASES = {
    "memory-mirror-noise": (
        GeneratorConfig(depth=3, width=8, n_templates=4, noise=NOISE),
        CanvasConfig(101, 147, style_scale=0.7, fold=Fold.MIRROR, template_seed=3),
        ExportOptions(fp16=True, parity_windows=1),
    ),
    "memory-wrap-plain": (
        GeneratorConfig(depth=2, width=4, n_templates=3),
        CanvasConfig(101, 147, fold=Fold.WRAP, template_seed=5),
        ExportOptions(diagnostics=False, parity_windows=1),
    ),
    "parametric": (
        GeneratorConfig(depth=3, width=4, n_templates=0, blend=BlendMode.PAINT, noise=NoiseConfig(n_local=2)),
        CanvasConfig(101, 147),
        ExportOptions(parity_windows=1),
    ),
    "input-noise-residual": (
        GeneratorConfig(
            depth=2, width=8, n_templates=2, n_res_blocks=1, skip=False,
            noise=NoiseConfig(n_local=2, placement=NoisePlacement.INPUT),
        ),
        CanvasConfig(101, 147, style_scale=1.3, fold=Fold.MIRROR),
        ExportOptions(parity_windows=1),
    ),
}


def write_checkpoint(path: pathlib.Path, config: GeneratorConfig, canvas: CanvasConfig, *, seed: int = 0):
    """A checkpoint as training writes it, from a random-weight model with random BatchNorm."""
    model = tiny_model(config, canvas, seed)
    content = np.random.default_rng(seed + 1).integers(0, 256, (70, 95, 3), dtype=np.uint8)
    provenance = {
        "steps": 42,
        "style_hashes": ["a" * 64, "b" * 64],
        "content_hashes": ["c" * 64],
        "style_files": ["s0.png", "s1.png"],
        "content_files": ["content.png"],
    }
    save_checkpoint(path, model, content=content, step=42, provenance=provenance)
    return model, content


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """case -> (bundle, eager model, default content); exported once for the module."""
    out = {}
    for name, (config, canvas, options) in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        model, content = write_checkpoint(folder / "checkpoint.safetensors", config, canvas)
        bundle = export_bundle(folder / "checkpoint.safetensors", folder / "bundle", options=options)
        out[name] = (bundle, model, content)
    return out


def window_inputs(bundle, content, seed=9):
    spec = bundle.spec
    return WindowInputs(config=spec.generator, canvas=spec.canvas, content=to_unit_range(content), seed=seed)


@pytest.mark.parametrize("case", list(CASES))
def test_backends_equal_eager_on_random_and_border_windows(bundles, case):
    bundle, model, content = bundles[case]
    spec = bundle.spec
    aligned = spec.canvas.aligned(spec.generator.alignment)
    windows = parity_windows(spec, count=4, seed=1) + [Rect(0, 0, *aligned)]
    assert any(w.y == 0 and w.x == 0 for w in windows) and any(w.bottom == aligned[0] for w in windows)
    reference = EagerRunner(model)
    diffs = max_differences(
        reference,
        {
            "onnx": open_runner(bundle, RunnerOptions(backend=Backend.ONNX)),
            "torchscript": open_runner(bundle, RunnerOptions(backend=Backend.TORCHSCRIPT)),
            "torch": open_runner(bundle, RunnerOptions(backend=Backend.TORCH)),
        },
        inputs=window_inputs(bundle, content),
        windows=windows,
    )
    assert diffs["onnx"] <= ONNX_TOLERANCE, diffs
    assert diffs["torchscript"] <= TORCHSCRIPT_TOLERANCE, diffs
    assert diffs["torch"] == 0.0, diffs  # weights round-trip exactly through safetensors
    recorded = bundle.manifest.export["parity_max_abs"]
    assert recorded["onnx"] <= ONNX_TOLERANCE and recorded["torchscript"] <= TORCHSCRIPT_TOLERANCE


def test_batch_of_windows(bundles):
    bundle, model, content = bundles["memory-mirror-noise"]
    inputs = window_inputs(bundle, content)
    parts = [inputs(Rect(0, 0, 48, 64)), inputs(Rect(56, 88, 48, 64))]
    batch = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    expected = EagerRunner(model)(*batch)
    for backend in (Backend.ONNX, Backend.TORCHSCRIPT):
        assert np.abs(open_runner(bundle, RunnerOptions(backend=backend))(*batch) - expected).max() <= ONNX_TOLERANCE


def test_chunked_onnx_render_equals_eager_whole_canvas(bundles):
    bundle, model, content = bundles["memory-mirror-noise"]
    spec = bundle.spec
    inputs = window_inputs(bundle, content)
    whole_plan = plan_for(spec.generator, spec.canvas, chunk_size=10**6)
    (_, whole), = render_chunks(whole_plan, inputs, EagerRunner(model))
    whole8 = np.concatenate(list(render_strips(whole_plan, inputs, EagerRunner(model))))
    plan = plan_for(spec.generator, spec.canvas, chunk_size=40)
    assert len(plan.chunks) > 4
    onnx_run = open_runner(bundle, RunnerOptions(backend=Backend.ONNX))
    float_diff = max(
        float(np.abs(pixels - whole[:, r.y : r.bottom, r.x : r.right]).max())
        for r, pixels in render_chunks(plan, inputs, onnx_run)
    )
    assert float_diff <= ONNX_TOLERANCE
    chunked8 = np.concatenate(list(render_strips(plan, inputs, onnx_run)))
    assert chunked8.shape == whole8.shape == (101, 147, 3)
    # Identical 8-bit values, except possibly where the eager value lies within the measured float
    # difference of a rounding boundary (k + 0.5 levels): there either rounding is right. In
    # practice (~2e-7 apart) no value differs; the band keeps the test honest on other CPUs.
    levels = (whole[:, :101, :147].transpose(1, 2, 0) + 1.0) * 127.5
    ambiguous = np.abs(levels - np.floor(levels) - 0.5) <= float_diff * 127.5
    differs = chunked8 != whole8
    assert not np.any(differs & ~ambiguous), f"{int(np.sum(differs & ~ambiguous))} 8-bit values differ"
    assert np.sum(differs) <= 1e-4 * differs.size


def test_graph_is_folded_and_holds_the_memory(bundles):
    bundle, model, _ = bundles["memory-mirror-noise"]
    graph = onnx.load(str(bundle.path / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert "BatchNormalization" not in ops and {"Conv", "Gather", "Softmax"} <= ops
    assert [i.name for i in graph.graph.input] == ["content", "origin", "canvas", "noise"]
    assert [o.name for o in graph.graph.output] == ["image", "alpha", "mix_argmax"]
    style_pixels = model.sampler.style_pixels.numel()
    assert any(np.prod(t.dims) == style_pixels for t in graph.graph.initializer), "style images not constants"
    assert graph.opset_import[0].version == bundle.manifest.opset >= 17
    height_axes = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert height_axes == ["batch", "", "height", "width"]
    import onnxruntime as ort

    session = open_runner(bundle, RunnerOptions(backend=Backend.ONNX)).session
    assert session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_models_without_noise_have_no_noise_input(bundles):
    bundle, model, content = bundles["memory-wrap-plain"]
    assert [t.name for t in bundle.manifest.inputs] == ["content", "origin", "canvas"]
    assert [t.name for t in bundle.manifest.outputs] == ["image"]
    content_window, origin, noise, _ = window_inputs(bundle, content)(Rect(0, 0, 32, 48))
    assert noise is None
    assert open_runner(bundle, RunnerOptions(backend=Backend.ONNX))(content_window, origin, None).shape == (1, 3, 32, 48)


def test_fp16_graph_within_stated_tolerance(bundles):
    bundle, model, content = bundles["memory-mirror-noise"]
    assert bundle.manifest.fp16_file == "model_fp16.onnx" and bundle.manifest.fp16_tolerance == FP16_TOLERANCE
    graph = onnx.load(str(bundle.path / "model_fp16.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    conv_weights = {n.input[1] for n in graph.graph.node if n.op_type == "Conv"}
    kinds = {t.data_type for t in graph.graph.initializer if t.name in conv_weights}
    assert kinds == {onnx.TensorProto.FLOAT16}
    # onnxruntime's CPU provider runs it (numerical check only; speed is for CUDA / TensorRT).
    diffs = max_differences(
        EagerRunner(model),
        {"onnx": open_runner(bundle, RunnerOptions(backend=Backend.ONNX, precision=Precision.FP16)), "torch": EagerRunner(load_generator(bundle.path / "generator.safetensors")[0], settings=DeviceSettings(precision=Precision.FP16))},
        inputs=window_inputs(bundle, content),
        windows=parity_windows(bundle.spec, count=2, seed=2),
    )
    assert 0 < diffs["onnx"] <= FP16_TOLERANCE and 0 < diffs["torch"] <= FP16_TOLERANCE, diffs


def test_cli_export_and_inspect(tmp_path, capsys):
    config = GeneratorConfig(depth=2, width=4, n_templates=2, noise=NoiseConfig(n_local=1))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_checkpoint(run_dir / "checkpoint.safetensors", config, CanvasConfig(60, 90))
    out = tmp_path / "bundle"
    assert famos_main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "content.png", "generator.safetensors", "manifest.json", "model.onnx", "model.ts", "preview.png",
    ]
    assert famos_main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("canvas      90x60 px", "halo", "N = 2 templates", "input     noise", "model.onnx",
                     "42 training steps", "s0.png", "checksums match", "ONNX checker passed"):
        assert expected in text, expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["style_hashes"] == ["a" * 64, "b" * 64]
    assert manifest["export"]["batchnorm"].startswith("folded")
    # An existing bundle is replaced only when asked.
    assert famos_main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert famos_main(["export", str(run_dir), "--out", str(out), "--overwrite"]) == 0
    assert famos_main(["inspect", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "run"]  # nothing left aside


def damaged_copy(bundle, tmp_path, name, damage):
    folder = tmp_path / name
    shutil.copytree(bundle.path, folder)
    damage(folder)
    return folder


def flip_byte(path: pathlib.Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: flip_byte(f / "model.onnx"), "model.onnx: checksum mismatch"),
        (lambda f: truncate(f / "model.ts"), "model.ts: truncated"),
        (lambda f: (f / "generator.safetensors").unlink(), "generator.safetensors: missing"),
        (lambda f: truncate(f / "manifest.json"), "manifest.json: not valid JSON"),
    ],
    ids=["tampered-onnx", "truncated-torchscript", "missing-weights", "truncated-manifest"],
)
def test_damaged_bundle_is_refused(bundles, tmp_path, capsys, damage, message):
    bundle, _, _ = bundles["memory-wrap-plain"]
    folder = damaged_copy(bundle, tmp_path, "damaged", damage)
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)
    assert famos_main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_manifest_cannot_point_outside_the_bundle(bundles, tmp_path):
    bundle, _, _ = bundles["memory-wrap-plain"]

    def escape(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["../outside.bin"] = {"sha256": "0" * 64, "bytes": 1}
        (folder / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(BundleError, match="not a plain file"):
        load_bundle(damaged_copy(bundle, tmp_path, "escape", escape))


def test_onnx_render_path_imports_no_torch(bundles):
    bundle, _, _ = bundles["memory-mirror-noise"]
    script = f"""
import sys
import numpy as np
from famos.bundle import load_bundle
from famos.runners import open_runner
from famos.canvas import to_unit_range
from famos.planning import Rect
from famos.chunk_loop import WindowInputs
bundle = load_bundle({str(bundle.path)!r})
spec = bundle.spec
inputs = WindowInputs(config=spec.generator, canvas=spec.canvas,
                      content=to_unit_range(bundle.default_content()), seed=0)
image = open_runner(bundle)(*inputs(Rect(8, 16, 48, 64)))
assert image.shape == (1, 3, 48, 64) and np.isfinite(image).all()
assert "torch" not in sys.modules, "the ONNX path imported torch"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def rehashed(folder: pathlib.Path, name: str) -> None:
    """The manifest's entry for ``name`` made to match the file again: a hostile bundle can do that."""
    from famos.files import file_sha256

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def renamed_input(folder: pathlib.Path) -> None:
    model = onnx.load(str(folder / "model.onnx"))
    old = model.graph.input[0].name
    model.graph.input[0].name = old + "_renamed"
    for node in model.graph.node:
        node.input[:] = [n + "_renamed" if n == old else n for n in node.input]
    onnx.save(model, str(folder / "model.onnx"))


def nan_weights(folder: pathlib.Path) -> None:
    model = onnx.load(str(folder / "model.onnx"))
    weights = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
    array = onnx.numpy_helper.to_array(weights).copy()
    array[...] = np.nan
    weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
    onnx.save(model, str(folder / "model.onnx"))


@pytest.mark.parametrize("damage, message", [
    (renamed_input, "model.onnx: cannot render"),
    (nan_weights, "model.onnx: renders non-finite pixels"),
], ids=["graph-input-renamed", "nan-weights"])
def test_inspect_refuses_a_bundle_that_cannot_render(bundles, tmp_path, capsys, damage, message):
    bundle, _, _ = bundles["memory-wrap-plain"]
    folder = damaged_copy(bundle, tmp_path, "unrenderable", damage)
    rehashed(folder, "model.onnx")
    load_bundle(folder)  # checksums and spec pass: only rendering tells
    assert famos_main(["inspect", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "valid" not in captured.out
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err


def test_inspect_renders_every_graph(bundles, capsys):
    bundle, _, _ = bundles["memory-mirror-noise"]
    assert famos_main(["inspect", str(bundle.path)]) == 0
    assert "px window (model.onnx, model_fp16.onnx)" in capsys.readouterr().out
