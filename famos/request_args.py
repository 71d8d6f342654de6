"""A render request's command-line options, shared by `famos render` and `famos client render|submit`:
one set of flags, one conversion to ``famos.request.RenderRequest``; and what a content path on this
machine names, for `famos render --content` and a jobs file's content column alike: one image, or
a folder of images (``content_images``), each checked by its header (``unreadable_image``)."""

from __future__ import annotations

import pathlib

from famos.request import RenderRequest

# What a content folder's images are: the suffixes Pillow reads that people keep pictures in.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def add_request_arguments(parser, *, chunk_default: str, content_folders: bool = False) -> None:
    """The request's options: content, seed, region, chunk, output size and the TIFF options.
    ``chunk_default`` says what 0 means at this door; ``content_folders``: --content may name a
    folder (a door that renders one output per image)."""
    from famos.tiff_cli import add_tiff_arguments
    from famos.units import add_size_arguments

    content_help = "new content image, resampled onto the output canvas"
    if content_folders:
        content_help += ("; or a folder of images (png, jpg, tif, webp, bmp; e.g. the frames of a video): each "
                         "rendered with the same seed and options to --out FOLDER/<stem>.tif, resumably")
    parser.add_argument("--content", type=pathlib.Path, help=content_help)
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


def is_folder(path: pathlib.Path) -> bool:
    """Whether ``path`` is a folder; False for a name the system cannot even look up (too long), so
    that opening it as an image reports it on one line."""
    try:
        return path.is_dir()
    except OSError:
        return False


def content_images(folder: pathlib.Path) -> list[pathlib.Path]:
    """The images of a content folder, sorted by name: its files with a suffix of ``IMAGE_SUFFIXES``
    (in any case), hidden files and subfolders left out. Each becomes one output named by its stem,
    so two images of one stem (``a.png`` and ``a.jpg``; ``A.png`` too, one file on macOS and
    Windows) are refused, and so is a folder without images: ``ImageError`` naming the folder."""
    from famos.canvas import ImageError

    try:
        entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
    except OSError as err:
        raise ImageError(f"{folder}: cannot list the folder ({err.strerror})") from None
    images = [entry for entry in entries
              if not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()]
    if not images:
        raise ImageError(f"{folder}: no images in the folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, pathlib.Path] = {}
    for image in images:
        first = stems.setdefault(image.stem.lower(), image)
        if first is not image:
            raise ImageError(f"{folder}: {first.name} and {image.name} have the same stem, so one output "
                             f"name; rename one of them")
    return images


def unreadable_image(path: pathlib.Path) -> str:
    """Why ``path`` is not a usable image ("" when it is); reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the header parse is the check
    except FileNotFoundError:
        return f"{path}: no such image file"
    except Image.DecompressionBombError as err:
        return f"{path}: too large to load ({err})"
    except (UnidentifiedImageError, OSError) as err:
        return f"{path}: not a readable image ({err})"
    return ""
