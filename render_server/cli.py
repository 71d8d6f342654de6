"""`famos render BUNDLE --out mosaic.tif`: a bundle's canvas to a tiled TIFF, in constant memory.

The output is the model's canvas unless --size, --scale or --print-size (with --dpi) asks for
another: one model renders any size (the style keeps its trained pixel scale, the content is
resampled onto the new canvas). --region then picks a part of that output canvas.

--ray auto|HOST:PORT renders the strips on a Ray cluster's workers (one per GPU, or per CPU slot),
which also compress the TIFF tiles; the file is the same, byte for byte, as a local render's.

--content FOLDER renders every image in it (the frames of a video) with the same seed and options,
to --out FOLDER/<stem>.tif (and --preview FOLDER/<stem>.png), the bundle loaded once, resumably.
Each output records the bundle's sha256, its image's sha256 and the options; a re-run skips the
outputs whose record matches and whose file is whole, renders again the ones a folder render made
otherwise or left cut short, and refuses other files at output names unless --overwrite.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def main(argv: list[str] | None = None) -> int:
    from famos.cli_parser import Parser
    from famos.cluster import add_cluster_arguments
    from famos.memory import DEFAULT_CHUNK_HELP
    from famos.request import MAX_PIXELS
    from famos.request_args import add_request_arguments
    from famos.runners import add_runner_arguments

    parser = Parser(prog="famos render", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=pathlib.Path, help="bundle folder written by `famos export`")
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help=".tif/.tiff (tiled) or .png (small canvases); with a --content folder, a folder "
                        "(created if missing) for one <stem>.tif per image")
    parser.add_argument("--preview", type=pathlib.Path, help="also write a downscaled overview PNG; with a "
                        "--content folder, a folder for one <stem>.png per image")
    parser.add_argument("--workers", type=int, help="threads preparing chunk inputs (default: 2; on CUDA a "
                        "quarter of the cores, at least 2: a GPU renders faster than one thread resamples)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse outputs over this many pixels (default {MAX_PIXELS}, about 17 gigapixels)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace --out and --preview if they exist; with "
                        "a --content folder, files at output names that are not famos folder-render outputs (its "
                        "own stale outputs are rendered again anyway, its done ones skipped)")
    add_request_arguments(parser, chunk_default=DEFAULT_CHUNK_HELP, content_folders=True)
    add_runner_arguments(parser)
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)

    from famos.bundle import load_bundle
    from famos.cluster import cluster_options
    from famos.errors import UserError
    from famos.outputs import check_output
    from famos.progress import ProgressLines
    from famos.previews import render_png
    from famos.renderer import Renderer, render_tiff_task
    from famos.request import AdmissionLimits, resolve
    from famos.request_args import is_folder, request_from_args
    from famos.runners import runner_options

    folder = None
    suffix = args.out.suffix.lower()
    if args.content is not None and is_folder(args.content):
        from famos.render_server.folder import plan_folder, render_folder

        folder = plan_folder(args.content, out=args.out, preview=args.preview, overwrite=args.overwrite)
        # the options of every image's request; each brings its own content
        request = request_from_args(argparse.Namespace(**{**vars(args), "content": None}), args.bundle.name)
    else:
        if suffix not in (".tif", ".tiff", ".png"):
            raise UserError(f"--out {args.out}: use a .tif, .tiff or .png file name")
        if not args.out.parent.is_dir():
            raise UserError(f"--out {args.out}: folder {args.out.parent} does not exist")
        check_output(args.out, option="--out", inputs=(args.content,), overwrite=args.overwrite)
        if args.preview is not None:
            if not args.preview.parent.is_dir():
                raise UserError(f"--preview {args.preview}: folder {args.preview.parent} does not exist")
            check_output(args.preview, option="--preview", inputs=(args.content, args.out), overwrite=args.overwrite)
        request = request_from_args(args, args.bundle.name)
    cluster = cluster_options(args)
    bundle = load_bundle(args.bundle)
    pool = None
    if cluster is not None:
        from famos.cluster import WorkerPool

        pool = WorkerPool(cluster, runner_options(args))
    try:
        renderer = Renderer(bundle, runner_options(args), cluster=pool)
        limits = AdmissionLimits(max_pixels=args.max_pixels, hint=" (--max-pixels raises it)")
        if folder is not None:
            return render_folder(folder, renderer=renderer, request=request, limits=limits,
                                 prepare_workers=args.workers, quiet=args.quiet, notes=_notes)
        render = resolve(request, renderer, limits=limits, prepare_workers=args.workers)
        if not args.quiet:
            _notes(render, renderer)
        if suffix == ".png":
            render_png(renderer, args.out, render.task)
            print(f"wrote {args.out}")
            return 0
        free = render.estimate.check_disk(args.out)
        if not args.quiet:
            e = render.estimate
            print(f"famos render: {e.width}x{e.height} = {e.pixels / 1e6:,.1f} MP, a file of about "
                  f"{e.tiff_bytes / 1e6:,.0f} MB ({render.tiff.compression.value}), {free / 1e6:,.0f} MB free at "
                  f"{args.out.parent}", file=sys.stderr)
        lines = ProgressLines("famos render", render.estimate.pixels, unit="MP", scale=1e6, enabled=not args.quiet)
        with lines:
            report = render_tiff_task(renderer, args.out, render.task, render.tiff, preview=args.preview,
                                      progress=lambda done: lines.update(done.pixels_done, done.seconds))
    finally:
        if pool is not None:
            pool.close()
    print(describe(report))
    return 0


def _notes(render, renderer: Renderer) -> None:
    """What the user did not ask for but should know: a stretched content, a chunk that memory made
    smaller than the device's usual."""
    from famos.chunk_loop import DEFAULT_CHUNK
    from famos.memory import CPU_MAX_CHUNK
    from famos.values import unseeded

    settings = render.task.settings
    model = render.task.description["trained_canvas"]
    if settings.size is not None:
        height, width = settings.size
        if abs((width / height) / (model["width"] / model["height"]) - 1) > 0.01:
            print(f"famos render: note: {width}x{height} has other proportions than the model's canvas "
                  f"{model['width']}x{model['height']}: the content is stretched to fill it", file=sys.stderr)
    unchanged = unseeded(render.request.seed, renderer.spec.generator.noise.channels)
    if unchanged:
        print(f"famos render: note: {unchanged}", file=sys.stderr)
    usual = CPU_MAX_CHUNK if renderer.options.device == "cpu" else DEFAULT_CHUNK
    if not render.request.chunk and settings.chunk != usual:
        print(f"famos render: chunks of {settings.chunk} px (what half the free memory holds)", file=sys.stderr)


def describe(report: RenderReport) -> str:
    mp = report.width * report.height / 1e6
    return json.dumps(
        {
            "path": str(report.tiff.path),
            "width": report.width,
            "height": report.height,
            "megapixels": round(mp, 3),
            "bytes": report.tiff.bytes_written,
            "bigtiff": report.tiff.bigtiff,
            "chunks": report.chunks,
            "seconds": round(report.seconds, 2),
            "timings": report.timings,
        }
    )
