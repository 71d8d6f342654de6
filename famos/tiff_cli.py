"""The TIFF options on a command line: one argparse group for `famos render`, `famos client render`
and `famos batch`, and the ``TiffOptions`` its values make. Defaults and choices come from
``TiffOptions`` and the enums, so a default is written once."""

from __future__ import annotations

from famos.errors import InvalidField
from famos.tiff_options import (
    DEFAULT_LEVELS,
    BigTiff,
    Compression,
    Intent,
    ResolutionUnit,
    Subsampling,
    TiffOptionError,
    TiffOptions,
)
from famos.units import is_metric


def add_tiff_arguments(parser) -> None:
    """The TIFF options shared by `famos render`, `famos client render` and `famos batch`."""
    defaults = TiffOptions()
    group = parser.add_argument_group("TIFF output")
    group.add_argument("--compression", choices=[c.value for c in Compression], default=defaults.compression.value,
                       help=f"of the tiles (default {defaults.compression.value}; jpeg is lossy and 8-bit only)")
    group.add_argument("--quality", type=int, default=defaults.quality, help="JPEG quality 1..100 (jpeg only)")
    group.add_argument("--level", type=int, default=defaults.level,
                       help=f"deflate 1..9 or zstd 1..22: higher is smaller and slower (default: deflate "
                            f"{DEFAULT_LEVELS[Compression.DEFLATE]}, zstd {DEFAULT_LEVELS[Compression.ZSTD]})")
    group.add_argument("--tile", type=int, default=defaults.tile, help="tile side, a multiple of 16")
    group.add_argument("--dpi", type=float, default=defaults.dpi, help="resolution tags (pixels per inch)")
    group.add_argument("--pyramid", action="store_true", help="add reduced-resolution levels as SubIFDs")
    group.add_argument("--bigtiff", choices=[b.value for b in BigTiff], default=defaults.bigtiff.value,
                       help="64-bit offsets: auto only when the file could pass 4 GiB; no is refused up front for "
                            "a canvas that could not fit (default auto)")
    group.add_argument("--no-predictor", action="store_true", help="no horizontal differencing predictor")
    group.add_argument("--no-icc", action="store_true", help="do not embed the sRGB ICC profile")
    group.add_argument("--jpeg-subsampling", choices=[s.value for s in Subsampling], default=defaults.subsampling.value,
                       help="JPEG chroma subsampling (default 4:2:0; 4:4:4 keeps full colour detail)")
    # no default: a print size in cm or mm asks for cm (see tiff_options_from_args)
    group.add_argument("--resolution-unit", choices=[u.value for u in ResolutionUnit],
                       help="unit of the resolution tags (default: cm for a print size in cm or mm, else inch)")
    group.add_argument("--bits", type=int, choices=(8, 16), default=defaults.bits,
                       help="bits per sample: 16 for prints graded further (lossless codecs; the predictor applies)")
    group.add_argument("--output-profile", default=defaults.output_profile, metavar="SHOP.icc",
                       help="convert to this RGB or CMYK ICC profile (LittleCMS), tile by tile, and embed it")
    group.add_argument("--intent", choices=[i.value for i in Intent], default=defaults.intent.value,
                       help="rendering intent of that conversion (default relative colorimetric)")
    group.add_argument("--no-black-point-compensation", action="store_true",
                       help="convert without black-point compensation")
    group.add_argument("--artist", default=defaults.artist, help="Artist tag: who made the image")
    group.add_argument("--copyright", default=defaults.copyright, help="Copyright tag, e.g. '(c) 2026 Jane Doe'")
    group.add_argument("--tiff-workers", type=int, default=defaults.encode_workers,
                       help="threads compressing tiles (default 0: one per core)")


def tiff_options_from_args(args) -> TiffOptions:
    """TiffOptions from parsed ``add_tiff_arguments`` options; bad values raise a UserError."""
    try:
        return TiffOptions(
            tile=args.tile,
            compression=Compression(args.compression),
            quality=args.quality,
            level=args.level,
            predictor=not args.no_predictor,
            dpi=args.dpi,
            bigtiff=BigTiff(args.bigtiff),
            pyramid=args.pyramid,
            icc_profile=not args.no_icc,
            unit=ResolutionUnit(args.resolution_unit) if args.resolution_unit else (
                ResolutionUnit.CM if is_metric(getattr(args, "print_size", None)) else ResolutionUnit.INCH),
            subsampling=Subsampling(args.jpeg_subsampling),
            artist=args.artist,
            copyright=args.copyright,
            bits=args.bits,
            output_profile=args.output_profile,
            intent=Intent(args.intent),
            black_point_compensation=not args.no_black_point_compensation,
            encode_workers=args.tiff_workers,
        )
    except TiffOptionError:
        raise
    except ValueError as err:  # an unknown enum value; argparse's choices normally catch it first
        raise InvalidField("tiff", str(err)) from None
