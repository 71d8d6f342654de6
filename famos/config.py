"""Frozen configuration dataclasses shared by training, export and rendering.

Everything that defines a trained model lives here and travels inside checkpoints and bundle
manifests as plain JSON (``to_dict`` / ``from_dict``), so loading never needs pickle.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

# Architecture bounds. They are generous for real use (the paper trains depth 4-5, kernel 5, width
# 80, tens of templates) and exist so that a typo is one error line instead of a process the kernel
# kills for memory, or a run that never starts: a 999 kernel or 50 levels of doubling widths asks
# for terabytes of weights, and every template is gathered per pixel and per step.
MAX_DEPTH = 8
MAX_KERNEL = 15
MAX_WIDTH = 1024
MAX_TEMPLATES = 256
MAX_RES_BLOCKS = 16
MAX_NOISE_CHANNELS = 64  # per kind of noise
# The largest convolution (kernel^2 x widest level^2 weights): 2^28 is 1 GiB of float32 before
# gradients and Adam's two moments; the paper's widest (kernel 5, 1280 channels) is about a sixth of it.
MAX_CONV_WEIGHTS = 2**28
# Seeds go to torch.Generator.manual_seed and numpy's default_rng, which both take 64-bit unsigned.
MAX_SEED = 2**64 - 1


def _require(ok: bool, field: str, value: Any, why: str) -> None:
    if not ok:
        raise ValueError(f"{field} = {value!r} {why}")


def oversized_convolution(*, kernel: int, channels: int) -> str | None:
    """Why a level of ``channels`` channels (in and out) with ``kernel`` kernels is over
    MAX_CONV_WEIGHTS, or None; shared by the generator and training's discriminator."""
    weights = kernel**2 * channels**2
    if weights <= MAX_CONV_WEIGHTS:
        return None
    return (f"makes a {channels}-channel level with {kernel}x{kernel} kernels: {weights:,} weights in one "
            f"convolution, over the limit of {MAX_CONV_WEIGHTS:,}; lower the width, depth or kernel")


class Fold(enum.Enum):
    """How a style image is continued beyond its border when tiling the memory templates."""

    WRAP = "wrap"  # periodic tiling
    MIRROR = "mirror"  # reflect at every border (kaleidoscope), seamless for any image


class NoisePlacement(enum.Enum):
    BOTTLENECK = "bottleneck"  # one value per bottleneck cell (2^depth pixels), as in the paper
    INPUT = "input"  # one value per pixel, concatenated to the generator input


class BlendMode(enum.Enum):
    """How the final image is formed from the painted image I_G and the copied image I_M."""

    BLEND = "blend"  # I = alpha * I_G + (1 - alpha) * I_M (the paper)
    COPY = "copy"  # I = I_M: pure mosaic from memory
    PAINT = "paint"  # I = I_G: purely parametric (also forced when n_templates == 0)


class Precision(enum.Enum):
    """Arithmetic of the convolutions, in training (autocast) and in rendering (the U-Net cast)."""

    FP32 = "fp32"
    BF16 = "bf16"  # bfloat16: float32's range, 8 bits of mantissa; fast on CPUs with AMX/AVX-512 and on GPUs
    FP16 = "fp16"  # float16: more mantissa, less range; training uses loss scaling


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    n_global: int = 0  # constant over the canvas, per (seed, channel)
    n_local: int = 0  # per cell, counter-based hash of (seed, channel, cell y, cell x)
    n_periodic: int = 0  # sin of a seeded plane wave over cell coordinates
    placement: NoisePlacement = NoisePlacement.BOTTLENECK

    def __post_init__(self) -> None:
        for name in ("n_global", "n_local", "n_periodic"):
            value = getattr(self, name)
            _require(0 <= value <= MAX_NOISE_CHANNELS, name, value, f"must be from 0 to {MAX_NOISE_CHANNELS}")

    @property
    def channels(self) -> int:
        return self.n_global + self.n_local + self.n_periodic


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the FAMOS U-Net (the paper's defaults)."""

    depth: int = 4  # number of stride-2 levels; alignment is 2**depth
    width: int = 80  # channels of the first level, doubling per level
    kernel: int = 5
    skip: bool = True  # U-Net skip connections
    bottleneck_width: int | None = None  # channels at the bottleneck (default: doubling rule)
    coord_copy: bool = True  # concatenate psi (average-pooled) at every level
    noise: NoiseConfig = NoiseConfig()
    n_res_blocks: int = 0  # residual blocks after each decoder up-convolution
    n_templates: int = 30  # N; 0 is the purely parametric U-Net
    blend: BlendMode = BlendMode.BLEND
    # False (the paper, the seed's NetUskip): the last up-block's convolution emits the N + 4 output
    # channels. True: it emits `width` channels, the input is concatenated, and a head convolution
    # maps them to N + 4: a second full-resolution layer, 1.4x the compute of the default U-Net.
    # Models made before the field existed have the head (``ModelSpec.from_json``).
    full_resolution_head: bool = False
    # The seed's multi-scale mixing (its NetU_MultiScale, the paper's outlook): every decoder level
    # but the last predicts mixing weights from its first N channels and mixes the templates,
    # average-pooled to that level, into 3 more channels for the next up block.
    multi_scale: bool = False
    # The seed's refine: a second U-Net (this architecture, N = 0) takes the content, ψ, the copied
    # image, the first blend and its painted image, and predicts a new painted image and blend mask
    # over the same copied image (the chain of the paper's Figure 8): 1.8x the multiply-adds.
    refine: bool = False

    def __post_init__(self) -> None:
        _require(1 <= self.depth <= MAX_DEPTH, "depth", self.depth, f"must be from 1 to {MAX_DEPTH}")
        _require(1 <= self.width <= MAX_WIDTH, "width", self.width, f"must be from 1 to {MAX_WIDTH}")
        _require(
            1 <= self.kernel <= MAX_KERNEL and self.kernel % 2 == 1, "kernel", self.kernel,
            f"must be odd, from 1 to {MAX_KERNEL}",
        )
        _require(self.bottleneck_width is None or self.bottleneck_width >= 1, "bottleneck_width",
                 self.bottleneck_width, "must be >= 1")
        _require(0 <= self.n_templates <= MAX_TEMPLATES, "n_templates", self.n_templates,
                 f"must be from 0 to {MAX_TEMPLATES}")
        _require(0 <= self.n_res_blocks <= MAX_RES_BLOCKS, "n_res_blocks", self.n_res_blocks,
                 f"must be from 0 to {MAX_RES_BLOCKS}")
        # The widest level bounds the width, the depth and the bottleneck width together.
        widest = max(self.level_width(level) for level in range(1, self.depth + 1))
        oversized = oversized_convolution(kernel=self.kernel, channels=widest)
        if widest == self.bottleneck_width:
            _require(oversized is None, "bottleneck_width", self.bottleneck_width, str(oversized))
        _require(oversized is None, "width", self.width, str(oversized))
        if self.n_templates == 0 and self.blend is not BlendMode.PAINT:
            raise ValueError("n_templates = 0 (parametric U-Net) needs blend mode 'paint'")
        if self.multi_scale:
            _require(self.n_templates > 0, "multi_scale", True, "needs memory templates (n_templates > 0)")
            _require(self.depth >= 2, "multi_scale", True, "needs depth >= 2 (a decoder level above the output)")
            # the up blocks' narrowest output (width channels) holds the N mixing logits
            _require(self.width >= self.n_templates, "multi_scale", True,
                     f"needs width >= n_templates: the decoder's {self.width} channels hold the "
                     f"{self.n_templates} mixing logits of each level")
        if self.refine:
            _require(self.blend is BlendMode.BLEND, "refine", True,
                     "needs blend mode 'blend' (it repaints and reblends over the copied image)")

    @property
    def alignment(self) -> int:
        return 2**self.depth

    def level_width(self, level: int) -> int:
        """Channels of encoder level ``level`` (1-based); the bottleneck may be overridden."""
        if level == self.depth and self.bottleneck_width is not None:
            return self.bottleneck_width
        return self.width * 2 ** (level - 1)


@dataclasses.dataclass(frozen=True)
class CanvasConfig:
    """The output image a model is trained for, and how its memory templates tile it."""

    height: int  # delivered pixels
    width: int
    style_scale: float = 1.0  # style pixels per canvas pixel in the templates
    fold: Fold = Fold.MIRROR
    template_seed: int = 0  # seeds the per-template offsets eta_n

    def __post_init__(self) -> None:
        _require(self.height >= 1, "canvas height", self.height, "must be positive")
        _require(self.width >= 1, "canvas width", self.width, "must be positive")
        _require(math.isfinite(self.style_scale) and self.style_scale > 0, "style_scale", self.style_scale,
                 "must be a finite positive number")
        _require(0 <= self.template_seed <= MAX_SEED, "template_seed", self.template_seed, "must be from 0 to 2**64 - 1")

    def aligned(self, alignment: int) -> tuple[int, int]:
        """Canvas size rounded up to the alignment: what the generator actually computes."""
        return align_up(self.height, alignment), align_up(self.width, alignment)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a generator before loading its weights."""

    generator: GeneratorConfig
    canvas: CanvasConfig
    style_sizes: tuple[tuple[int, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": to_dict(self.generator),
            "canvas": to_dict(self.canvas),
            "style_sizes": [list(s) for s in self.style_sizes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        generator = data["generator"]
        if isinstance(generator, dict) and "full_resolution_head" not in generator:
            generator = {**generator, "full_resolution_head": True}  # written before the paper's decoder was the default
        return cls(
            generator=from_dict(GeneratorConfig, generator),
            canvas=from_dict(CanvasConfig, data["canvas"]),
            style_sizes=tuple((int(h), int(w)) for h, w in data["style_sizes"]),
        )


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    return (value // alignment) * alignment


def to_dict(config: Any, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass tree as plain JSON values (Enums by value), without the fields ``leave_out``
    names (machine settings, payloads stored elsewhere)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        if field.name in leave_out:
            continue
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of ``to_dict``; unknown keys are an error naming the key."""
    import typing

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kind = hints[name]
        base = _plain_type(kind)
        if dataclasses.is_dataclass(base) and isinstance(value, dict):
            value = from_dict(base, value)
        elif isinstance(base, type) and issubclass(base, enum.Enum):
            value = base(value)
        elif base is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _plain_type(hint: Any) -> Any:
    """``X | None`` -> X; other hints unchanged."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _plain_type(args[0])
    return origin or hint
