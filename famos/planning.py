"""Exact, overlap-free chunk planning. Pure Python: no torch, no numpy.

Output chunks partition the region being rendered; every output pixel is computed exactly once.
Each chunk is computed from an *input window*: the chunk grown by the halo on every side, with
edges on the alignment grid (2**depth, so stride-2 layers and nearest upsampling see the same
cells as in a whole-canvas pass) and clamped to the (aligned) canvas. Clamping instead of padding
matters: at a canvas border the window's zero padding *is* the whole pass's zero padding.

The halo is the generator's receptive-field reach, computed exactly from the architecture by
propagating index intervals back through every layer of the U-Net (``receptive_reach``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from famos.config import GeneratorConfig, NoisePlacement, align_down, align_up
from famos.errors import InvalidField


@dataclasses.dataclass(frozen=True)
class Rect:
    """A pixel rectangle in canvas coordinates: rows [y, y+height), columns [x, x+width)."""

    y: int
    x: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def relative_to(self, outer: Rect) -> Rect:
        return Rect(self.y - outer.y, self.x - outer.x, self.height, self.width)

    def contains(self, inner: Rect) -> bool:
        return (
            self.y <= inner.y
            and self.x <= inner.x
            and inner.bottom <= self.bottom
            and inner.right <= self.right
        )

    @classmethod
    def parse(cls, text: str) -> Rect:
        """``X,Y,W,H`` in canvas pixels: how command lines and jobs files write a region."""
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise InvalidField("region", f"{text!r}: expected X,Y,W,H (four integers)") from None
        return cls(y=y, x=x, height=h, width=w)

    def check_inside(self, *, height: int, width: int) -> Rect:
        """This rectangle, if it is non-empty and inside a height x width canvas; the one check
        every render request's region goes through."""
        if self.height < 1 or self.width < 1 or not Rect(0, 0, height, width).contains(self):
            raise InvalidField(
                "region",
                f"x={self.x} y={self.y} width={self.width} height={self.height} is empty or outside "
                f"the canvas {width}x{height}",
            )
        return self


@dataclasses.dataclass(frozen=True)
class Halo:
    """Extra input pixels needed on each side of an output chunk (may be asymmetric)."""

    top: int
    left: int
    bottom: int
    right: int


@dataclasses.dataclass(frozen=True)
class Reach:
    """How far the generator's output at a pixel looks: ``before`` pixels up/left, ``after`` down/right."""

    before: int
    after: int


@dataclasses.dataclass(frozen=True)
class Chunk:
    row: int  # chunk row index in the plan (a row of chunks is a strip)
    col: int
    output: Rect  # the pixels this chunk delivers, canvas coordinates
    window: Rect  # the input window computed to deliver them, canvas coordinates

    @property
    def crop(self) -> Rect:
        """Where ``output`` sits inside the window's result."""
        return self.output.relative_to(self.window)


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    canvas_height: int  # the aligned canvas the generator computes on
    canvas_width: int
    region: Rect  # what is delivered
    chunk_size: int
    chunks: tuple[Chunk, ...]
    n_rows: int
    n_cols: int

    def strips(self) -> Iterator[tuple[Chunk, ...]]:
        """Rows of chunks, top to bottom; each strip spans the region's full width."""
        for row in range(self.n_rows):
            yield self.chunks[row * self.n_cols : (row + 1) * self.n_cols]

    def row_top(self, row: int) -> int:
        """The first region row that strip ``row`` delivers (``region.height`` past the last strip)."""
        if row >= self.n_rows:
            return self.region.height
        return self.chunks[row * self.n_cols].output.y - self.region.y

    @property
    def computed_pixels(self) -> int:
        return sum(c.window.pixels for c in self.chunks)

    @property
    def overhead(self) -> float:
        """Pixels computed / pixels delivered (1.0 means no halo waste)."""
        return self.computed_pixels / self.region.pixels


def receptive_reach(config: GeneratorConfig) -> Reach:
    """Exact receptive-field reach of the generator output, in canvas pixels.

    Follows the dependency intervals of one output pixel back through the U-Net, layer by layer
    (the same graph as ``famos.generator.FamosUNet``), and records at every node which pixels
    must lie inside the input window so that no zero padding is read where the whole-canvas pass
    reads data. Stride-2 layers make the reach depend on the pixel's position modulo the alignment,
    so every phase is tried and the worst is kept. ψ, noise and the templates are functions of
    global position and add no reach; multi-scale mixing is pointwise at its level. The refine
    U-Net (same architecture) reads the first one's outputs over its own reach, so the reaches chain.
    """
    alignment = config.alignment
    pad = config.kernel // 2
    base = 64 * alignment  # far from the canvas border, so no clamping interferes
    # one U-Net's reach by phase: pixel p depends on [p - before[p % A], p + after[p % A]]
    one = [_output_dependencies(config, pad, base + phase) for phase in range(alignment)]
    before = [base + phase - lo for phase, (lo, _) in enumerate(one)]
    after = [hi - base - phase for phase, (_, hi) in enumerate(one)]
    worst_before = worst_after = 0
    for phase in range(alignment):
        y = base + phase
        lo, hi = one[phase]
        if config.refine:  # every first-pass pixel the refine U-Net reads must be exact too
            lo = min(p - before[p % alignment] for p in range(lo, hi + 1))
            hi = max(p + after[p % alignment] for p in range(one[phase][0], hi + 1))
        worst_before = max(worst_before, y - lo)
        worst_after = max(worst_after, hi - y)
    return Reach(before=worst_before, after=worst_after)


def _output_dependencies(config: GeneratorConfig, pad: int, y: int) -> tuple[int, int]:
    """Lowest and highest input pixel any node on output pixel y's dependency tree touches."""
    depth = config.depth
    extent = [y, y]

    def touch(level: int, a: int, b: int) -> None:
        # Cells a..b at this level cover pixels [a * 2^level, (b + 1) * 2^level - 1].
        extent[0] = min(extent[0], a * 2**level)
        extent[1] = max(extent[1], (b + 1) * 2**level - 1)

    def res_blocks(a: int, b: int) -> tuple[int, int]:
        # Each block is two stride-1 convolutions plus the identity; the convolutions reach farther.
        return a - 2 * pad * config.n_res_blocks, b + 2 * pad * config.n_res_blocks

    def encoder(level: int, a: int, b: int) -> None:
        """Dependencies of encoder output e_level, cells a..b."""
        touch(level, a, b)
        if level == 0:
            return
        encoder(level - 1, 2 * a - pad, 2 * b + pad)  # stride-2 convolution

    def decoder(level: int, a: int, b: int) -> None:
        """Dependencies of the decoder state h_level (concat of up-path, skip, ψ), cells a..b."""
        touch(level, a, b)
        if level == depth:
            encoder(depth, a, b)
            return
        if config.skip or level == 0:
            encoder(level, a, b)  # skip connection (level 0: the input itself)
        # Up block from level+1: residual blocks, conv (stride 1), nearest upsample.
        ra, rb = res_blocks(a, b)
        touch(level, ra, rb)
        ca, cb = ra - pad, rb + pad
        touch(level, ca, cb)
        decoder(level + 1, ca // 2, cb // 2)

    if config.full_resolution_head:
        decoder(0, y - pad, y + pad)  # the head convolution maps h_0 to the N + 4 output channels
    else:
        # The last up block's convolution reads the upsampled h_1 (no residual blocks follow it).
        touch(0, y - pad, y + pad)
        decoder(1, (y - pad) // 2, (y + pad) // 2)
    return extent[0], extent[1]


def halo_for(config: GeneratorConfig) -> Halo:
    """The receptive reach rounded up to the alignment (same reach vertically and horizontally)."""
    reach = receptive_reach(config)
    before = align_up(reach.before, config.alignment)
    after = align_up(reach.after, config.alignment)
    return Halo(top=before, left=before, bottom=after, right=after)


def plan_chunks(
    *,
    canvas_height: int,
    canvas_width: int,
    region: Rect,
    chunk_size: int,
    halo: Halo,
    alignment: int,
) -> ChunkPlan:
    """Partition ``region`` into chunks of at most ``chunk_size`` and give each its input window.

    ``canvas_height``/``canvas_width`` are the aligned canvas (multiples of ``alignment``); the
    region must lie inside it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk size = {chunk_size} must be positive")
    if canvas_height % alignment or canvas_width % alignment:
        raise ValueError(
            f"canvas {canvas_width}x{canvas_height} is not a multiple of the alignment {alignment}"
        )
    canvas = Rect(0, 0, canvas_height, canvas_width)
    if region.height < 1 or region.width < 1 or not canvas.contains(region):
        raise ValueError(
            f"region {region.width}x{region.height} at ({region.x},{region.y}) "
            f"is empty or outside the canvas {canvas_width}x{canvas_height}"
        )

    def spans(start: int, length: int) -> list[tuple[int, int]]:
        return [(s, min(chunk_size, start + length - s)) for s in range(start, start + length, chunk_size)]

    def window(start: int, size: int, before: int, after: int, limit: int) -> tuple[int, int]:
        lo = max(0, align_down(start - before, alignment))
        hi = min(limit, align_up(start + size + after, alignment))
        return lo, hi - lo

    rows = spans(region.y, region.height)
    cols = spans(region.x, region.width)
    chunks = []
    for r, (y, h) in enumerate(rows):
        wy, wh = window(y, h, halo.top, halo.bottom, canvas_height)
        for c, (x, w) in enumerate(cols):
            wx, ww = window(x, w, halo.left, halo.right, canvas_width)
            chunks.append(Chunk(row=r, col=c, output=Rect(y, x, h, w), window=Rect(wy, wx, wh, ww)))
    return ChunkPlan(
        canvas_height=canvas_height,
        canvas_width=canvas_width,
        region=region,
        chunk_size=chunk_size,
        chunks=tuple(chunks),
        n_rows=len(rows),
        n_cols=len(cols),
    )


def noise_level(config: GeneratorConfig) -> int:
    """The U-Net level whose cells carry one noise value: the bottleneck or the input pixels."""
    return config.depth if config.noise.placement is NoisePlacement.BOTTLENECK else 0
