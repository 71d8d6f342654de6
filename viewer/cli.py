"""`famos view FILE.tif`: look at a render in the browser, deep zoom over IIIF.

Serves the IIIF Image API 3.0 (level 2) for each file, named by its stem
(http://HOST:PORT/iiif/3/{stem}/info.json), and a page at / that the command opens: the list of
files, or the viewer itself when there is one. Tiles are read from the TIFF and its pyramid; a
file without a pyramid gets zoom levels built once, in one pass, into temporary files, at most
--max-level-ratio times the file's size (a header claiming far more pixels than its bytes can hold
is refused). Answers are at most --max-size pixels a side and --max-area pixels in all.
OpenSeadragon comes from its npm package:
`npm ci --prefix viewer/static` (or --openseadragon URL of a folder that serves openseadragon.min.js).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import threading

from famos.cli_parser import Parser

DEFAULT_OPENSEADRAGON = pathlib.Path(__file__).parent / "static" / "node_modules" / "openseadragon" / "build" / "openseadragon"


def openseadragon_location(given: str | None) -> str:
    """The folder or URL the page loads OpenSeadragon from. Without a local copy (a pip install,
    no `npm ci`), the pinned version from its CDN, which the page loads with its integrity hash
    (``famos.viewer.page.PINNED_OPENSEADRAGON``); the IIIF server runs either way. UserError for a
    folder named that holds no OpenSeadragon."""
    from famos.errors import UserError
    from famos.viewer.page import PINNED_OPENSEADRAGON

    location = given or os.environ.get("FAMOS_OPENSEADRAGON")
    if location is None:
        if (DEFAULT_OPENSEADRAGON / "openseadragon.min.js").is_file():
            return str(DEFAULT_OPENSEADRAGON)
        print(f"famos view: note: no local OpenSeadragon (`npm ci --prefix viewer/static` installs it); the page "
              f"loads the pinned {PINNED_OPENSEADRAGON.url}, integrity-checked", file=sys.stderr)
        return PINNED_OPENSEADRAGON.url
    if "://" in location:
        return location
    if not (pathlib.Path(location) / "openseadragon.min.js").is_file():
        raise UserError(
            f"--openseadragon {location}: no openseadragon.min.js there; install it with "
            "`npm ci --prefix viewer/static` or pass --openseadragon URL"
        )
    return location


def add_viewer_arguments(parser, *, default_port: int, flag: str = "--port") -> None:
    parser.add_argument(flag, type=int, default=default_port, help="HTTP port of the viewer (0: any free port; default %(default)s)")
    parser.add_argument("--openseadragon", help="folder or URL with openseadragon.min.js (default: viewer/static's npm package, else the pinned "
                             "version from its CDN with its integrity hash)")


def add_limit_arguments(parser, *, prefix: str = "--") -> None:
    """The viewer's limits as options: `famos view --max-size ...`, `famos serve --viewer-max-size ...`
    (``prefix`` "--viewer-"). ``limit_settings`` reads them back."""
    from famos.viewer.iiif import OutputLimits
    from famos.viewer.server import ViewerConfig

    parser.add_argument(f"{prefix}max-size", type=int, default=OutputLimits.max_width,
                        help="widest and tallest answer in pixels, as info.json states (default %(default)s)")
    parser.add_argument(f"{prefix}max-area", type=int, default=OutputLimits.max_area,
                        help="most pixels of one answer, as info.json states (default %(default)s)")
    parser.add_argument(f"{prefix}max-connections", type=int, default=ViewerConfig.max_connections,
                        help="connections served at once; more are answered 503 (default %(default)s)")
    parser.add_argument(f"{prefix}read-timeout", type=float, default=ViewerConfig.read_timeout,
                        help="seconds a request may take to arrive whole, and a connection may stay idle "
                             "(default %(default)g)")


def limit_settings(args, *, prefix: str = "--") -> dict:
    """The ``ViewerConfig`` fields of ``add_limit_arguments``'s options, checked (one-line errors)."""
    from famos.errors import InvalidField
    from famos.viewer.iiif import OutputLimits

    def value(name: str):
        return getattr(args, (prefix[2:] + name).replace("-", "_"))

    for name in ("max-size", "max-area"):
        if value(name) < 1:
            raise InvalidField(f"{prefix}{name}", f"must be a whole number of pixels from 1, got {value(name)}")
    limits = OutputLimits(max_width=value("max-size"), max_height=value("max-size"), max_area=value("max-area"))
    if value("max-connections") < 1:
        raise InvalidField(f"{prefix}max-connections", f"must be at least 1, got {value('max-connections')}")
    if not 0 < value("read-timeout") <= 3600:
        raise InvalidField(f"{prefix}read-timeout", f"must be above 0 and at most 3600 seconds, got {value('read-timeout')}")
    return {"limits": limits, "max_connections": value("max-connections"), "read_timeout": value("read-timeout")}


class FileCatalog:
    """Finished TIFFs by file stem."""

    def __init__(self, images: dict):
        self.images = images

    def identifiers(self) -> list[str]:
        return list(self.images)

    def image(self, identifier: str):
        return self.images[identifier]

    def state(self, identifier: str) -> str:
        return "finished"


def main(argv: list[str] | None = None) -> int:
    from famos.viewer.server import ViewerConfig, ViewerServer
    from famos.viewer.sources import MAX_LEVEL_RATIO

    parser = Parser(prog="famos view", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=pathlib.Path, nargs="+", help="tiled TIFFs written by famos")
    parser.add_argument("--host", default=ViewerConfig.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("FAMOS_TOKEN"), help="require a bearer token (default: $FAMOS_TOKEN)")
    parser.add_argument("--public-url", default=ViewerConfig.public_url,
                        help="the URL clients reach the viewer at, for IIIF ids (default: http://HOST:PORT/)")
    parser.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
    parser.add_argument("--max-level-ratio", type=float, default=MAX_LEVEL_RATIO,
                        help="zoom levels built for a file without a pyramid may take this many times "
                             "its size on disk (default %(default)g)")
    add_limit_arguments(parser)
    add_viewer_arguments(parser, default_port=ViewerConfig.port)
    args = parser.parse_args(argv)

    from famos.errors import InvalidField, UserError
    from famos.progress import ProgressLines
    from famos.viewer.sources import DamagedImage, TiffImage

    if not args.max_level_ratio > 0:
        raise InvalidField("--max-level-ratio", f"must be above 0, got {args.max_level_ratio}")
    settings = limit_settings(args)
    osd = openseadragon_location(args.openseadragon)
    images = {}
    try:
        for path in args.files:
            if path.stem in images:
                raise UserError(f"{path}: another file is already named {path.stem!r} (identifiers are stems)")
            if not path.is_file():
                raise UserError(f"{path}: no such file")
            print(f"famos view: opening {path}", file=sys.stderr)
            building: list[ProgressLines] = []

            def built(done: int, total: int, seconds: float, name: str = path.name) -> None:
                if not building:  # only a file without a full pyramid builds its zoom levels
                    building.append(ProgressLines(f"famos view: zoom levels of {name}", total, unit="MP", scale=1e6))
                building[0].update(done, seconds)

            try:
                images[path.stem] = TiffImage(path, max_level_ratio=args.max_level_ratio, progress=built)
            except DamagedImage as err:
                raise UserError(f"{path}: a damaged TIFF ({err})") from None
            except (ValueError, OSError, EOFError) as err:  # tifffile's errors for what is no TIFF
                if isinstance(err, FileNotFoundError):
                    raise
                raise UserError(f"{path}: not a tiled RGB TIFF famos can show ({err})") from None
            finally:
                for line in building:
                    line.close()
        try:
            server = ViewerServer(FileCatalog(images), ViewerConfig(host=args.host, port=args.port, token=args.token,
                                                                     openseadragon=osd, public_url=args.public_url,
                                                                     **settings))
        except OSError as err:  # the port is taken, or the host is not an address of this machine
            raise UserError(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({err.strerror or err})") from None
    except BaseException:
        for image in images.values():
            image.close()
        raise
    server.start()
    fragment = f"#token={args.token}" if args.token else ""
    print(f"famos view: serving on {server.url}{fragment} (IIIF: {server.url}iiif/3/{{identifier}}/info.json)", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(server.url + fragment)
    try:
        threading.Event().wait()
    finally:
        server.stop()
        for image in images.values():
            image.close()
    return 0
