"""The FAMOS generator: a U-Net that predicts mixing logits, a blend mask and a painted image,
plus the memory of templates it copies from.

    Ã   = softmax_N(A)                       # TemplateMixer
    I_M = Σ_n Ã_n · M_n
    I   = α ⊙ I_G + (1 − α) ⊙ I_M            # Blend

``FamosGenerator.forward`` takes a window of the canvas (content, its global origin, noise) and
returns the window of the output. Templates M_n are sampled *inside* the module from the style
images held as buffers, so an exported graph needs no template input. Forwards are tensors in,
tensors out, without data-dependent Python branches (export-friendly).

    level 0   x0 = [content, ψ0, (input noise)] ──────────────────skip──────────┐
    level 1   e1 = Down(x0)  ─────────────────────────skip─────────┐            │
    ...                                                            │            │
    level d   ed = Down(...) ; h_d = [e_d, ψ_d, noise] → Up → [u, e_{d-1}, ψ] → ... → Up → N+4

The last Up's convolution emits the N + 4 channels (the paper); with ``full_resolution_head`` it
emits ``width`` channels instead, concatenated with x0 and mapped to N + 4 by a head convolution.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from famos.canvas import template_offsets, to_unit_range
from famos.config import BlendMode, CanvasConfig, Fold, GeneratorConfig, NoisePlacement

RGB = 3


class DownBlock(nn.Module):
    """Stride-2 convolution, BatchNorm (from the 2nd level on), LeakyReLU 0.2."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, batch_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class UpBlock(nn.Module):
    """Nearest ×2 upsampling then a stride-1 convolution (never a transposed convolution,
    which leaves checkerboard artefacts), BatchNorm, ReLU, optional residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, n_res_blocks: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.res = nn.Sequential(*[ResBlock(out_channels, kernel) for _ in range(n_res_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.act(self.norm(self.conv(self.up(x)))))


class OutputUpBlock(nn.Module):
    """The paper's last decoder block: nearest x2 upsampling and a convolution straight to the
    output channels (no normalization or activation: the mixer, the blend and tanh follow)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class FamosUNet(nn.Module):
    """The U-Net of the paper; outputs N + 4 channels: mixing logits A, blend logit, painted image.
    ``extra_inputs`` channels more at the input (the refine U-Net's copied and first images)."""

    def __init__(self, config: GeneratorConfig, extra_inputs: int = 0):
        super().__init__()
        self.config = config
        # Plain attributes for forward: TorchScript cannot read the config dataclass.
        self.depth, self.skip, self.coord_copy = config.depth, config.skip, config.coord_copy
        self.full_resolution_head = config.full_resolution_head
        self.multi_scale, self.n_templates = config.multi_scale, config.n_templates
        mixed = RGB if config.multi_scale else 0  # the templates mixed at a decoder level
        outputs = config.n_templates + 4
        depth, k = config.depth, config.kernel
        psi = 2 if config.coord_copy else 0
        input_noise = config.noise.channels if config.noise.placement is NoisePlacement.INPUT else 0
        bottleneck_noise = config.noise.channels - input_noise
        self.in_channels = RGB + psi + input_noise + extra_inputs

        widths = [self.in_channels] + [config.level_width(level) for level in range(1, depth + 1)]
        self.down = nn.ModuleList()
        for level in range(1, depth + 1):
            extra = psi if level > 1 else 0  # ψ is already part of x0
            self.down.append(DownBlock(widths[level - 1] + extra, widths[level], k, batch_norm=level > 1))

        self.up = nn.ModuleList()
        state = widths[depth] + psi + bottleneck_noise  # h_depth
        for level in range(depth, 0, -1):  # up block from `level` to `level - 1`
            if level == 1 and not self.full_resolution_head:
                self.up.append(OutputUpBlock(state, outputs, k))
                break
            out = config.width * 2 ** max(level - 2, 0)
            self.up.append(UpBlock(state, out, k, config.n_res_blocks))
            if level - 1 > 0:
                state = out + (widths[level - 1] if config.skip else 0) + psi + mixed
            else:
                state = out + (self.in_channels if config.skip else psi)
        self.head = nn.Conv2d(state, outputs, k, padding=k // 2) if self.full_resolution_head else nn.Identity()

    def output_convolution(self) -> nn.Conv2d:
        """The convolution whose channels are the N + 4 outputs, whichever decoder the model has."""
        return self.head if self.full_resolution_head else self.up[-1].conv

    def forward(
        self, x0: torch.Tensor, psi: List[torch.Tensor], noise: Optional[torch.Tensor], pooled: List[torch.Tensor]
    ) -> torch.Tensor:
        # x0: (B, in_channels, h, w); psi[level]: (B, 2, h/2^level, w/2^level); noise at the bottleneck;
        # pooled[level - 1]: the templates (B, N, 3, h/2^level, w/2^level), multi-scale only (else []).
        coord = self.coord_copy
        skips: List[torch.Tensor] = [x0]
        x = x0
        for level, block in enumerate(self.down, start=1):
            if coord and level > 1:
                x = torch.cat([x, psi[level - 1]], dim=1)
            x = block(x)
            skips.append(x)
        if coord:
            x = torch.cat([x, psi[self.depth]], dim=1)
        if noise is not None:
            x = torch.cat([x, noise], dim=1)
        for i, block in enumerate(self.up):
            level = self.depth - 1 - i  # the level this block outputs
            x = block(x)
            if level > 0 or self.full_resolution_head:  # else x is the output channels already
                parts = [x]
                if self.skip:
                    parts.append(skips[level])
                if coord and (level > 0 or not self.skip):
                    parts.append(psi[level])
                if self.multi_scale and level > 0:  # copy at this scale: mix from the first N channels
                    weights = torch.softmax(x[:, : self.n_templates], dim=1)
                    mixed = (weights[:, :, None] * pooled[level - 1]).sum(dim=1)
                    if x.is_contiguous(memory_format=torch.channels_last):  # CastUNet's NHWC: keep it
                        mixed = mixed.contiguous(memory_format=torch.channels_last)
                    parts.append(mixed)
                x = torch.cat(parts, dim=1)
        return self.head(x)  # (B, N + 4, h, w); Identity without the full-resolution head


class CanvasCoordinates(nn.Module):
    """ψ: canonical coordinates in [-1, 1] over the aligned canvas, at every U-Net level.

    The value of a level-l cell is the average of ψ over its 2^l × 2^l pixels (ψ is linear, so the
    average is the value at the cell centre): identical to average-pooling the full-resolution ψ.
    The canvas is the trained one unless a window passes another (a render at another size: ψ
    then spans that canvas, as the paper's coordinates do for any output).
    """

    def __init__(self, canvas_height: int, canvas_width: int, depth: int):
        super().__init__()
        self.canvas_height = canvas_height
        self.canvas_width = canvas_width
        self.depth = depth

    def forward(
        self, origin: torch.Tensor, height: int, width: int, canvas: Optional[torch.Tensor] = None
    ) -> List[torch.Tensor]:
        # origin: (B, 2) int64 pixel coordinates of the window, multiples of 2^depth;
        # canvas: (B, 2) int64 aligned canvas (height, width), None: the trained canvas.
        if canvas is None:
            size = torch.tensor([[self.canvas_height, self.canvas_width]], dtype=torch.float32, device=origin.device)
        else:
            size = canvas.to(torch.float32)
        out: List[torch.Tensor] = []
        for level in range(self.depth + 1):
            cell = 1 << level
            ys = self._axis(origin[:, 0], height // cell, cell, size[:, 0])
            xs = self._axis(origin[:, 1], width // cell, cell, size[:, 1])
            grid_y = ys[:, :, None].expand(-1, -1, xs.shape[1])
            grid_x = xs[:, None, :].expand(-1, ys.shape[1], -1)
            out.append(torch.stack([grid_y, grid_x], dim=1))
        return out

    @staticmethod
    def _axis(start: torch.Tensor, cells: int, cell: int, canvas: torch.Tensor) -> torch.Tensor:
        index = torch.arange(cells, device=start.device, dtype=torch.float32)
        first = torch.div(start, cell, rounding_mode="floor").to(torch.float32)
        return (first[:, None] + index[None, :] + 0.5) * (2.0 * cell / canvas[:, None]) - 1.0


class TemplateSampler(nn.Module):
    """The memory M: N templates tiling the style images, sampled for a window on the device.

        M_n(y, x) = style_(n mod K)( fold(eta_n + floor(s * (y, x))) )

    All style images are packed into one flat (3, P) buffer; each template knows its image's start
    in it, size and offset, so sampling is one gather for all templates (no per-template loop).
    """

    def __init__(self, styles: List[np.ndarray], offsets: np.ndarray, canvas: CanvasConfig):
        super().__init__()
        n_templates = len(offsets)
        flat, starts, sizes = [], [], []
        position = 0
        for image in styles:  # float32 (H, W, 3) in [-1, 1]
            flat.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).reshape(RGB, -1))
            starts.append(position)
            sizes.append(image.shape[:2])
            position += image.shape[0] * image.shape[1]
        k = len(styles)
        pick = [n % k for n in range(n_templates)]
        self.register_buffer("style_pixels", torch.cat(flat, dim=1) if flat else torch.zeros(RGB, 0))
        self.register_buffer("start", torch.tensor([starts[i] for i in pick], dtype=torch.int64))
        self.register_buffer("size_y", torch.tensor([sizes[i][0] for i in pick], dtype=torch.int64))
        self.register_buffer("size_x", torch.tensor([sizes[i][1] for i in pick], dtype=torch.int64))
        self.register_buffer("offset_y", torch.from_numpy(offsets[:, 0].copy()))
        self.register_buffer("offset_x", torch.from_numpy(offsets[:, 1].copy()))
        self.mirror = canvas.fold is Fold.MIRROR
        self.scale = float(canvas.style_scale)

    def forward(self, origin: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # origin (B, 2) -> templates (B, N, 3, h, w)
        fy = self._fold(self._axis(origin[:, 0], height), self.offset_y, self.size_y)  # (B, N, h)
        fx = self._fold(self._axis(origin[:, 1], width), self.offset_x, self.size_x)  # (B, N, w)
        index = (self.start[None, :, None] + fy * self.size_x[None, :, None])[:, :, :, None] + fx[:, :, None, :]
        batch, n = index.shape[0], index.shape[1]
        pixels = self.style_pixels.index_select(1, index.reshape(-1))  # (3, B*N*h*w)
        return pixels.reshape(3, batch, n, height, width).permute(1, 2, 0, 3, 4)  # 3: RGB

    def _axis(self, start: torch.Tensor, length: int) -> torch.Tensor:
        coords = start[:, None] + torch.arange(length, device=start.device, dtype=torch.int64)[None, :]
        if self.scale != 1.0:
            coords = torch.floor(coords.to(torch.float32) * self.scale).to(torch.int64)
        return coords  # (B, length) style pixels before the offset

    def _fold(self, coords: torch.Tensor, offset: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return fold(coords[:, None, :] + offset[None, :, None], size[None, :, None], self.mirror)  # (B, N, length)


def fold(coords: torch.Tensor, size: torch.Tensor, mirror: bool) -> torch.Tensor:
    """Style-pixel coordinates folded into [0, size): mirrored (period 2 * size: every edge meets
    its own reflection, so no seam shows) or wrapped (period size).

    The one fold of the templates (by the canvas's fold) and of training's real style patches
    (training.data, always mirrored). Torch, not numpy, because the generator is scripted for
    export and TorchScript compiles no numpy.
    """
    if mirror:
        m = torch.remainder(coords, 2 * size)
        return torch.where(m >= size, 2 * size - 1 - m, m)
    return torch.remainder(coords, size)


class TemplateMixer(nn.Module):
    """Copy from memory: per-pixel softmax over the N templates, weighted sum of their pixels."""

    def forward(self, logits: torch.Tensor, templates: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # logits (B, N, h, w), templates (B, N, 3, h, w) -> I_M (B, 3, h, w), weights (B, N, h, w)
        weights = torch.softmax(logits, dim=1)
        copied = (weights[:, :, None] * templates).sum(dim=1)
        return copied, weights


class Blend(nn.Module):
    """Paint anew where copying fails: I = α I_G + (1 − α) I_M (or copy only / paint only)."""

    def __init__(self, mode: BlendMode):
        super().__init__()
        self.mode = mode.value

    def forward(self, painted: torch.Tensor, copied: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if self.mode == "copy":
            return copied
        if self.mode == "paint":
            return painted
        return alpha * painted + (1 - alpha) * copied


class FamosGenerator(nn.Module):
    """G with its memory: a window of content in, the same window of the mosaic out."""

    def __init__(self, config: GeneratorConfig, canvas: CanvasConfig, styles: List[np.ndarray], offsets: np.ndarray):
        super().__init__()
        self.config = config
        self.canvas = canvas
        aligned_h, aligned_w = canvas.aligned(config.alignment)
        self.n_templates = config.n_templates
        self.coord_copy = config.coord_copy
        self.input_noise = config.noise.placement is NoisePlacement.INPUT and config.noise.channels > 0
        self.coordinates = CanvasCoordinates(aligned_h, aligned_w, config.depth)
        self.unet = FamosUNet(config)
        self.multi_scale, self.depth = config.multi_scale, config.depth
        # zero or one: a ModuleList so that TorchScript compiles no refine code for a model without it
        self.refiners = nn.ModuleList([FamosUNet(refine_config(config), extra_inputs=3 * RGB)] if config.refine else [])
        self.sampler = TemplateSampler(styles, offsets, canvas)
        self.mixer = TemplateMixer()
        self.blend = Blend(config.blend)

    def forward(
        self,
        content: torch.Tensor,
        origin: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        canvas: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """content (B, 3, h, w) in [-1, 1]; origin (B, 2) int64; noise (B, C, h', w') or None;
        canvas (B, 2) int64, the aligned canvas being rendered (None: the trained one).

        Returns (image I, alpha α, mix weights Ã, painted I_G, copied I_M); h, w multiples of 2^depth.
        Only ψ depends on the canvas size: templates and noise are functions of global position.
        """
        height, width = content.shape[2], content.shape[3]
        psi = self.coordinates(origin, height, width, canvas)
        parts = [content]
        if self.coord_copy:
            parts.append(psi[0])
        bottleneck_noise = noise
        if self.input_noise and noise is not None:
            parts.append(noise)
            bottleneck_noise = None
        n = self.n_templates
        # the templates are sampled after the U-Net unless it mixes them itself (multi-scale), so
        # that its activations and the templates are never held at once; dropped once mixed
        templates, pooled = content[:, :0, None], torch.jit.annotate(List[torch.Tensor], [])
        if self.multi_scale:
            templates = self.sampler(origin, height, width)
            pooled = [pool_templates(templates, 1 << level) for level in range(1, self.depth)]
        x0 = torch.cat(parts, dim=1)
        out = self.unet(x0, psi, bottleneck_noise, pooled)
        pooled = pooled[:0]
        logits = out[:, :n]
        alpha = torch.sigmoid(out[:, n : n + 1])
        painted = torch.tanh(out[:, n + 1 : n + 4])
        if n > 0:
            if not self.multi_scale:
                templates = self.sampler(origin, height, width)
            copied, weights = self.mixer(logits, templates)
            templates = content[:, :0, None]
        else:
            copied, weights = torch.zeros_like(painted), logits
            alpha = torch.ones_like(alpha)
        image = self.blend(painted, copied, alpha)
        for refiner in self.refiners:  # repaint and reblend, seeing what the first pass made
            again = refiner(torch.cat([x0, copied, image, painted], dim=1), psi, bottleneck_noise, pooled)
            alpha, painted = torch.sigmoid(again[:, :1]), torch.tanh(again[:, 1:4])
            image = self.blend(painted, copied, alpha)
        return image, alpha, weights, painted, copied


def refine_config(config: GeneratorConfig) -> GeneratorConfig:
    """The refine U-Net's architecture: the first one's, emitting a blend logit and a painted image."""
    return dataclasses.replace(config, n_templates=0, blend=BlendMode.PAINT, multi_scale=False, refine=False)


def pool_templates(templates: torch.Tensor, cell: int) -> torch.Tensor:
    """Templates (B, N, 3, h, w) averaged over cell x cell blocks: the memory at a coarser level.
    Windows are aligned to 2^depth, so a window's blocks are the canvas's."""
    batch, n, channels, height, width = templates.shape
    pooled = nn.functional.avg_pool2d(templates.reshape(batch * n, channels, height, width), cell)
    return pooled.reshape(batch, n, channels, height // cell, width // cell)


class CastUNet(nn.Module):
    """The U-Net in another arithmetic between float32 tensors: the convolutions (nearly all the
    compute) run in ``dtype`` (float16 or bfloat16) and, with ``channels_last``, on NHWC tensors
    (what tensor cores and oneDNN take without a transpose), while ψ, the template gather, the
    softmax mixing and the blend stay float32. Its output is float32 in the usual layout."""

    def __init__(self, unet: nn.Module, dtype: torch.dtype = torch.float16, channels_last: bool = False):
        super().__init__()
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.unet = unet.to(dtype=dtype, memory_format=self.memory_format)

    def forward(
        self, x0: torch.Tensor, psi: List[torch.Tensor], noise: Optional[torch.Tensor], pooled: List[torch.Tensor]
    ) -> torch.Tensor:
        cast_noise = None if noise is None else self._cast(noise)
        cast_pooled = [p.to(dtype=self.dtype) for p in pooled]  # 5-D: no channels-last layout
        return self.unet(self._cast(x0), [self._cast(p) for p in psi], cast_noise, cast_pooled).float().contiguous()

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype=self.dtype, memory_format=self.memory_format)


def cast_unets(model: FamosGenerator, dtype: torch.dtype, *, channels_last: bool = False) -> None:
    """Every U-Net of ``model`` (the first, and the refine one) as a ``CastUNet``, in place."""
    model.unet = CastUNet(model.unet, dtype, channels_last=channels_last)
    model.refiners = nn.ModuleList([CastUNet(r, dtype, channels_last=channels_last) for r in model.refiners])


def convolution_costs(model: nn.Module, *inputs: Optional[torch.Tensor]) -> List[Tuple[nn.Conv2d, Tuple[int, ...], int]]:
    """Every convolution one ``model(*inputs)`` runs, in order: (the layer, its input's shape, its
    multiply-adds). What benchmarks and the GPU check count a model's cost and peak share by."""
    costs: List[Tuple[nn.Conv2d, Tuple[int, ...], int]] = []

    def record(module, args, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        costs.append((module, tuple(args[0].shape), output[0].numel() * module.in_channels // module.groups * kernel))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return costs


def build_generator(config: GeneratorConfig, canvas: CanvasConfig, styles: list[np.ndarray]) -> FamosGenerator:
    """A generator (random weights) whose memory tiles ``styles`` (uint8 RGB images) on ``canvas``."""
    if config.n_templates and not styles:
        raise ValueError("a model with memory templates needs at least one style image")
    offsets = template_offsets(canvas, [s.shape[:2] for s in styles], config.n_templates)
    return FamosGenerator(config, canvas, [to_unit_range(s) for s in styles], offsets)
