"""`famos render BUNDLE --content DIR --out OUTDIR`: every image of a folder (the frames of a video)
rendered with one model, one seed and one set of options to ``OUTDIR/<stem>.tif`` (and
``PREVIEWS/<stem>.png`` with ``--preview PREVIEWS``), resumably, in constant memory.

The bundle is loaded and its runner opened once for all the images; one content image is decoded
at a time. Each output is written atomically (a temporary name, renamed when complete), so an
interrupted run leaves whole files only, and a re-run skips the outputs that are done.

Every output records what made it, in its TIFF description (key ``folder_render``): the bundle's
sha256, the content file's name and sha256, the options asked for (seed, size, region and the TIFF
options; not the chunk, which changes no pixel) and the backend and precision. A file found at an
output's name is

- done, and skipped, when its record equals this run's and it is a whole TIFF: its pages read,
  every tile lies inside the file, and its image has the size of the region it records;
- stale, and rendered again, when it is one of these outputs made otherwise (another seed, bundle,
  content image or option) or cut short;
- not this command's (no TIFF, or a TIFF without the record: a plain `famos render` file too), and
  refused before anything renders unless --overwrite.

The record says what the file was made from; it is not a checksum of the pixels: an edit of tile
bytes that keeps the file's structure goes unnoticed (delete a file to have it rendered again). A
preview is rendered with its TIFF, and written from the TIFF when that is done and the preview is
missing; an existing preview whose TIFF is not this command's is refused like the TIFF.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import pathlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from famos.errors import UserError

if TYPE_CHECKING:
    from famos.renderer import Renderer
    from famos.request import AdmissionLimits, RenderRequest

RECORD = "folder_render"  # the description's key for what made a folder render's output
_FILE_SUFFIXES = (".tif", ".tiff", ".png")


class Found(enum.Enum):
    """What lies at an output's name before the run."""

    NOTHING = "nothing"
    OURS = "ours"  # a folder render's output: done or stale, decided against this run's record
    FOREIGN = "foreign"  # any other file


@dataclasses.dataclass(frozen=True)
class FolderItem:
    image: pathlib.Path
    output: pathlib.Path
    preview: pathlib.Path | None
    found: Found


def plan_folder(
    content: pathlib.Path, *, out: pathlib.Path, preview: pathlib.Path | None, overwrite: bool
) -> list[FolderItem]:
    """The images of ``content`` and their outputs, every refusal raised before anything is loaded
    or written: no images or two of one stem, an unreadable image, an output that is a file name or
    the content folder, an output over an input or inside a bundle, files at output names that this
    command did not write (without ``overwrite``)."""
    from famos.canvas import ImageError
    from famos.outputs import check_output
    from famos.request_args import content_images, unreadable_image

    try:
        images = content_images(content)
    except ImageError as err:
        raise UserError(f"--content {err}") from None
    for problem in filter(None, map(unreadable_image, images)):
        raise UserError(f"--content {problem}")
    _check_folder(out, option="--out", content=content)
    if preview is not None:
        _check_folder(preview, option="--preview", content=content)
    items, foreign, foreign_previews = [], [], []
    for image in images:
        output = check_output(out / f"{image.stem}.tif", option="--out", inputs=(image,), overwrite=True)
        found = _found(output)
        if found is Found.FOREIGN:
            foreign.append(output.name)
        shown = None
        if preview is not None:
            shown = check_output(preview / f"{image.stem}.png", option="--preview", inputs=(image, output),
                                 overwrite=True)
            if found is not Found.OURS and shown.exists():  # a preview is ours when its TIFF is
                foreign_previews.append(shown.name)
        items.append(FolderItem(image, output, shown, found))
    if not overwrite:
        for option, folder, names in (("--out", out, foreign), ("--preview", preview, foreign_previews)):
            if names:
                listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                files, them = ("files", "them") if len(names) > 1 else ("file", "it")
                raise UserError(f"{option} {folder}: {len(names)} {files} that are not outputs of a famos "
                                f"folder render: {listed} (--overwrite replaces {them})")
    return items


def _check_folder(folder: pathlib.Path, *, option: str, content: pathlib.Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {folder}: is a file; with a --content folder, {option} names a folder")
    if not folder.exists() and folder.suffix.lower() in _FILE_SUFFIXES:
        raise UserError(f"{option} {folder}: with a --content folder, {option} names a folder (one file per "
                        f"image), not a {folder.suffix} file")
    if folder.resolve() == content.resolve():
        raise UserError(f"{option} {folder}: is the --content folder; its outputs would be inputs of the next "
                        f"run: write them elsewhere")


def _description(path: pathlib.Path) -> dict[str, Any] | None:
    """The JSON description of the TIFF at ``path``; None for any other file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            description = json.loads(tif.pages[0].description)
    except Exception:  # noqa: BLE001 - any file at all may lie at an output's name
        return None
    return description if isinstance(description, dict) else None


def _found(path: pathlib.Path) -> Found:
    if not path.exists():
        return Found.NOTHING
    description = _description(path)
    return Found.OURS if description is not None and isinstance(description.get(RECORD), dict) else Found.FOREIGN


def folder_record(request: RenderRequest, renderer: Renderer, image: pathlib.Path) -> dict[str, Any]:
    """What makes ``image``'s output, as its description records it (JSON values)."""
    from famos.files import file_sha256

    asked = {k: v for k, v in request.to_json().items() if k not in ("model", "chunk")}
    record = {
        "bundle_sha256": renderer.bundle.sha256,
        "content_file": image.name,
        "content_sha256": file_sha256(image),
        "request": asked,
        "backend": renderer.options.backend.value,
        "precision": renderer.options.precision.value,
    }
    return json.loads(json.dumps(record, sort_keys=True))


def is_done(path: pathlib.Path, record: dict[str, Any]) -> bool:
    """Whether ``path`` is a whole TIFF made by ``record``: the record equal, every page readable,
    every tile of every page (the pyramid's included) inside the file, the image the recorded
    region's size. Reads the file's directories, no pixel."""
    import tifffile

    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            description = json.loads(page.description)
            region = description["region"]
            if description.get(RECORD) != record or page.shape[:2] != (region["height"], region["width"]):
                return False
            for level in (page, *(page.pages or ())):
                across = math.ceil(level.imagewidth / level.tilewidth)
                down = math.ceil(level.imagelength / level.tilelength)
                tiles = list(zip(level.dataoffsets, level.databytecounts))
                if len(tiles) != across * down or any(count <= 0 or offset + count > size for offset, count in tiles):
                    return False
    except Exception:  # noqa: BLE001 - a file cut short fails anywhere in tifffile: it is not done
        return False
    return True


def render_folder(
    items: list[FolderItem],
    *,
    renderer: Renderer,
    request: RenderRequest,
    limits: AdmissionLimits,
    prepare_workers: int | None,
    quiet: bool,
    notes: Callable[[Any, Renderer], None],
) -> int:
    """Render ``items`` on ``renderer`` (one for all of them) with ``request``'s options and each
    item's image as content, skipping the outputs that are done; one line per image, a summary."""
    from famos.canvas import encoded_image
    from famos.previews import overview_of_tiff, save_png
    from famos.progress import ProgressLines
    from famos.renderer import render_tiff_task
    from famos.request import resolve

    for folder in {item.output.parent for item in items} | {item.preview.parent for item in items if item.preview}:
        folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rendered = 0
    width = len(str(len(items)))
    for number, item in enumerate(items, start=1):
        counter = f"[{number:>{width}}/{len(items)}] {item.image.name}"
        record = folder_record(request, renderer, item.image)
        if item.found is Found.OURS and is_done(item.output, record):
            if item.preview is not None and not item.preview.exists():
                save_png(item.preview, overview_of_tiff(item.output))
            print(f"{counter}: skipped, done: {item.output}", flush=True)
            continue
        asked = dataclasses.replace(request, content=encoded_image(item.image), content_name=str(item.image))
        render = resolve(asked, renderer, limits=limits, prepare_workers=prepare_workers)
        if not quiet and not rendered:
            notes(render, renderer)  # the same options for every image: said once
        render.estimate.check_disk(item.output)
        task = dataclasses.replace(render.task, description={**render.task.description, RECORD: record})
        with ProgressLines(f"famos render {item.image.name}", render.estimate.pixels, unit="MP", scale=1e6,
                           enabled=not quiet) as lines:
            report = render_tiff_task(renderer, item.output, task, render.tiff, preview=item.preview,
                                      progress=lambda done: lines.update(done.pixels_done, done.seconds))
        del render, task, asked  # the next image is decoded only once this one is let go
        rendered += 1
        print(f"{counter}: rendered {item.output} ({report.width}x{report.height}, {report.seconds:.2f} s)",
              flush=True)
    print(f"{len(items)} images: {rendered} rendered, {len(items) - rendered} skipped as done, "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    return 0
