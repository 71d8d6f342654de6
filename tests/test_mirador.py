"""The IIIF Presentation manifest opened in Mirador 4, a real IIIF client, in headless chromium:
Mirador, on another origin, reads /iiif/3/{id}/manifest.json, shows its label and provenance, and
its OpenSeadragon draws the image from the viewer's Image API tiles."""

from __future__ import annotations

import functools
import io
import json
import pathlib
import shutil
import string
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from headless import Browser
from famos.tiff_options import TiffOptions
from famos.tiff_writer import write_tiled_tiff
from famos.viewer.sources import TiffImage

MIRADOR = pathlib.Path(__file__).parent / "mirador"  # its package.json pins the version tested
MIRADOR_SCRIPT = MIRADOR / "node_modules" / "mirador" / "dist" / "mirador.min.js"  # the UMD build
IDENTIFIER = "quadrants-in-mirador"
QUADRANTS = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 210, 40)]
WINDOW = "famos"  # Mirador's id for its one window, so the page can find that window's OpenSeadragon

# Mirador's documented embedding: its UMD build defines window.Mirador, and Mirador.viewer renders
# into the element named by id, with one window on the manifest and its information panel open.
PAGE = string.Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>famos in Mirador</title>
<script src="node_modules/mirador/dist/mirador.min.js"></script></head>
<body style="margin: 0"><div id="mirador" style="position: absolute; inset: 0"></div>
<script>
window.mirador = Mirador.viewer({
  id: "mirador",
  windows: [{id: $window, manifestId: $manifest, sideBarOpen: true, sideBarPanel: "info"}],
  workspaceControlPanel: {enabled: false},
});
</script></body></html>
""")

# The OpenSeadragon inside Mirador's window, once it has an image fully loaded.
LOADED = f"""(() => {{
  const viewer = Mirador.OSDReferences.get({json.dumps(WINDOW)})?.current;
  const item = viewer && viewer.world.getItemCount() > 0 && viewer.world.getItemAt(0);
  return item && item.getFullyLoaded() && item.source.id;
}})()"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def page_server(tmp_path):
    """A second loopback origin serving a folder (the test writes its page there; Mirador's
    node_modules is linked beside it); yields the folder and its URL."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "node_modules").symlink_to(MIRADOR / "node_modules", target_is_directory=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, name="mirador-page", daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.skipif(shutil.which("chromium") is None or not MIRADOR_SCRIPT.is_file(),
                    reason="needs Debian's chromium and `npm ci --prefix tests/mirador` (.ci/run installs both)")
def test_mirador_opens_the_manifest_and_draws_the_tiles(serve_viewer, page_server, tmp_path):
    image = np.zeros((1024, 1024, 3), np.uint8)
    for k, colour in enumerate(QUADRANTS):
        image[k // 2 * 512 : (k // 2 + 1) * 512, k % 2 * 512 : (k % 2 + 1) * 512] = colour
    path = tmp_path / f"{IDENTIFIER}.tif"
    description = {"model": "quadrants", "seed": 7, "canvas": {"width": 1024, "height": 1024}}
    write_tiled_tiff(path, [image], height=1024, width=1024, options=TiffOptions(pyramid=True, dpi=150),
                     description=description)
    server = serve_viewer({IDENTIFIER: TiffImage(path)})
    base = f"{server.url}iiif/3/{IDENTIFIER}"
    site, page_url = page_server
    manifest = f"{base}/manifest.json"
    (site / "index.html").write_text(PAGE.substitute(window=json.dumps(WINDOW), manifest=json.dumps(manifest)))

    with Browser(page_url, width=1200, height=800) as browser:
        # the label in the window's title bar, the provenance in its information panel
        browser.wait_for(f"[...document.querySelectorAll('h2')].some(h => h.textContent === {json.dumps(IDENTIFIER)})")
        text = browser.wait_for("document.body.innerText.includes('150 dpi') && document.body.innerText")
        assert "quadrants" in text and "seed" in text, text
        # Mirador's OpenSeadragon opened the image's service (info.json) and loaded its tiles
        assert browser.wait_for(LOADED) == base
        tiles = browser.evaluate(f"performance.getEntriesByType('resource').map(e => e.name)"
                                 f".filter(n => n.startsWith({json.dumps(base + '/')}) && n.endsWith('.jpg'))")
        regions = {name[len(base) + 1 :].split("/")[0] for name in tiles}
        assert regions - {"full"}, f"Mirador fetched no tiles, only {tiles}"  # deep zoom, not one picture
        deadline = time.monotonic() + 30
        while True:  # loaded tiles are drawn on the next animation frames
            png = browser.screenshot()
            shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
            shares = [(np.abs(shot - colour).max(axis=1) < 12).mean() for colour in QUADRANTS]
            if min(shares) > 0.02 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    (tmp_path / "mirador.png").write_bytes(png)  # to look at when this fails
    assert min(shares) > 0.02, shares  # every quadrant's colour is on screen
    assert server.requests >= len(tiles)  # the viewer answered them as IIIF image requests
