"""The viewer's HTTP server: IIIF Image API 3.0 over a catalog of images, and a deep-zoom page.

    GET /                                        the viewer page (the catalog's first image) or a list
    GET /view/{identifier}                       the viewer page of one image
    GET /iiif/3/{identifier}                     303 to its info.json
    GET /iiif/3/{identifier}/info.json           what the image offers (IIIF)
    GET /iiif/3/{identifier}/{region}/{size}/{rotation}/{quality}.{format}
    GET /api/{identifier}/status.json            provenance and progress (the page polls it)
    GET /openseadragon/{file}                    OpenSeadragon, from its npm package folder

Identifiers name catalog entries (a file's stem, a job id), never paths. With a token, /iiif and
/api ask for ``Authorization: Bearer TOKEN`` (the page reads the token from its URL's #token=...
fragment, which browsers never send to the server). IIIF answers carry CORS headers.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import mimetypes
import pathlib
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from viewer import iiif, page
from viewer.sources import ImageSource

log = logging.getLogger("famos.viewer")


class Catalog(Protocol):
    """Images by identifier. ``image`` raises KeyError for an identifier it does not serve."""

    def identifiers(self) -> list[str]: ...

    def image(self, identifier: str) -> ImageSource: ...

    def state(self, identifier: str) -> str:
        """finished, rendering or queued."""
        ...


@dataclasses.dataclass(frozen=True)
class ViewerConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port
    token: str | None = None
    openseadragon: str = ""  # a folder with openseadragon.min.js, or a URL prefix serving it


class ViewerServer:
    """A threaded HTTP server in the background; ``port`` is the bound one."""

    def __init__(self, catalog: Catalog, config: ViewerConfig = ViewerConfig()):
        self.catalog = catalog
        self.config = config
        self.requests = 0  # answered IIIF image requests (the tests and the bench count them)
        folder = pathlib.Path(config.openseadragon) if config.openseadragon and "://" not in config.openseadragon else None
        self.static = folder.resolve() if folder is not None else None
        self.osd_url = "/openseadragon" if folder is not None else config.openseadragon.rstrip("/")
        handler = type("Handler", (_Handler,), {"viewer": self})
        self.httpd = ThreadingHTTPServer((config.host, config.port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="famos-viewer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    viewer: ViewerServer
    protocol_version = "HTTP/1.1"  # keep-alive: a viewer fetches tiles by the hundred
    server_version = "famos-viewer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_OPTIONS(self) -> None:  # CORS preflight (a viewer on another origin sending a token)
        self._send(HTTPStatus.NO_CONTENT, b"", "text/plain", {
            "Access-Control-Allow-Methods": "GET, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Accept",
        })

    def do_GET(self) -> None:
        try:
            self._route()
        except iiif.IIIFError as err:
            self._text(err.status, str(err))
        except BrokenPipeError:
            pass
        except Exception:  # noqa: BLE001 - the client gets one line, the log the traceback
            log.exception("GET %s failed", self.path)
            self._text(500, "internal error (see the server log)")

    def _route(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        parts = path.split("/")[1:]  # split before unquoting: %2F inside an identifier stays in it
        if path == "/":
            ids = self.viewer.catalog.identifiers()
            if len(ids) == 1:
                return self._html(page.viewer_page(ids[0], osd_url=self.viewer.osd_url))
            return self._html(page.index_page(ids))
        if len(parts) == 2 and parts[0] == "view":
            return self._html(page.viewer_page(urllib.parse.unquote(parts[1]), osd_url=self.viewer.osd_url))
        if parts[0] == "openseadragon" and self.viewer.static is not None:
            return self._static(parts[1:])
        if len(parts) >= 3 and parts[:2] == ["iiif", "3"]:
            self._authorized()
            return self._iiif(urllib.parse.unquote(parts[2]), parts[3:])
        if len(parts) == 3 and parts[0] == "api" and parts[2] == "status.json":
            self._authorized()
            return self._status(urllib.parse.unquote(parts[1]))
        raise iiif.IIIFError(404, f"{path}: no such page")

    def _authorized(self) -> None:
        token = self.viewer.config.token
        if not token:
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise iiif.IIIFError(401, "missing or wrong bearer token")

    def _image(self, identifier: str) -> ImageSource:
        try:
            image = self.viewer.catalog.image(identifier)
        except KeyError:
            raise iiif.IIIFError(404, f"identifier {identifier!r}: no such image") from None
        image.refresh()
        return image

    def _iiif(self, identifier: str, rest: list[str]) -> None:
        base = f"http://{self.headers.get('Host') or self.viewer.url[7:-1]}/iiif/3/{urllib.parse.quote(identifier, safe='')}"
        if not rest or rest == [""]:
            self._image(identifier)
            return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": f"{base}/info.json"})
        if rest == ["info.json"]:
            body = json.dumps(iiif.info(self._image(identifier), base)).encode()
            ld = "application/ld+json" in self.headers.get("Accept", "")
            media = f'application/ld+json;profile="{iiif.CONTEXT}"' if ld else "application/json"
            return self._send(HTTPStatus.OK, body, media, {"Link": f'<{iiif.CONTEXT}>;rel="http://www.w3.org/ns/json-ld#context";type="application/ld+json"'} if not ld else {})
        image = self._image(identifier)  # an unknown identifier is 404 whatever follows it
        if len(rest) != 4:
            raise iiif.IIIFError(400, "expected {region}/{size}/{rotation}/{quality}.{format}")
        request = iiif.parse(image, *(urllib.parse.unquote(p) for p in rest))
        body, media = iiif.render(image, request)
        self.viewer.requests += 1
        self._send(HTTPStatus.OK, body, media, {"Link": f'<http://iiif.io/api/image/3/{iiif.PROFILE}.json>;rel="profile"'})

    def _status(self, identifier: str) -> None:
        image = self._image(identifier)
        done, total = image.progress()
        body = {
            "identifier": identifier,
            "state": self.viewer.catalog.state(identifier),
            "width": image.width,
            "height": image.height,
            "dpi": image.dpi,
            "rows_done": done,
            "rows_total": total,
            "description": image.description,
        }
        self._send(HTTPStatus.OK, json.dumps(body).encode(), "application/json", {"Cache-Control": "no-store"})

    def _static(self, parts: list[str]) -> None:
        root = self.viewer.static
        assert root is not None
        target = root.joinpath(*(urllib.parse.unquote(p) for p in parts)).resolve()
        if root not in target.parents or not target.is_file():  # nothing outside the folder
            raise iiif.IIIFError(404, "no such file")
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, target.read_bytes(), media, {"Cache-Control": "max-age=86400"})

    def _html(self, text: str) -> None:
        self._send(HTTPStatus.OK, text.encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _text(self, status: int, text: str) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8",
                   {"WWW-Authenticate": "Bearer"} if status == 401 else {})

    def _send(self, status: int, body: bytes, media: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
