"""The paper's decoder is the default; models of the decoder before it (a full-resolution head)
keep loading, exporting and rendering as they did.

`fixtures/legacy_head/` was written by the code before the change (commit 8cba043): a tiny bundle
exported by `famos export` and `render.png`, its `famos render --seed 5` on onnxruntime fp32.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model
from famos.cli import main as famos
from famos.config import CanvasConfig, GeneratorConfig, ModelSpec

LEGACY = pathlib.Path(__file__).parent / "fixtures" / "legacy_head"


def conv_macs_per_pixel(config: GeneratorConfig) -> float:
    from famos.generator import convolution_costs

    model = tiny_model(config, CanvasConfig(64, 64))
    costs = convolution_costs(model, torch.zeros(1, 3, 64, 64), torch.zeros(1, 2, dtype=torch.int64))
    return sum(cost for _, _, cost in costs) / 64**2


def test_the_default_decoder_is_the_papers_and_costs_a_seventh_less():
    paper, head = GeneratorConfig(), GeneratorConfig(full_resolution_head=True)
    assert not paper.full_resolution_head
    model = tiny_model(paper, CanvasConfig(64, 64)).unet
    assert isinstance(model.head, torch.nn.Identity)
    assert model.output_convolution() is model.up[-1].conv  # the last up-block emits the output
    assert model.output_convolution().out_channels == paper.n_templates + 4
    # bench/gpu_check.py's count for the head was 861,375 multiply-adds per pixel: 1.43x the paper's
    assert conv_macs_per_pixel(head) == 861_375
    assert conv_macs_per_pixel(head) / conv_macs_per_pixel(paper) == pytest.approx(1.43, abs=0.01)


def test_a_spec_without_the_field_is_a_model_with_the_head():
    spec = json.loads((LEGACY / "bundle" / "manifest.json").read_text())["spec"]
    assert "full_resolution_head" not in spec["generator"]
    assert ModelSpec.from_json(spec).generator.full_resolution_head
    assert ModelSpec.from_json(ModelSpec.from_json(spec).to_json()) == ModelSpec.from_json(spec)


def _pixels(path: pathlib.Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("backend", ["onnx", "torch", "torchscript"])
def test_a_bundle_made_before_renders_as_before(backend, tmp_path, capsys):
    """The onnx and TorchScript graphs are the old code's own; the torch backend rebuilds the
    generator with today's code from the weights (strictly: every tensor has its layer)."""
    out = tmp_path / "render.png"
    assert famos(["render", str(LEGACY / "bundle"), "--out", str(out), "--seed", "5", "--quiet",
                  "--backend", backend, "--precision", "fp32"]) == 0
    diff = np.abs(_pixels(out) - _pixels(LEGACY / "render.png"))
    # the same bytes on the machine that made it; another CPU's float32 may round one value another way
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (backend, diff.max(), (diff > 0).mean())


def test_a_checkpoint_made_before_exports_again_with_its_head(tmp_path, capsys):
    bundle = tmp_path / "again"
    assert famos(["export", str(LEGACY / "bundle" / "generator.safetensors"), "--out", str(bundle),
                  "--content", str(LEGACY / "bundle" / "content.png")]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["spec"]["generator"]["full_resolution_head"] is True
    assert manifest["halo"] == json.loads((LEGACY / "bundle" / "manifest.json").read_text())["halo"]
    out = tmp_path / "render.png"
    assert famos(["render", str(bundle), "--out", str(out), "--seed", "5", "--quiet", "--backend", "onnx"]) == 0
    assert np.abs(_pixels(out) - _pixels(LEGACY / "render.png")).max() <= 1


def test_train_takes_the_head_as_an_option():
    from famos.training.cli import _resolve, build_parser, configs

    for argv, head in (([], False), (["--full-resolution-head"], True)):
        options, given = _resolve(build_parser().parse_args(["--preset", "tiny", "--out", "x", *argv]))
        generator, _, _ = configs(options, given=given, content_size=(451, 300))
        assert generator.full_resolution_head is head
