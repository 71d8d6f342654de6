"""`famos render BUNDLE --out mosaic.tif`: a bundle's canvas to a tiled TIFF, in constant memory.

The output is the model's canvas unless --size, --scale or --print-size (with --dpi) asks for
another: one model renders any size (the style keeps its trained pixel scale, the content is
resampled onto the new canvas). --region then picks a part of that output canvas.

--ray auto|HOST:PORT renders the strips on a Ray cluster's workers (one per GPU, or per CPU slot),
which also compress the TIFF tiles; the file is the same, byte for byte, as a local render's.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys


# A 10-gigapixel mural is a real order; a 100-gigapixel one is more likely a typo in --size.
MAX_PIXELS = 2**34


def main(argv: list[str] | None = None) -> int:
    from famos.cluster import add_cluster_arguments
    from famos.rendering import DEFAULT_CHUNK
    from famos.runners import add_runner_arguments
    from famos.tiff import add_tiff_arguments
    from famos.units import add_size_arguments

    parser = argparse.ArgumentParser(prog="famos render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=pathlib.Path, help="bundle folder written by `famos export`")
    parser.add_argument("--out", type=pathlib.Path, required=True, help=".tif/.tiff (tiled) or .png (small canvases)")
    parser.add_argument("--content", type=pathlib.Path, help="new content image, resampled onto the output canvas")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--region", help="X,Y,W,H: render only this part of the output canvas")
    parser.add_argument("--chunk", type=int, help=f"output chunk side in pixels (default: {DEFAULT_CHUNK}; with "
                        "a torch backend on CUDA the largest whose window fits in half the free GPU memory)")
    parser.add_argument("--preview", type=pathlib.Path, help="also write a downscaled overview PNG")
    parser.add_argument("--workers", type=int, help="threads preparing chunk inputs (default: 2; on CUDA a "
                        "quarter of the cores, at least 2: a GPU renders faster than one thread resamples)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse outputs over this many pixels (default {MAX_PIXELS}, about 17 gigapixels)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_size_arguments(parser)
    add_runner_arguments(parser)
    add_tiff_arguments(parser)
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)

    from famos.bundle import load_bundle
    from famos.canvas import load_rgb
    from famos.cluster import cluster_options
    from famos.errors import UserError
    from famos.planning import Rect
    from famos.renderer import Renderer, describe, render_png, render_tiff
    from famos.rendering import RenderSettings
    from famos.runners import runner_options
    from famos.tiff import tiff_options
    from famos.units import output_size

    suffix = args.out.suffix.lower()
    if suffix not in (".tif", ".tiff", ".png"):
        raise UserError(f"--out {args.out}: use a .tif, .tiff or .png file name")
    if not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: folder {args.out.parent} does not exist")
    options = tiff_options(args)
    cluster = cluster_options(args)
    bundle = load_bundle(args.bundle)
    trained = bundle.spec.canvas
    settings = RenderSettings(
        seed=args.seed,
        chunk=DEFAULT_CHUNK if args.chunk is None else args.chunk,
        region=Rect.parse(args.region) if args.region else None,
        size=output_size(canvas=(trained.height, trained.width), size=args.size, scale=args.scale,
                         print_size=args.print_size, dpi=args.dpi),
        prepare_workers=prepare_workers(args.device) if args.workers is None else args.workers,
    )
    if args.dpi is None and not args.print_size:
        from famos.renderer import trained_resolution

        options = trained_resolution(bundle, options)
    if args.print_size and settings.size is not None:
        # the resolution tags print exactly the size asked for (to the pixel), not the rounded DPI's
        from famos.units import dpi_for_print_size, parse_print_size

        height, width = settings.size
        options = dataclasses.replace(options, dpi=dpi_for_print_size(
            width_px=width, height_px=height, print_size=parse_print_size(args.print_size)))
    if settings.size is not None and not args.quiet:
        height, width = settings.size
        if abs((width / height) / (trained.width / trained.height) - 1) > 0.01:
            print(f"famos render: note: {width}x{height} has other proportions than the model's canvas "
                  f"{trained.width}x{trained.height}: the content is stretched to fill it", file=sys.stderr)
    content = load_rgb(args.content) if args.content else None
    pool = None
    if cluster is not None:
        from famos.cluster import WorkerPool

        pool = WorkerPool(cluster, runner_options(args))
    try:
        renderer = Renderer(bundle, runner_options(args), cluster=pool)
        if args.chunk is None:
            settings = dataclasses.replace(settings, chunk=renderer.default_chunk(settings))
            if settings.chunk != DEFAULT_CHUNK and not args.quiet:
                print(f"famos render: chunks of {settings.chunk} px (what half the free GPU memory holds)", file=sys.stderr)
        if suffix != ".png":  # last, once everything else is known to work
            check_budget(args, settings, bundle, options)
        if suffix == ".png":
            render_png(renderer, args.out, settings=settings, content=content)
            print(f"wrote {args.out}")
            return 0
        with ProgressBar(enabled=not args.quiet, pixels=_output_pixels(settings, bundle)) as bar:
            report = render_tiff(
                renderer, args.out, settings=settings, options=options, content=content,
                preview=args.preview, progress=bar.update,
            )
    finally:
        if pool is not None:
            pool.close()
    print(describe(report))
    return 0


def prepare_workers(device: str) -> int:
    import os

    return max(2, (os.cpu_count() or 1) // 4) if device.startswith("cuda") else 2


def _output_pixels(settings, bundle) -> tuple[int, int]:
    """(height, width) of what is rendered: the region, or the output canvas."""
    if settings.region is not None:
        return settings.region.height, settings.region.width
    canvas = bundle.spec.canvas
    return settings.size or (canvas.height, canvas.width)


def check_budget(args, settings, bundle, options) -> None:
    """Before a long render: the pixel limit, then one line with the pixels, the expected file and
    the free disk at the output; a file that cannot fit is refused now, not after hours."""
    import shutil

    from famos.errors import UserError
    from famos.tiff import expected_bytes

    height, width = _output_pixels(settings, bundle)
    if height * width > args.max_pixels:
        raise UserError(f"output {width}x{height} = {height * width / 1e6:,.0f} MP: over the limit of "
                        f"{args.max_pixels / 1e6:,.0f} MP (--max-pixels raises it)")
    needs = expected_bytes(height, width, options)
    free = shutil.disk_usage(args.out.parent).free
    if needs > free:
        raise UserError(f"--out {args.out}: the file needs about {needs / 1e6:,.0f} MB, "
                        f"{free / 1e6:,.0f} MB are free there")
    if not args.quiet:
        print(f"famos render: {width}x{height} = {height * width / 1e6:,.1f} MP, a file of about "
              f"{needs / 1e6:,.0f} MB ({options.compression.value}), {free / 1e6:,.0f} MB free at {args.out.parent}",
              file=sys.stderr)


class ProgressBar:
    """Megapixels done, MP/s and ETA on stderr (tqdm when installed, plain lines otherwise); once
    the first chunk is timed, one line with the expected time of the whole render."""

    def __init__(self, *, enabled: bool, pixels: tuple[int, int] | None = None):
        self.enabled = enabled and _has_tqdm()
        self.said = not enabled
        self.bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, progress) -> None:
        if not self.said and progress.pixels_done and progress.seconds > 0:
            from famos.units import duration

            self.said = True
            total = progress.seconds * progress.pixels_total / progress.pixels_done
            print(f"famos render: first chunk in {progress.seconds:.1f} s; expected about {duration(total)} in all",
                  file=sys.stderr)
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=progress.pixels_total / 1e6, unit="MP", file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} MP [{elapsed}<{remaining}, {rate_fmt}]")
        self.bar.n = progress.pixels_done / 1e6
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
