"""A render request's command-line options, shared by `famos render` and `famos client render|submit`:
one set of flags, one conversion to ``famos.request.RenderRequest``."""

from __future__ import annotations

import pathlib

from famos.request import RenderRequest


def add_request_arguments(parser, *, chunk_default: str) -> None:
    """The request's options: content, seed, region, chunk, output size and the TIFF options.
    ``chunk_default`` says what 0 means at this door."""
    from famos.tiff_cli import add_tiff_arguments
    from famos.units import add_size_arguments

    parser.add_argument("--content", type=pathlib.Path, help="new content image, resampled onto the output canvas")
    parser.add_argument("--seed", type=int, default=RenderRequest.seed, help="noise seed")
    parser.add_argument("--region", help="X,Y,W,H: render only this part of the output canvas")
    parser.add_argument("--chunk", type=int, default=RenderRequest.chunk,
                        help=f"output chunk side in pixels (default 0: {chunk_default})")
    add_size_arguments(parser)
    add_tiff_arguments(parser)


def request_from_args(args, model: str) -> RenderRequest:
    """The request the options describe; the content file is read here (PNG and JPEG as they are)."""
    from famos.canvas import encoded_image
    from famos.planning import Rect
    from famos.tiff_cli import tiff_options_from_args

    size = None
    if args.size:
        from famos.units import output_size

        size = output_size(canvas=None, size=args.size)  # WxH parsed and checked here, where it was typed
    return RenderRequest(
        model=model,
        seed=args.seed,
        region=Rect.parse(args.region) if args.region else None,
        size=size,
        scale=args.scale,
        print_size=args.print_size,
        chunk=args.chunk,
        content=encoded_image(args.content) if args.content else b"",
        content_name=str(args.content) if args.content else "content_image",
        tiff=tiff_options_from_args(args),
    )
