"""The viewer's HTTP/IIIF surface under generated requests (hypothesis, bounded in count and time,
loopback only): identifiers, region/size/rotation/quality/format strings, percent-encodings, odd
request targets and headers. Every answer is a documented status, never 500 or a dropped
connection, and nothing outside the served files is opened."""

from __future__ import annotations

import http.client
import mimetypes
import os
import socket
import sys
import sysconfig
import threading
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from famos.tiff_options import TiffOptions
from famos.tiff_writer import write_tiled_tiff
from famos.viewer.cli import FileCatalog
from famos.viewer.server import ViewerConfig, ViewerServer
from famos.viewer.sources import TiffImage

DOCUMENTED = {200, 204, 303, 400, 401, 404, 413, 503}
EXAMPLES = dict(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)
TOKEN = "s3cret"
LIBRARIES = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")} | {sys.prefix})

opened: list[str] = []
_watching = threading.Event()


def _audit(event: str, args: tuple) -> None:
    # handler threads only: hypothesis and pytest open files of their own
    if event == "open" and _watching.is_set() and "process_request" in threading.current_thread().name:
        if isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # a hook cannot be removed: it records only while _watching is set

identifiers = st.one_of(st.just("img"), st.text(max_size=30), st.sampled_from(
    ["..", ".", "../img", "img/..", "%2e%2e", "img\x00", "/etc/passwd", "img.tif", "IMG", "secret"]))
numbers = st.one_of(st.integers(0, 5000).map(str), st.sampled_from(["", "-1", "0", "1e3", "1.5", "9" * 30, "²", "٣"]))
regions = st.one_of(
    st.sampled_from(["full", "square", "", "pct:", "pct:0,0,100,100"]),
    st.lists(numbers, min_size=0, max_size=5).map(",".join),
    st.lists(numbers, min_size=4, max_size=4).map(lambda v: "pct:" + ",".join(v)),
    st.text(max_size=20),
)
sizes = st.one_of(
    st.sampled_from(["max", "^max", "pct:50", "^pct:200", "!100,100", "^!9999,9999", ",", "^", "!"]),
    st.tuples(st.sampled_from(["", "^", "!", "^!", "pct:"]), numbers, st.sampled_from([",", ""]), numbers)
    .map("".join),
    st.text(max_size=20),
)
rotations = st.one_of(st.sampled_from(["0", "90", "!180", "270", "360", "45", "-90", "!", "90.0"]), st.text(max_size=8))
qualities = st.one_of(st.sampled_from(["default", "color", "gray", "bitonal", "sepia", ""]), st.text(max_size=8))
formats = st.one_of(st.sampled_from(["jpg", "png", "gif", "", "jpg.png", "JPG"]), st.text(max_size=5))


def encoded(text: str, how: int) -> str:
    """``text`` as a path segment: raw where HTTP allows, percent-encoded, or doubly encoded."""
    if how == 0:
        return urllib.parse.quote(text, safe=",!^:")
    if how == 1:
        return urllib.parse.quote(text, safe="")
    return urllib.parse.quote(urllib.parse.quote(text, safe=""), safe="")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-viewer")
    (root / "secret").write_text("outside the served files")
    static = root / "static"
    static.mkdir()
    (static / "openseadragon.min.js").write_text("// served")
    (static / "escape").symlink_to(root / "secret")
    pixels = np.random.default_rng(0).integers(0, 256, (300, 500, 3), np.uint8)
    write_tiled_tiff(root / "img.tif", [pixels], height=300, width=500, options=TiffOptions(tile=64))
    image = TiffImage(root / "img.tif")
    server = ViewerServer(FileCatalog({"img": image}), ViewerConfig(port=0, token=TOKEN, openseadragon=str(static),
                                                                    max_connections=256))
    server.start()
    mimetypes.init()  # the system's type tables are read once, before the watching starts
    for target in ("/iiif/3/img/full/64,/0/default.jpg", "/iiif/3/img/full/64,/0/bitonal.png",
                   "/openseadragon/openseadragon.min.js"):  # codecs are imported on first use
        assert raw(server, f"GET {target} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())[0] == 200
    opened.clear()
    _watching.set()
    yield server, static
    _watching.clear()
    server.stop()
    image.close()


def raw(server: ViewerServer, data: bytes) -> tuple[int, bytes]:
    """Send ``data`` as it is; the status and body of the answer, which must come whole."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as connection:
        connection.sendall(data)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, response.read()


def checked(server: ViewerServer, target: str, headers: dict[str, str]) -> int:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    status, body = raw(server, ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
    assert status in DOCUMENTED, (target, status, body[:200])
    if status >= 400:
        text = body.decode()
        assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert b"outside the served files" not in body
    return status


auths = st.one_of(st.just(f"Bearer {TOKEN}"), st.just(""), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                                                   max_size=40))


@settings(**EXAMPLES)
@given(identifier=identifiers, region=regions, size=sizes, rotation=rotations, quality=qualities, fmt=formats,
       how=st.integers(0, 2), auth=auths)
def test_image_requests(served, identifier, region, size, rotation, quality, fmt, how, auth):
    server, _ = served
    segments = [encoded(p, how) for p in (identifier, region, size, rotation, f"{quality}.{fmt}")]
    checked(server, "/iiif/3/" + "/".join(segments), {"Authorization": auth} if auth else {})


@settings(**EXAMPLES)
@given(parts=st.lists(st.one_of(identifiers, st.sampled_from(["iiif", "3", "api", "view", "openseadragon", "info.json",
                                                             "status.json", "images.json", "escape", "..", "%2e%2e",
                                                             "openseadragon.min.js"])), max_size=6),
       how=st.integers(0, 2), query=st.text(max_size=20), absolute=st.booleans())
def test_request_targets(served, parts, how, query, absolute):
    server, _ = served
    target = "/" + "/".join(encoded(p, how) for p in parts)
    if query:
        target += "?" + urllib.parse.quote(query, safe="=&")
    if absolute:
        target = "http://127.0.0.1" + target
    checked(server, target, {"Authorization": f"Bearer {TOKEN}"})


header_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                      min_size=1, max_size=20)


@settings(**EXAMPLES)
@given(headers=st.dictionaries(header_text, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                                   max_size=200), max_size=6),
       target=st.sampled_from(["/", "/iiif/3/img/info.json", "/iiif/3/img/full/32,/0/default.jpg", "/api/images.json",
                               "*", "/openseadragon/escape", "/openseadragon/..%2Fsecret"]))
def test_odd_headers(served, headers, target):
    server, _ = served
    headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length",
                                                                     "transfer-encoding", "expect")}
    checked(server, target, headers)


def test_after_the_fuzz_only_served_files_were_opened_and_the_server_answers(served):
    server, static = served
    assert raw(server, b"GET /openseadragon/openseadragon.min.js HTTP/1.1\r\n\r\n")[0] == 200
    assert str(static / "openseadragon.min.js") in opened  # the watch sees what the handlers open
    outside = [p for p in opened if not os.path.realpath(p).startswith(str(static.resolve()) + os.sep)
               and not p.startswith(LIBRARIES)]  # an import's source is no served file, nor a secret
    assert outside == []
    status, body = raw(server, f"GET /iiif/3/img/info.json HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert status == 200 and b'"width": 500' in body
