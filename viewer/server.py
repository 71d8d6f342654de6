"""The viewer's HTTP server: IIIF Image API 3.0 over a catalog of images, and a deep-zoom page.

    GET /                                        the list of images (the viewer page when there is one)
    GET /view/{identifier}                       the viewer page of one image
    GET /iiif/3/{identifier}                     303 to its info.json
    GET /iiif/3/{identifier}/info.json           what the image offers (IIIF)
    GET /iiif/3/{identifier}/manifest.json       its IIIF Presentation 3.0 Manifest (provenance as metadata)
    GET /iiif/3/{identifier}/{region}/{size}/{rotation}/{quality}.{format}
    GET /api/images.json                         the catalog's identifiers (the list page fetches it)
    GET /api/{identifier}/status.json            provenance and progress (the page polls it)
    GET /openseadragon/{file}                    OpenSeadragon, from its npm package folder

Identifiers name catalog entries (a file's stem, a job id), never paths. With a token, /iiif and
/api ask for ``Authorization: Bearer TOKEN`` (the pages read the token from their URL's #token=...
fragment, which browsers never send to the server, so the pages themselves name no image but the
one in their URL). IIIF answers carry CORS headers. Absolute URLs are built from the server's own
address, never from a request's Host header. At most ``max_connections`` connections are served at
once (more are answered 503); a request must arrive whole within ``read_timeout`` seconds, and a
connection idle that long is closed. With ``reserve`` (a render server's memory budget), an image
answer reserves the memory it will hold before it reads anything, and is answered 503 when the
budget is held by renders.

Every answer is one of 200, 204 (CORS preflight), 303, 400 (malformed, or an output over
``limits``), 401, 404, 503 (busy) or 500; an error's body is one line. 500 is a file damaged after it
was opened (logged in one line) or a bug (logged with its traceback). Every answer is logged as one
JSON line on ``famos.viewer.access`` (INFO): method, path (without a token in its query), status,
bytes of the body, seconds and the client's address.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import mimetypes
import pathlib
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from famos.errors import OverLimit, UserError
from famos.viewer import iiif, page, presentation
from famos.viewer.sources import DamagedImage, ImageSource

log = logging.getLogger("famos.viewer")
access_log = logging.getLogger("famos.viewer.access")


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
    public_url: str = ""  # where clients reach the server (behind a proxy, on 0.0.0.0); default http://host:port/
    max_connections: int = 64  # served at once, each on its own thread; a browser opens about 6
    # seconds a request may take to arrive whole (one sending a byte now and then is closed too),
    # and a kept-alive connection may stay idle
    read_timeout: float = 30.0
    limits: iiif.OutputLimits = iiif.OutputLimits()  # of one IIIF answer
    # the memory an image answer holds (iiif.answer_bytes), reserved before it is read, e.g. from a
    # render server's budget: a context manager for the bytes that raises OverLimit when none is
    # free (answered 503); None: only the limits above bound it
    reserve: Callable[[int], AbstractContextManager[None]] | None = dataclasses.field(default=None, compare=False)


class ViewerServer:
    """A threaded HTTP server in the background; ``port`` is the bound one."""

    def __init__(self, catalog: Catalog, config: ViewerConfig = ViewerConfig()):
        self.catalog = catalog
        self.config = config
        self.requests = 0  # answered IIIF image requests (the tests and the bench count them)
        folder = pathlib.Path(config.openseadragon) if config.openseadragon and "://" not in config.openseadragon else None
        self.static = folder.resolve() if folder is not None else None
        self.osd_url = "/openseadragon" if folder is not None else config.openseadragon.rstrip("/")
        handler = type("Handler", (_Handler,), {"viewer": self, "timeout": config.read_timeout})
        self.httpd = _BoundedServer((config.host, config.port), handler, max_connections=config.max_connections)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="famos-viewer", daemon=True)

    @property
    def url(self) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/") + "/"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_BUSY_BODY = b"busy: too many connections, retry shortly\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\nAccess-Control-Allow-Origin: *\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, up to ``max_connections``; past them a connection is answered 503
    by the accepting thread, which never waits on it."""

    daemon_threads = True
    request_queue_size = 128  # a burst waits to be accepted (and refused if need be), not dropped
    linger = 1.0  # seconds a refused connection is read from before it is closed
    max_lingering = 1024

    def __init__(self, address: tuple[str, int], handler: type, *, max_connections: int):
        # before binding: a failed bind calls server_close, which reads them
        self.slots = threading.BoundedSemaphore(max_connections)
        self.lingering: list[tuple[float, socket.socket]] = []  # touched by the accepting thread only
        # connections whose request has not arrived whole yet, with the time it must have by
        self.heads: dict[socket.socket, float] = {}
        self.heads_lock = threading.Lock()
        super().__init__(address, handler)

    def awaiting_head(self, connection: socket.socket, seconds: float) -> None:
        with self.heads_lock:
            self.heads[connection] = time.monotonic() + seconds

    def head_arrived(self, connection: socket.socket) -> None:
        with self.heads_lock:
            self.heads.pop(connection, None)

    def _close_late_heads(self, now: float) -> None:
        """A socket timeout bounds each wait for bytes, not a request that trickles in a byte at a
        time; this bounds the whole request (and a kept-alive connection's idle time)."""
        with self.heads_lock:
            late = [c for c, deadline in self.heads.items() if deadline <= now]
            for connection in late:
                del self.heads[connection]
        for connection in late:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # the handler's read returns, and it closes
            except OSError:
                pass

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            return self._refuse(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nothing else will give the slot back
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        _log_access(method="-", path="-", status=503, size=len(_BUSY_BODY), seconds=0.0, peer=_peer(connection))
        try:
            connection.sendall(_BUSY)
            connection.shutdown(socket.SHUT_WR)
        except OSError:  # the client has gone already
            connection.close()
            return
        # closed now, on request bytes still on their way in, the connection would be reset, which
        # can lose the 503 before the client reads it: read until the client closes, or a moment
        self.lingering.append((time.monotonic() + self.linger, connection))
        if len(self.lingering) > self.max_lingering:
            self.lingering.pop(0)[1].close()

    def service_actions(self) -> None:  # between requests, at least every poll interval
        super().service_actions()
        now = time.monotonic()
        self._close_late_heads(now)
        kept = []
        for deadline, connection in self.lingering:
            if deadline > now and not _read_to_end(connection):
                kept.append((deadline, connection))
            else:
                connection.close()
        self.lingering = kept

    def server_close(self) -> None:
        super().server_close()
        for _, connection in self.lingering:
            connection.close()
        self.lingering = []


def _read_to_end(connection: socket.socket) -> bool:
    """Whether the client has closed (or broken) the connection, after taking in what it sent."""
    try:
        while connection.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


class _Handler(BaseHTTPRequestHandler):
    viewer: ViewerServer
    protocol_version = "HTTP/1.1"  # keep-alive: a viewer fetches tiles by the hundred
    server_version = "famos-viewer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # handle_one_request logs the answer, with its size and time

    def handle_one_request(self) -> None:
        self._answered: int | None = None  # the answer's status, once one is sent
        self._answered_bytes = 0
        self.path = "-"  # logged for a request refused before its target is read, not the previous one's
        started = time.perf_counter()
        self.server.awaiting_head(self.connection, self.viewer.config.read_timeout)
        try:
            super().handle_one_request()
        finally:
            self.server.head_arrived(self.connection)
        if self._answered is not None:  # None: the connection closed or timed out without a request
            _log_access(method=self.command or "-", path=_logged_path(self.path), status=self._answered,
                        size=self._answered_bytes, seconds=time.perf_counter() - started, peer=self.client_address[0])

    def parse_request(self) -> bool:  # the request line and the headers, read
        parsed = super().parse_request()
        self.server.head_arrived(self.connection)
        return parsed

    def send_response(self, code: int, message: str | None = None) -> None:
        self._answered = code
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "content-length":  # the body's size, our answers' and send_error's alike
            self._answered_bytes = int(value)
        super().send_header(keyword, value)

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
        except OverLimit as err:  # the server's memory is held by its renders: a moment later it may not be
            self._text(503, str(err), {"Retry-After": "1"})
        except UserError as err:  # e.g. an answer that could never fit the server's memory
            self._text(400, str(err))
        except DamagedImage as err:  # the file changed under the server: its fault, not the client's
            log.warning("GET %s: %s", self.path, err)
            self._text(500, f"the image's file is damaged: {err}")
        except (BrokenPipeError, ConnectionResetError):  # the client has gone
            pass
        except Exception:  # noqa: BLE001 - the client gets one line, the log the traceback
            log.exception("GET %s failed", self.path)
            self._text(500, "internal error (see the server log)")

    def _route(self) -> None:
        try:
            path = urllib.parse.urlsplit(self.path).path
        except ValueError:  # an absolute-form target with a broken host ("http://[x/")
            path = ""
        if not path.startswith("/"):  # "*", or no path at all
            raise iiif.IIIFError(400, f"request target {iiif.shown(self.path)}: expected a path")
        parts = path.split("/")[1:]  # split before unquoting: %2F inside an identifier stays in it
        if path == "/":
            return self._html(page.index_page())
        if parts == ["api", "images.json"]:
            self._authorized()
            return self._json({"identifiers": self.viewer.catalog.identifiers()})
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
            raise iiif.IIIFError(404, f"identifier {iiif.shown(identifier)}: no such image") from None
        image.refresh()
        return image

    def _iiif(self, identifier: str, rest: list[str]) -> None:
        path = f"iiif/3/{urllib.parse.quote(identifier, safe='')}"
        base = self.viewer.url + path  # info.json's id must be absolute
        if not rest or rest == [""]:
            self._image(identifier)
            return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": f"/{path}/info.json"})
        if rest == ["info.json"]:
            body = json.dumps(iiif.info(self._image(identifier), base, limits=self.viewer.config.limits)).encode()
            ld = "application/ld+json" in self.headers.get("Accept", "")
            media = f'application/ld+json;profile="{iiif.CONTEXT}"' if ld else "application/json"
            return self._send(HTTPStatus.OK, body, media, {"Link": f'<{iiif.CONTEXT}>;rel="http://www.w3.org/ns/json-ld#context";type="application/ld+json"'} if not ld else {})
        if rest == ["manifest.json"]:  # IIIF Presentation 3.0: what Mirador and Universal Viewer open
            document = presentation.manifest(self._image(identifier), identifier=identifier, base=base)
            ld = "application/ld+json" in self.headers.get("Accept", "")
            media = f'application/ld+json;profile="{presentation.CONTEXT}"' if ld else "application/json"
            return self._send(HTTPStatus.OK, json.dumps(document).encode(), media, {})
        image = self._image(identifier)  # an unknown identifier is 404 whatever follows it
        if len(rest) != 4:
            raise iiif.IIIFError(400, "expected {region}/{size}/{rotation}/{quality}.{format}")
        request = iiif.parse(image, *(urllib.parse.unquote(p) for p in rest), limits=self.viewer.config.limits)
        reserve = self.viewer.config.reserve
        with reserve(iiif.answer_bytes(image, request)) if reserve is not None else nullcontext():
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
        self._json(body)

    def _static(self, parts: list[str]) -> None:
        root = self.viewer.static
        assert root is not None
        try:
            target = root.joinpath(*(urllib.parse.unquote(p) for p in parts)).resolve()
            found = root in target.parents and target.is_file()  # nothing outside the folder
        except (OSError, ValueError):  # a name too long, or with a NUL in it
            found = False
        if not found:
            raise iiif.IIIFError(404, "no such file")
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, target.read_bytes(), media, {"Cache-Control": "max-age=86400"})

    def _json(self, body: dict[str, Any]) -> None:
        self._send(HTTPStatus.OK, json.dumps(body).encode(), "application/json", {"Cache-Control": "no-store"})

    def _html(self, text: str) -> None:
        self._send(HTTPStatus.OK, text.encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8",
                   {"WWW-Authenticate": "Bearer"} if status == 401 else headers or {})

    def _send(self, status: int, body: bytes, media: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _log_access(*, method: str, path: str, status: int, size: int, seconds: float, peer: str) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s", json.dumps({"method": method, "path": path, "status": status, "bytes": size,
                                          "seconds": round(seconds, 6), "peer": peer}))


_LOGGED_PATH = 1000  # characters of a request target in the access log


def _logged_path(target: str) -> str:
    """A request target as logged: a token in its query (a secret) left out, cut short."""
    path, _, query = target.partition("?")
    if query:
        kept = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)
                if k.lower() not in ("token", "access_token")]
        path += "?" + urllib.parse.urlencode(kept) if kept else ""
    return path if len(path) <= _LOGGED_PATH else path[:_LOGGED_PATH] + "..."


def _peer(connection: socket.socket) -> str:
    try:
        return connection.getpeername()[0]
    except OSError:
        return "-"
