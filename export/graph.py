"""The frozen inference graph a bundle holds, and its export to ONNX and TorchScript.

The graph is the generator *with its memory*: style pixels, template starts and offsets are
buffers, so they become constants of the graph and templates are gathered on the device from the
window origin. Its interface:

    content  float32 (batch, 3, height, width)   in [-1, 1], height/width multiples of 2^depth
    origin   int64   (batch, 2)                  global (y, x) of the window
    canvas   int64   (batch, 2)                  aligned (height, width) of the canvas rendered
    noise    float32 (batch, C, noise_height, noise_width)   only when the model has noise channels
    ->
    image    float32 (batch, 3, height, width)
    alpha    float32 (batch, 1, height, width)   blend mask (diagnostics)
    mix_argmax int64 (batch, 1, height, width)   dominant template per pixel (diagnostics, N > 0)

BatchNorm is folded into the preceding convolutions before export (eval-mode statistics are
constants), so both ONNX and TorchScript carry plain convolutions.
"""

from __future__ import annotations

import copy
import enum
import pathlib
import warnings
from typing import Optional

import torch
from torch import nn

from famos.bundle import (
    ALPHA_OUTPUT,
    CANVAS_INPUT,
    CONTENT_INPUT,
    IMAGE_OUTPUT,
    MIX_OUTPUT,
    NOISE_INPUT,
    ORIGIN_INPUT,
    TensorInfo,
)
from famos.config import ModelSpec, NoisePlacement
from famos.generator import FamosGenerator, cast_unets

OPSET = 17  # the tracer's default; TensorRT 8.6+ parses it
DYNAMO_OPSET = 18  # the torch.export-based exporter starts at 18


class OnnxExporter(enum.Enum):
    TRACER = "tracer"  # torch.onnx.export(dynamo=False): TorchScript-based, about 1 s
    DYNAMO = "dynamo"  # torch.onnx.export(dynamo=True): torch.export-based, about 20 s


class InferenceGraph(nn.Module):
    """What a bundle freezes: the generator and its memory, returning the image and, with
    diagnostics, the blend mask and the dominant template."""

    def __init__(self, generator: FamosGenerator, *, diagnostics: bool):
        super().__init__()
        self.generator = generator
        self.diagnostics = diagnostics
        self.mix_diagnostic = diagnostics and generator.n_templates > 0

    def forward(
        self, content: torch.Tensor, origin: torch.Tensor, canvas: torch.Tensor, noise: Optional[torch.Tensor] = None
    ):
        image, alpha, weights, _, _ = self.generator(content, origin, noise, canvas)
        if not self.diagnostics:
            return image
        if not self.mix_diagnostic:
            return image, alpha
        return image, alpha, torch.argmax(weights, dim=1, keepdim=True)


def fold_batchnorm(module: nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the convolution just before it, in place: the blocks'
    (conv, norm) pairs and the (Conv2d, BatchNorm2d) neighbours inside residual bodies."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in list(module.modules()):
        if isinstance(getattr(block, "norm", None), nn.BatchNorm2d) and isinstance(getattr(block, "conv", None), nn.Conv2d):
            block.conv = fuse_conv_bn_eval(block.conv, block.norm)
            block.norm = nn.Identity()
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    left = [name for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"BatchNorm layers not preceded by a convolution: {left}")


def inference_graph(generator: FamosGenerator, *, fp16: bool, diagnostics: bool) -> InferenceGraph:
    """An eval-mode copy of ``generator`` with BatchNorm folded (and the U-Net in float16)."""
    frozen = copy.deepcopy(generator).eval().float()
    fold_batchnorm(frozen)
    if fp16:
        cast_unets(frozen, torch.float16)
    return InferenceGraph(frozen, diagnostics=diagnostics).eval()


def interface(spec: ModelSpec, *, diagnostics: bool) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Graph inputs and outputs with their dynamic axes."""
    config = spec.generator
    pixels = ("height", "width")
    inputs = [
        TensorInfo(CONTENT_INPUT, "float32", ("batch", 3, *pixels)),
        TensorInfo(ORIGIN_INPUT, "int64", ("batch", 2)),
        TensorInfo(CANVAS_INPUT, "int64", ("batch", 2)),
    ]
    if config.noise.channels:
        cells = pixels if config.noise.placement is NoisePlacement.INPUT else ("noise_height", "noise_width")
        inputs.append(TensorInfo(NOISE_INPUT, "float32", ("batch", config.noise.channels, *cells)))
    outputs = [TensorInfo(IMAGE_OUTPUT, "float32", ("batch", 3, *pixels))]
    if diagnostics:
        outputs.append(TensorInfo(ALPHA_OUTPUT, "float32", ("batch", 1, *pixels)))
        if config.n_templates:
            outputs.append(TensorInfo(MIX_OUTPUT, "int64", ("batch", 1, *pixels)))
    return tuple(inputs), tuple(outputs)


def example_inputs(spec: ModelSpec, inputs: tuple[TensorInfo, ...]) -> tuple[torch.Tensor, ...]:
    """Tracing inputs. Batch 2 and unequal, non-unit cell counts, so that no exporter mistakes a
    dynamic axis for a constant (torch.export specializes sizes 0 and 1)."""
    alignment = spec.generator.alignment
    sizes = {"batch": 2, "height": 3 * alignment, "width": 5 * alignment, "noise_height": 3, "noise_width": 5}
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for info in inputs:
        shape = [sizes[a] if isinstance(a, str) else a for a in info.shape]
        if info.name == ORIGIN_INPUT:
            tensors.append(torch.tensor([[0, 0], [alignment, 2 * alignment]], dtype=torch.int64))
        elif info.name == CANVAS_INPUT:
            height, width = spec.canvas.aligned(alignment)
            tensors.append(torch.tensor([[height, width], [7 * alignment, 11 * alignment]], dtype=torch.int64))
        else:
            tensors.append(torch.rand(shape, generator=generator) * 2 - 1)
    return tuple(tensors)


def export_onnx(
    graph: InferenceGraph,
    path: pathlib.Path,
    *,
    spec: ModelSpec,
    inputs: tuple[TensorInfo, ...],
    outputs: tuple[TensorInfo, ...],
    exporter: OnnxExporter,
) -> int:
    """Write ``graph`` as one self-contained ONNX file, check it; returns the opset used."""
    import onnx

    example = example_inputs(spec, inputs)
    names = dict(input_names=[i.name for i in inputs], output_names=[o.name for o in outputs])
    if exporter is OnnxExporter.TRACER:
        opset = OPSET
        dynamic_axes = {
            t.name: {axis: label for axis, label in enumerate(t.shape) if isinstance(label, str)}
            for t in inputs + outputs
        }
        with warnings.catch_warnings():
            # The tracer warns at every shape -> int conversion in the window arithmetic; those are
            # exported symbolically (the parity tests run sizes other than the traced one).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, example, str(path), dynamo=False, opset_version=opset,
                dynamic_axes=dynamic_axes, do_constant_folding=True, **names,
            )
    else:
        opset = DYNAMO_OPSET
        program = torch.onnx.export(
            graph, example, dynamo=True, opset_version=opset,
            dynamic_shapes=_dynamic_shapes(spec, inputs), verbose=False, **names,
        )
        program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return opset


def _dynamic_shapes(spec: ModelSpec, inputs: tuple[TensorInfo, ...]) -> dict[str, dict[int, object]]:
    from torch.export import Dim

    alignment = spec.generator.alignment
    batch, cells_y, cells_x = Dim("batch"), Dim("cells_y"), Dim("cells_x")
    axes = {
        "batch": batch,
        "height": alignment * cells_y,
        "width": alignment * cells_x,
        "noise_height": cells_y,
        "noise_width": cells_x,
    }
    return {t.name: {i: axes[a] for i, a in enumerate(t.shape) if isinstance(a, str)} for t in inputs}


def export_torchscript(graph: InferenceGraph, path: pathlib.Path, *, spec: ModelSpec, inputs: tuple[TensorInfo, ...]) -> None:
    """Script the generator, trace the thin output wrapper around it, and save.

    The generator is *scripted* so that its window arithmetic stays symbolic and ``torch.arange``
    follows the input's device (a traced arange would be pinned to the CPU): the module can be
    moved to a GPU with ``map_location``. Only the wrapper, whose outputs vary with the
    diagnostics option, is traced.
    """
    with warnings.catch_warnings():
        # torch.jit's deprecation notice: TorchScript stays in the bundle while consumers load it.
        warnings.simplefilter("ignore")
        wrapper = InferenceGraph(torch.jit.script(graph.generator), diagnostics=graph.diagnostics)
        traced = torch.jit.trace(wrapper, example_inputs(spec, inputs), check_trace=False)
        torch.jit.save(traced, str(path))
