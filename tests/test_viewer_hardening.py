"""The viewer against hostile clients, over real HTTP on 127.0.0.1: identifiers stay text in its
pages, listings need the token, a forged Host header is never echoed, malformed IIIF parameters
are 400s (never 500s), and connections are capped and timed out."""

from __future__ import annotations

import html.parser
import io
import http.client
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.parse

import numpy as np
import pytest

from famos.tiff_options import TiffOptions
from famos.tiff_writer import write_tiled_tiff
from famos.viewer.cli import FileCatalog
from famos.viewer.server import ViewerConfig, ViewerServer
from famos.viewer.sources import TiffImage

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>window.pwned=1</script>",
    "\"'><svg onload=alert(1)>",
    "__CONFIG__<img src=x onerror=alert(1)>",  # spelt like the page's placeholders
    "__TITLE____OSD_SCRIPT__</title>",
    "<!--<script>",
    "line\u2028separator\u2029paragraph",
    "ünïcødé 🖼 &amp; &lt;b&gt;",
]


@pytest.fixture(scope="module")
def tiff(tmp_path_factory):
    path = tmp_path_factory.mktemp("hardening") / "img.tif"
    pixels = np.full((300, 400, 3), 128, np.uint8)
    write_tiled_tiff(path, [pixels], height=300, width=400, options=TiffOptions())
    return path


@pytest.fixture
def serve(tiff, serve_viewer):
    def start(names=("img",), **config):
        return serve_viewer({name: TiffImage(tiff) for name in names}, **config)

    return start


def request(server: ViewerServer, target: str, headers: dict | None = None) -> tuple[int, list, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


class _Structure(html.parser.HTMLParser):
    """A page's tags and the text of its <title>, <h1> and inline scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text, self._open = [], {}, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, tuple(name for name, _ in attrs)))
        self._open = tag

    def handle_endtag(self, tag):
        self.tags.append(("/" + tag, ()))
        self._open = None

    def handle_data(self, data):
        if self._open in ("title", "h1", "script"):
            self.text[self._open] = self.text.get(self._open, "") + data


@pytest.mark.parametrize("identifier", HOSTILE)
def test_a_hostile_identifier_stays_text_in_the_viewer_page(serve, identifier):
    server = serve()
    status, _, body = request(server, "/view/" + urllib.parse.quote(identifier, safe=""))
    assert status == 200
    hostile = _Structure(body.decode())
    plain = _Structure(request(server, "/view/plain")[2].decode())
    assert hostile.tags == plain.tags  # no element, attribute or end of script added
    assert hostile.text["h1"] == identifier and hostile.text["title"] == f"famos: {identifier}"
    literal = re.search(r"^const config = (.*);$", hostile.text["script"], re.M).group(1)
    assert json.loads(literal)["identifier"] == identifier
    assert not set(literal) & set("<>&\u2028\u2029"), literal


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_a_browser_runs_none_of_a_hostile_identifier(serve):
    from headless import Browser

    identifier = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    server = serve()  # without OpenSeadragon: the page says so, after its own script has run
    with Browser(server.url + "view/" + urllib.parse.quote(identifier, safe="")) as browser:
        browser.wait_for("document.getElementById('error') && document.getElementById('error').textContent !== ''")
        time.sleep(0.3)  # for an injected <img>'s error event, were there one
        assert browser.evaluate("document.querySelector('h1').textContent") == identifier
        assert browser.evaluate("typeof window.pwned") == "undefined"
        assert browser.evaluate("document.images.length") == 0


def test_listings_need_the_token_and_pages_name_no_image(serve):
    server = serve(("secret-a", "secret-b"), token="s3cret")
    for target in ("/", "/view/other"):
        status, _, body = request(server, target)
        assert status == 200 and b"secret-" not in body, target
    assert request(server, "/api/images.json")[0] == 401
    assert request(server, "/api/images.json", {"Authorization": "Bearer wrong"})[0] == 401
    assert request(server, "/api/images.json", {"Authorization": "Bearer s3cret "})[0] == 401
    status, _, body = request(server, "/api/images.json", {"Authorization": "Bearer s3cret"})
    assert status == 200 and json.loads(body) == {"identifiers": ["secret-a", "secret-b"]}
    lone = serve(("only-one",), token="s3cret")
    status, _, body = request(lone, "/")
    assert status == 200 and b"only-one" not in body  # no longer the viewer page of the one image


def test_without_a_token_the_listing_is_open(serve):
    server = serve(("a", "b"))
    status, _, body = request(server, "/api/images.json")
    assert status == 200 and json.loads(body) == {"identifiers": ["a", "b"]}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_list_page_fetches_the_list_with_the_token_of_its_fragment(serve):
    from headless import Browser

    server = serve(("a", "<b>"), token="s3cret")
    with Browser(server.url + "#token=s3cret") as browser:
        browser.wait_for("document.links.length === 2")
        links = browser.evaluate("[...document.links].map(a => a.textContent + ' ' + a.getAttribute('href'))")
        assert links == ["a /view/a#token=s3cret", "<b> /view/%3Cb%3E#token=s3cret"]
    with Browser(server.url) as browser:  # no token: the list is refused, and the page says so
        browser.wait_for("document.getElementById('error').textContent.startsWith('401')")
    lone = serve(("only-one",), token="s3cret")
    with Browser(lone.url + "#token=s3cret") as browser:  # one image: straight to its viewer page
        browser.wait_for("location.pathname === '/view/only-one' && location.hash === '#token=s3cret'")


@pytest.mark.parametrize("target", [
    "/", "/view/img", "/api/images.json", "/api/img/status.json", "/iiif/3/img", "/iiif/3/img/",
    "/iiif/3/img/info.json", "/iiif/3/img/full/max/0/default.jpg", "/iiif/3/nope/info.json", "/nothing",
    "http://evil.example/iiif/3/img/info.json",  # absolute form: the target names a host too
])
def test_a_forged_host_header_is_never_echoed(serve, target):
    server = serve()
    status, headers, body = request(server, target, {"Host": "evil.example"})
    assert status in (200, 303, 404), (target, status)
    assert b"evil.example" not in body
    assert not any("evil.example" in value for _, value in headers), headers


def test_iiif_names_the_server_by_its_own_address(serve):
    server = serve()
    status, headers, _ = request(server, "/iiif/3/img", {"Host": "evil.example"})
    assert status == 303 and dict(headers)["Location"] == "/iiif/3/img/info.json"
    info = json.loads(request(server, "/iiif/3/img/info.json", {"Host": "evil.example"})[2])
    assert info["id"] == f"http://127.0.0.1:{server.port}/iiif/3/img"
    proxied = serve(public_url="https://tiles.example.org/famos")
    info = json.loads(request(proxied, "/iiif/3/img/info.json", {"Host": "evil.example"})[2])
    assert info["id"] == "https://tiles.example.org/famos/iiif/3/img"


@pytest.mark.parametrize("parameters", [
    "pct:" + "1" * 309 + ",0,10,10/max/0/default.jpg",  # a float that overflows
    "pct:0,0,10," + "9" * 400 + "/max/0/default.jpg",
    "full/pct:" + "9" * 309 + "/0/default.jpg",
    "1" * 4301 + ",0,10,10/max/0/default.jpg",  # more digits than int() takes
    "full/" + "9" * 4301 + ",/0/default.jpg",
    "full/max/" + "9" * 4301 + "/default.jpg",
    "%C2%B2,0,10,10/max/0/default.jpg",  # ², which str.isdigit() calls a digit
    "full/%C2%B2,/0/default.jpg",
    "full/%D9%A1%D9%A0,/0/default.jpg",  # Arabic-Indic 10, which \\d matches
    "full/max/%C2%B2/default.jpg",
    "pct:%D9%A1,0,10,10/max/0/default.jpg",
    "0,0,10,10%0A/max/0/default.jpg",  # a trailing newline
    "full/0,/0/default.jpg",  # zero width
    "full/,0/0/default.jpg",
    "full/!0,0/0/default.jpg",
    "full/pct:0/0/default.jpg",
    "full/max/0/d%C3%A9fault.jpg",
])
def test_malformed_iiif_parameters_are_a_400_in_one_line(serve, parameters):
    server = serve()
    status, _, body = request(server, "/iiif/3/img/" + parameters)
    assert status == 400, body[:200]
    text = body.decode()
    assert len(text.splitlines()) == 1 and "Traceback" not in text and len(text) < 300, text


@pytest.mark.parametrize("target, status", [
    ("*", 400),
    ("http://[broken/iiif/3/img/info.json", 400),
    ("/openseadragon/%00", 404),
    ("/openseadragon/" + "a" * 5000, 404),
])
def test_odd_request_targets_are_answered_not_failed(serve, tmp_path, target, status):
    server = serve(openseadragon=str(tmp_path))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        # by hand: http.client refuses to send some of these
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(connection)
        response.begin()
        body = response.read()
    assert response.status == status, body
    assert len(body.decode().splitlines()) == 1


def _half_sent(server: ViewerServer) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.sendall(b"GET /iiif/3/img/info.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never ends
    return connection


def _handler_threads(baseline: set[threading.Thread]) -> int:
    return len(set(threading.enumerate()) - baseline)


def test_connections_are_capped_and_half_sent_ones_time_out(serve):
    server = serve(max_connections=3, read_timeout=2.0)
    baseline = set(threading.enumerate())
    held = [_half_sent(server) for _ in range(3)]
    deadline = time.monotonic() + 5
    while _handler_threads(baseline) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    opened = time.monotonic()
    refused = [_half_sent(server) for _ in range(20)]
    for connection in refused:  # answered at once, without a thread of their own
        answer = connection.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in answer, answer
        connection.close()
    status, headers, _ = request(server, "/iiif/3/img/info.json")  # a whole request too, never a hang
    assert status == 503 and dict(headers)["Retry-After"] == "1"
    assert time.monotonic() - opened < 2.0  # all before the held ones time out
    assert _handler_threads(baseline) <= 3
    for connection in held:  # closed by the server once they sent nothing for read_timeout
        assert connection.recv(4096) == b""
        connection.close()
    assert time.monotonic() - opened < 6
    status, _, body = request(server, "/iiif/3/img/info.json")  # the slots are free again
    assert status == 200 and json.loads(body)["width"] == 400


def test_a_request_trickling_in_a_byte_at_a_time_is_closed_at_the_read_timeout(serve):
    """A socket timeout bounds each wait for bytes, so a client sending one byte a quarter second
    once held a connection (and its thread) for as long as it liked; the request as a whole must
    now arrive within read_timeout."""
    server = serve(read_timeout=1.0)
    connection = _half_sent(server)
    started = time.monotonic()
    closed = None
    while time.monotonic() - started < 6:
        try:
            connection.sendall(b"X")
            connection.settimeout(0.25)
            if connection.recv(4096) == b"":
                closed = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except OSError:  # reset by the server
            closed = time.monotonic() - started
            break
    connection.close()
    assert closed is not None and closed < 2.5, closed
    status, _, body = request(server, "/iiif/3/img/info.json")  # whole requests are served as before
    assert status == 200 and json.loads(body)["width"] == 400


def test_an_answer_over_the_reserved_memory_is_503_and_holds_nothing_after(serve):
    """With a memory pool (a render server's budget), an image answer reserves what it will hold
    before reading: refused while the pool is held by renders, served after, and given back."""
    import contextlib

    from famos.errors import OverLimit

    held, asked = [False], []

    @contextlib.contextmanager
    def pool(n: int):
        asked.append(n)
        if held[0]:
            raise OverLimit("server busy: the answer needs about 1 MB of memory; retry")
        yield

    server = serve(reserve=pool)
    held[0] = True
    status, headers, body = request(server, "/iiif/3/img/full/max/0/default.png")
    assert status == 503 and dict(headers)["Retry-After"] == "1" and b"server busy" in body
    held[0] = False
    status, _, body = request(server, "/iiif/3/img/full/max/0/default.png")
    assert status == 200
    assert asked[-1] >= 400 * 300 * 3  # at least the pixels it reads
    assert request(server, "/iiif/3/img/info.json")[0] == 200  # info.json reads no pixels: never refused


def test_an_answer_that_could_never_fit_is_400_not_a_retry(serve):
    import contextlib

    from famos.errors import UserError

    @contextlib.contextmanager
    def pool(n: int):
        raise UserError(f"the answer needs about {n} bytes, over the server's budget: ask for fewer pixels")
        yield

    status, headers, body = request(serve(reserve=pool), "/iiif/3/img/full/max/0/default.png")
    assert status == 400 and "Retry-After" not in dict(headers) and b"ask for fewer pixels" in body


def _famos_view(argv: list[str], capsys) -> str:
    """The one error line `famos view` prints for ``argv`` (it must fail with exit code 2)."""
    from famos.cli import main

    capsys.readouterr()
    assert main(["view", *argv, "--no-browser", "--openseadragon", "http://127.0.0.1:9/osd"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_tiff_bomb_is_refused_in_one_line_before_anything_is_reserved(tmp_path, monkeypatch, capsys):
    import tempfile

    import tifffile

    side, tile = 20000, 1024
    blank = np.zeros((tile, tile, 3), np.uint8)
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, (blank for _ in range((-(-side // tile)) ** 2)), shape=(side, side, 3), dtype=np.uint8,
                     tile=(tile, tile), compression="zstd", photometric="rgb")
    assert path.stat().st_size < 200_000  # 1.2 GB of pixels declared
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    line = _famos_view([str(path)], capsys)
    assert str(path) in line and "20000x20000" in line and "--max-level-ratio" in line, line
    assert list(work.iterdir()) == []  # no level file reserved, none left behind
    flat = tmp_path / "flat.tif"  # a small flat image compresses past any ratio, yet is shown
    write_tiled_tiff(flat, [np.full((1000, 1000, 3), 7, np.uint8)], height=1000, width=1000, options=TiffOptions(tile=64))
    TiffImage(flat).close()


def _resident() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_levels_are_built_on_disk_in_tile_rows_not_in_memory(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (4096, 4096, 3), np.uint8)
    path = tmp_path / "wide.tif"
    write_tiled_tiff(path, [pixels], height=4096, width=4096, options=TiffOptions(tile=256))
    del pixels
    before = _resident()
    image = TiffImage(path)
    try:  # 22 MB of levels: memory-mapped, they would stay resident as long as the image is open
        assert _resident() - before < 8 << 20
        assert image.levels[1:4] == [(2048, 2048), (1024, 1024), (512, 512)]
        assert image.read(4, 0, 0, 256, 256).shape == (256, 256, 3)
    finally:
        image.close()


def test_a_truncated_tiff_is_one_line_naming_the_file(tmp_path, tiff, capsys):
    whole = tiff.read_bytes()
    for keep in (len(whole) // 2, len(whole) - 1, 100):
        path = tmp_path / f"cut{keep}.tif"
        path.write_bytes(whole[:keep])
        line = _famos_view([str(path)], capsys)
        assert str(path) in line, line


def test_a_tile_damaged_while_serving_is_an_answered_error_without_a_traceback(tmp_path, caplog):
    path = tmp_path / "shrinking.tif"
    pixels = np.random.default_rng(2).integers(0, 256, (512, 512, 3), np.uint8)
    write_tiled_tiff(path, [pixels], height=512, width=512, options=TiffOptions(tile=256, pyramid=True))
    image = TiffImage(path)
    server = ViewerServer(FileCatalog({"img": image}), ViewerConfig(port=0))
    server.start()
    try:
        os.truncate(path, path.stat().st_size // 2)  # the tail tiles are gone now
        with open(path, "r+b") as fh:  # and the first one is noise
            fh.seek(image.pages[0].offsets[0])
            fh.write(b"\xff" * 64)
        with caplog.at_level("WARNING", logger="famos.viewer"):
            for target in ("/iiif/3/img/0,0,256,256/max/0/default.png", "/iiif/3/img/256,256,256,256/max/0/default.png"):
                status, _, body = request(server, target)
                assert status == 500 and len(body.decode().splitlines()) == 1 and b"tile" in body, body
        assert caplog.records and all(r.exc_info is None for r in caplog.records)
        assert request(server, "/iiif/3/img/info.json")[0] == 200  # the server goes on
    finally:
        server.stop()
        image.close()


def test_an_output_over_the_configured_limit_is_refused_before_decoding(tmp_path):
    from famos.viewer.iiif import OutputLimits

    path = tmp_path / "big.tif"
    write_tiled_tiff(path, [np.full((1000, 1200, 3), 90, np.uint8)], height=1000, width=1200, options=TiffOptions())
    image = TiffImage(path)
    decoded = []
    original = image.pages[0]._decode
    image.pages[0]._decode = lambda data, index, **kw: (decoded.append(index), original(data, index, **kw))[1]
    limits = OutputLimits(max_width=500, max_height=400, max_area=500 * 300)
    server = ViewerServer(FileCatalog({"img": image}), ViewerConfig(port=0, limits=limits))
    server.start()
    try:
        info = json.loads(request(server, "/iiif/3/img/info.json")[2])
        assert (info["maxWidth"], info["maxHeight"], info["maxArea"]) == (500, 400, 150000)
        assert all(s["width"] * s["height"] <= 150000 for s in info["sizes"])
        for size in ("1200,", "501,", ",401", "^40000,", "pct:100", "!1000,1000", "500,400"):
            status, _, body = request(server, f"/iiif/3/img/full/{size}/0/default.jpg")
            assert status == 400 and len(body.splitlines()) == 1 and b"limit" in body, (size, body)
        assert decoded == []
        status, _, body = request(server, "/iiif/3/img/full/max/0/default.png")
        from PIL import Image

        width, height = Image.open(io.BytesIO(body)).size
        assert status == 200 and width <= 500 and height <= 400 and width * height <= 150000
    finally:
        server.stop()
        image.close()
