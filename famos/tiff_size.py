"""How large a TIFF will be, decided before any pixel is seen: the estimate a disk check and a
disk-full message quote, and whether the file must be a BigTIFF (an iterator of tiles has no size,
so the writer must choose up front and the choice must hold for any content)."""

from __future__ import annotations

from famos.pyramid import reduced_shapes
from famos.tiff_options import BigTiff, Compression, TiffOptionError, TiffOptions

_CLASSIC_LIMIT = 2**32 - 1  # classic TIFF offsets are uint32
# Tags, IFDs, ICC profile and description; generous so that AUTO never lands just over the edge.
_METADATA_MARGIN = 32 * 2**20

# Worst-case encoded size over raw size. The BigTIFF decision must hold for incompressible content
# (noise-like textures): deflate/zstd fall back to stored blocks (a few bytes per block), LZW spends
# up to 12 bits per input byte on noise (measured 1.37), baseline JPEG stays below raw even at
# quality 100 (0.66 on uniform noise).
_WORST_CASE_EXPANSION = {
    Compression.NONE: 1.0,
    Compression.DEFLATE: 1.01,
    Compression.ZSTD: 1.01,
    Compression.LZW: 1.5,
    Compression.JPEG: 1.0,
}

# Typical encoded size over raw size of a rendered mosaic (BENCHMARKS.md, bench_tiff): what
# "needs about" means in a disk-full message and in estimates before a render.
_TYPICAL_RATIO = {
    Compression.NONE: 1.05,
    Compression.DEFLATE: 0.6,
    Compression.ZSTD: 0.63,
    Compression.LZW: 0.75,
    Compression.JPEG: 0.1,
}


def _levels(height: int, width: int, options: TiffOptions) -> list[tuple[int, int]]:
    """Shapes of every image in the file: full resolution, then the pyramid's levels."""
    return [(height, width)] + (reduced_shapes(height, width, tile=options.tile) if options.pyramid else [])


def _raw_bytes(levels: list[tuple[int, int]], options: TiffOptions) -> int:
    return sum(h * w * options.samples * options.bits // 8 for h, w in levels)


def expected_bytes(height: int, width: int, options: TiffOptions) -> int:
    """About how large the file will be (pyramid included)."""
    return int(_raw_bytes(_levels(height, width, options), options) * _TYPICAL_RATIO[options.compression])


def needs_bigtiff(height: int, width: int, *, options: TiffOptions) -> bool:
    """Whether the file must be a BigTIFF; raises ValueError when NO is forced but cannot fit."""
    levels = _levels(height, width, options)
    raw = _raw_bytes(levels, options)
    # each tile of every level costs an offset and a byte count (8 bytes each in a BigTIFF)
    n_tiles = sum(-(-h // options.tile) * -(-w // options.tile) for h, w in levels)
    worst = raw * _WORST_CASE_EXPANSION[options.compression] + n_tiles * 16 + _METADATA_MARGIN
    could_exceed = worst > _CLASSIC_LIMIT
    if options.bigtiff is BigTiff.YES:
        return True
    if options.bigtiff is BigTiff.NO:
        if could_exceed:
            pyramid = " and a pyramid" if options.pyramid else ""
            raise TiffOptionError(
                "bigtiff", f"no: a {width}x{height} canvas with {options.compression.value} compression{pyramid}"
                f" could reach {worst / 2**30:.1f} GiB, past the 4 GiB a classic TIFF can address;"
                " use --bigtiff auto or yes"
            )
        return False
    return could_exceed
