"""The viewer: IIIF Image API 3.0 level 2 checked by the official validator, reads bounded by the
request, IIIF status codes for bad requests, a running job watched live, and a real headless
browser drawing the tiles."""

from __future__ import annotations

import io
import pathlib
import json
import shutil
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import SERVER_MODEL
from headless import Browser
from famos.tiff_options import Compression, TiffOptions
from famos.tiff_writer import write_tiled_tiff
from famos.viewer.cli import DEFAULT_OPENSEADRAGON
from famos.viewer.server import ViewerServer
from famos.viewer.sources import TiffImage

VALIDATOR_ID = "67352ccc-d1b0-11e1-89ae-279075081939"  # the image the validator's tests expect


def write(path, image, **options) -> None:
    write_tiled_tiff(path, [image], height=image.shape[0], width=image.shape[1], options=TiffOptions(**options))


def squares() -> np.ndarray:
    """The validator's test image: 10 x 10 squares of 100 px in its known colours."""
    from iiif_validator.validator import ValidationInfo

    colours = ValidationInfo().colorInfo
    image = np.zeros((1000, 1000, 3), np.uint8)
    for x in range(10):
        for y in range(10):
            image[y * 100 : (y + 1) * 100, x * 100 : (x + 1) * 100] = colours[x][y]
    return image


def smooth(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.fixture
def serve(serve_viewer):
    return serve_viewer


def get(server: ViewerServer, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_the_official_iiif_validator_passes_level_2(serve, tmp_path):
    pytest.importorskip("iiif_validator")
    from iiif_validator.validator import ImageAPI, TestSuite, ValidationInfo

    write(tmp_path / f"{VALIDATOR_ID}.tif", squares())
    server = serve({VALIDATOR_ID: TiffImage(tmp_path / f"{VALIDATOR_ID}.tif")})
    tests = TestSuite(ValidationInfo()).list_tests("3.0")
    failed, run = [], 0
    for name, test in sorted(tests.items()):
        if test["level"] > 2:
            continue
        run += 1
        result = ImageAPI(VALIDATOR_ID, f"127.0.0.1:{server.port}", "iiif/3", "http", "", "3.0", debug=False)
        TestSuite(ValidationInfo()).run_test(name, result)
        if result.exception:
            failed.append(f"{name}: {result.exception.type} got {result.exception.got!r} "
                          f"expected {result.exception.expected!r} ({result.urls})")
    assert run >= 30 and not failed, "\n".join(failed)


def test_zoom_levels_built_for_a_file_without_a_pyramid_equal_the_files_own(serve, tmp_path):
    image = smooth(700, 1100)
    write(tmp_path / "with.tif", image, tile=64, pyramid=True)
    write(tmp_path / "without.tif", image, tile=64)
    server = serve({"with": TiffImage(tmp_path / "with.tif"), "without": TiffImage(tmp_path / "without.tif")})
    with_info = json.loads(get(server, "/iiif/3/with/info.json")[2])
    without_info = json.loads(get(server, "/iiif/3/without/info.json")[2])
    assert with_info["tiles"] == without_info["tiles"] == [{"width": 128, "height": 128, "scaleFactors": [1, 2, 4, 8, 16, 32]}]
    for request in ["full/max/0/default.png", "full/!300,300/0/default.png", "256,128,512,256/128,/0/default.png",
                    "0,0,1024,1024/64,/0/default.png", "square/pct:10/90/gray.png"]:
        status, _, with_bytes = get(server, f"/iiif/3/with/{request}")
        assert status == 200, request
        assert get(server, f"/iiif/3/without/{request}")[2] == with_bytes, request
    full = np.asarray(Image.open(io.BytesIO(get(server, "/iiif/3/without/full/max/0/default.png")[2])))
    assert np.array_equal(full, image)


def test_a_tile_request_decodes_only_the_tiles_under_it(serve, tmp_path):
    write(tmp_path / "big.tif", smooth(2048, 2048), tile=256, pyramid=True, compression=Compression.ZSTD)
    image = TiffImage(tmp_path / "big.tif")
    decoded = []
    for page in image.pages:
        original = page._decode
        page._decode = lambda data, index, _original=original, _level=len(decoded), **kw: (
            decoded.append(index), _original(data, index, **kw))[1]
    server = serve({"big": image})
    assert get(server, "/iiif/3/big/512,512,512,512/512,/0/default.jpg")[0] == 200
    assert len(decoded) == 4  # the 2x2 file tiles under one 512 px IIIF tile
    decoded.clear()
    assert get(server, "/iiif/3/big/full/256,/0/default.jpg")[0] == 200
    assert len(decoded) == 1  # the whole image small: one tile of a pyramid level, not 64 full ones


@pytest.mark.parametrize("path, status", [
    ("/iiif/3/img/2000,0,10,10/max/0/default.jpg", 400),  # region outside the image
    ("/iiif/3/img/full/5000,/0/default.jpg", 400),  # larger than the region without ^
    ("/iiif/3/img/full/^100000,/0/default.jpg", 400),  # past the server's size limit
    ("/iiif/3/img/full/max/45/default.jpg", 400),  # rotation other than multiples of 90
    ("/iiif/3/img/full/max/0/sepia.jpg", 400),
    ("/iiif/3/img/full/max/0/default.gif", 400),
    ("/iiif/3/img/full/max/0/default", 400),
    ("/iiif/3/img/full/max/0", 400),
    ("/iiif/3/nope/info.json", 404),
    ("/iiif/3/..%2F..%2Fetc%2Fpasswd/info.json", 404),
    ("/openseadragon/../../../../etc/passwd", 404),
    ("/openseadragon/%2E%2E/%2E%2E/%2E%2E/pyproject.toml", 404),
    ("/nothing/here", 404),
])
def test_bad_requests_get_iiif_status_codes_in_one_line(serve, tmp_path, path, status):
    write(tmp_path / "img.tif", smooth(300, 400))
    server = serve({"img": TiffImage(tmp_path / "img.tif")}, openseadragon=str(tmp_path))
    code, headers, body = get(server, path)
    assert code == status, body
    text = body.decode()
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    assert headers.get("Access-Control-Allow-Origin") == "*"


def test_iiif_and_status_need_the_token_the_page_does_not(serve, tmp_path):
    write(tmp_path / "img.tif", smooth(300, 400), dpi=300)
    server = serve({"img": TiffImage(tmp_path / "img.tif")}, token="s3cret")
    assert get(server, "/iiif/3/img/info.json")[0] == 401
    assert get(server, "/iiif/3/img/info.json", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = get(server, "/api/img/status.json", {"Authorization": "Bearer s3cret"})
    assert status == 200
    facts = json.loads(body)
    assert (facts["width"], facts["height"], facts["dpi"], facts["state"]) == (400, 300, 300.0, "finished")
    assert get(server, "/")[0] == 200


def test_a_running_job_is_watched_live_then_shown_from_its_file(models, tmp_path):
    from famos.clients.render_client import RenderClient
    from famos.values import JobState
    from famos.render_server.server import RenderServer, ServerConfig
    from test_server import slow_down

    store = tmp_path / "store"
    store.mkdir()
    server = RenderServer(ServerConfig(models=models, output=store, port=0, http_port=0, token="t"))
    server.start()
    auth = {"Authorization": "Bearer t"}
    try:
        slow_down(server, 0.04)
        with RenderClient(f"127.0.0.1:{server.port}", token="t") as client:
            job = client.submit(SERVER_MODEL, output_name="live.tif", seed=3, chunk=32, size=(192, 320),
                                tiff=TiffOptions(tile=32))
            seen = None
            for _ in range(400):  # until some strips are in and some are not
                status = json.loads(get(server.viewer, f"/api/{job.id}/status.json", auth)[2])
                if status["state"] == "rendering" and 0 < status["rows_done"] < status["rows_total"]:
                    seen = status
                    break
                time.sleep(0.02)
            assert seen is not None, "never saw the job half rendered"
            code, _, body = get(server.viewer, f"/iiif/3/{job.id}/full/max/0/default.png", auth)
            assert code == 200
            partial = np.asarray(Image.open(io.BytesIO(body)))
            assert partial.shape == (192, 320, 3)
            assert partial[-1].max() == 0  # the last rows are not rendered yet: black
            assert partial[0].max() > 0
            assert seen["description"]["model"] == SERVER_MODEL and seen["width"] == 320
            assert client.wait(job.id).state is JobState.SUCCEEDED
        status = json.loads(get(server.viewer, f"/api/{job.id}/status.json", auth)[2])
        assert status["state"] == "finished" and status["rows_done"] == 192
        body = get(server.viewer, f"/iiif/3/{job.id}/full/max/0/default.png", auth)[2]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), tifffile.imread(store / "live.tif"))
        assert get(server.viewer, "/iiif/3/../live.tif/info.json", auth)[0] == 404  # job ids, never paths
    finally:
        server.stop(0)


@pytest.mark.skipif(shutil.which("chromium") is None or not (DEFAULT_OPENSEADRAGON / "openseadragon.min.js").is_file(),
                    reason="needs Debian's chromium and `npm ci --prefix viewer/static` (.ci/run installs both)")
def test_a_headless_browser_draws_the_tiles(serve, tmp_path):
    quadrants = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 210, 40)]
    image = np.zeros((2048, 2048, 3), np.uint8)
    for k, colour in enumerate(quadrants):
        image[k // 2 * 1024 : (k // 2 + 1) * 1024, k % 2 * 1024 : (k % 2 + 1) * 1024] = colour
    write(tmp_path / "quadrants.tif", image, pyramid=True, dpi=150)
    server = serve({"quadrants": TiffImage(tmp_path / "quadrants.tif")}, openseadragon=str(DEFAULT_OPENSEADRAGON))
    with Browser(server.url) as browser:
        browser.wait_for("window.famos && famos.viewer && famos.viewer.world.getItemCount() > 0"
                         " && famos.viewer.world.getItemAt(0).getFullyLoaded()")
        text = browser.evaluate("document.body.innerText")
        assert "2048 x 2048 px" in text and "150" in text, text
        assert int(browser.evaluate("document.body.dataset.tilesLoaded")) > 0
        deadline = time.monotonic() + 60
        while True:  # loaded tiles are drawn on the next animation frames
            shot = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB")).reshape(-1, 3).astype(int)
            # every quadrant's colour is on screen, as in the TIFF's overview
            shares = [(np.abs(shot - colour).max(axis=1) < 12).mean() for colour in quadrants]
            if min(shares) > 0.03 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert min(shares) > 0.03, shares
    assert server.requests > 0  # tiles were asked for over IIIF


def test_famos_view_refuses_what_it_cannot_show_in_one_line(tmp_path, capsys):
    from famos.cli import main

    (tmp_path / "notes.tif").write_text("not a TIFF")
    write(tmp_path / "img.tif", smooth(64, 64))
    cases = [
        (["view", str(tmp_path / "img.tif"), "--openseadragon", str(tmp_path / "nowhere")], "npm ci --prefix viewer/static"),
        (["view", str(tmp_path / "missing.tif"), "--openseadragon", "http://127.0.0.1:9/osd"], "no such file"),
        (["view", str(tmp_path / "notes.tif"), "--openseadragon", "http://127.0.0.1:9/osd"], "not a tiled RGB TIFF"),
    ]
    for argv, fragment in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in err, err


def test_without_a_local_openseadragon_the_page_loads_the_pinned_one_with_its_hash(monkeypatch, tmp_path, capsys):
    """A pip install has no `npm ci`: the viewer still starts (the IIIF server needs no browser
    library) and the page loads the pinned OpenSeadragon from its CDN, integrity-checked."""
    import json as json_module

    from famos.viewer import cli as viewer_cli
    from famos.viewer.page import PINNED_OPENSEADRAGON, viewer_page

    monkeypatch.delenv("FAMOS_OPENSEADRAGON", raising=False)
    monkeypatch.setattr(viewer_cli, "DEFAULT_OPENSEADRAGON", tmp_path / "no-npm-here")
    assert viewer_cli.openseadragon_location(None) == PINNED_OPENSEADRAGON.url
    assert "npm ci" in capsys.readouterr().err
    page = viewer_page("mosaic", osd_url=PINNED_OPENSEADRAGON.url)
    assert (f'<script src="{PINNED_OPENSEADRAGON.url}/openseadragon.min.js" integrity="{PINNED_OPENSEADRAGON.integrity}" '
            'crossorigin="anonymous"></script>') in page
    assert "integrity" not in viewer_page("mosaic", osd_url="/openseadragon")  # a local copy needs none
    package = json_module.loads((pathlib.Path(viewer_cli.__file__).parent / "static" / "package.json").read_text())
    assert package["dependencies"]["openseadragon"] == PINNED_OPENSEADRAGON.version
    assert f"@{PINNED_OPENSEADRAGON.version}/" in PINNED_OPENSEADRAGON.url


def test_the_pinned_hash_is_the_npm_packages_file():
    import base64
    import hashlib

    from famos.viewer import cli as viewer_cli
    from famos.viewer.page import PINNED_OPENSEADRAGON

    script = pathlib.Path(viewer_cli.DEFAULT_OPENSEADRAGON) / "openseadragon.min.js"
    if not script.is_file():
        pytest.skip("no local OpenSeadragon (npm ci --prefix viewer/static)")
    digest = base64.b64encode(hashlib.sha384(script.read_bytes()).digest()).decode()
    assert PINNED_OPENSEADRAGON.integrity == f"sha384-{digest}"


def test_each_image_has_a_iiif_presentation_manifest_with_its_provenance(serve, tmp_path):
    """/iiif/3/{id}/manifest.json: one Canvas of the image's size painted by its Image API service,
    the render's provenance as metadata; validated by the iiif-prezi3 models where they install."""
    path = tmp_path / "mosaic.tif"
    description = {"model": "mosaic", "seed": 7, "canvas": {"width": 640, "height": 480}}
    write_tiled_tiff(path, [smooth(480, 640)], height=480, width=640, options=TiffOptions(dpi=150),
                     description=description)
    server = serve({"mosaic": TiffImage(path)})
    status, headers, body = get(server, "/iiif/3/mosaic/manifest.json")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    document = json.loads(body)
    base = server.url + "iiif/3/mosaic"
    assert document["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert document["type"] == "Manifest" and document["id"] == f"{base}/manifest.json"
    (canvas,) = document["items"]
    assert (canvas["type"], canvas["width"], canvas["height"]) == ("Canvas", 640, 480)
    (annotation,) = canvas["items"][0]["items"]
    assert annotation["motivation"] == "painting" and annotation["target"] == canvas["id"]
    (service,) = annotation["body"]["service"]
    _, _, info = get(server, "/iiif/3/mosaic/info.json")
    assert service["id"] == json.loads(info)["id"] and service["type"] == "ImageService3"
    status, headers, _ = get(server, annotation["body"]["id"][len(server.url.rstrip("/")):])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    metadata = {m["label"]["en"][0]: m["value"]["none"][0] for m in document["metadata"]}
    assert metadata["model"] == "mosaic" and metadata["seed"] == "7" and metadata["canvas.width"] == "640"
    assert metadata["resolution"] == "150 dpi"
    assert get(server, "/iiif/3/nothing/manifest.json")[0] == 404
    prezi3 = pytest.importorskip("iiif_prezi3")
    assert prezi3.Manifest.model_validate(document).id == document["id"]
