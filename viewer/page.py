"""The viewer's pages: deep zoom through OpenSeadragon (loaded from the server's OpenSeadragon
folder or a configured URL, never from this repository), the render's provenance and progress.

While an image is still rendering the page polls its status; when rows were added it asks
OpenSeadragon for the tiles again (a version number in the tile URLs defeats its cache).
"""

from __future__ import annotations

import dataclasses
import html
import json
import re

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>famos: __TITLE__</title>
<style>
  html, body { margin: 0; height: 100%; background: #1e1e1e; color: #ddd; font: 14px system-ui, sans-serif; }
  body { display: flex; flex-direction: column; }
  header { padding: 8px 14px; height: 36px; display: flex; gap: 18px; align-items: baseline; overflow: hidden; }
  h1 { font-size: 16px; margin: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 40%; }
  #facts { white-space: nowrap; overflow: hidden; }
  #facts span { margin-right: 14px; color: #aaa; }
  #facts b { color: #eee; font-weight: 600; }
  #viewer { flex: 1; position: relative; background: #000; }
  #error { color: #f88; }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <div id="facts"></div>
  <progress id="progress" max="1" value="0" hidden></progress>
  <span id="error"></span>
</header>
<div id="viewer"></div>
<script src="__OSD_SCRIPT__"__OSD_INTEGRITY__></script>
<script>
"use strict";
const config = __CONFIG__;
const identifier = config.identifier;
const base = "/iiif/3/" + encodeURIComponent(identifier);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
let version = 0, rowsDone = -1, tiledImage = null;
window.famos = { tilesLoaded: 0, status: null };

function fact(name, value) {
  if (value === null || value === undefined || value === "") return "";
  const span = document.createElement("span");
  span.append(name + " ");
  const b = document.createElement("b");
  b.textContent = value;
  span.append(b);
  return span;
}

function showFacts(s) {
  const d = s.description || {};
  const facts = document.getElementById("facts");
  facts.replaceChildren(...[
    fact("model", d.model), fact("seed", d.seed),
    fact("size", s.width + " x " + s.height + " px"),
    fact("DPI", s.dpi ? Math.round(s.dpi) : "not set"),
    fact("print", s.dpi ? (s.width / s.dpi * 2.54).toFixed(1) + " x " + (s.height / s.dpi * 2.54).toFixed(1) + " cm" : ""),
    fact("state", s.state),
    fact("rendered", Math.round(100 * s.rows_done / s.rows_total) + " %"),
  ].filter(Boolean));
  const bar = document.getElementById("progress");
  bar.hidden = s.rows_done >= s.rows_total;
  bar.value = s.rows_done / s.rows_total;
}

async function getJSON(url) {
  const response = await fetch(url, { headers });
  if (!response.ok) throw new Error(url + ": " + response.status + " " + (await response.text()));
  return response.json();
}

async function poll() {
  try {
    const s = await getJSON("/api/" + encodeURIComponent(identifier) + "/status.json");
    window.famos.status = s;
    showFacts(s);
    if (rowsDone >= 0 && s.rows_done !== rowsDone && tiledImage) {
      version += 1;  // new rows: fetch the tiles again, past OpenSeadragon's cache
      tiledImage.reset();
    }
    rowsDone = s.rows_done;
    if (s.rows_done < s.rows_total || s.state !== "finished") setTimeout(poll, 2000);
  } catch (err) {
    document.getElementById("error").textContent = err.message;
    setTimeout(poll, 5000);
  }
}

async function start() {
  if (typeof OpenSeadragon === "undefined") {
    document.getElementById("error").textContent =
      "OpenSeadragon did not load from " + config.osd + " (see README: npm install --prefix viewer/static)";
    return;
  }
  const info = await getJSON(base + "/info.json");
  // tiles from the address this page came from: the server names itself by its configured address,
  // which may be a wildcard (0.0.0.0) or not the one a proxy in front of it is reached at
  info.id = new URL(base, location.href).href;
  const source = new OpenSeadragon.IIIFTileSource(info);
  const tileUrl = source.getTileUrl.bind(source);
  source.getTileUrl = (level, x, y) => tileUrl(level, x, y) + "?v=" + version;
  const viewer = OpenSeadragon({
    id: "viewer", prefixUrl: config.osd + "/images/", showNavigator: true, maxZoomPixelRatio: 4,
    loadTilesWithAjax: true, ajaxHeaders: headers, crossOriginPolicy: "Anonymous",
  });
  viewer.addHandler("tile-loaded", () => {  // counted where a test (or a curious user) can read it
    window.famos.tilesLoaded += 1;
    document.body.dataset.tilesLoaded = window.famos.tilesLoaded;
  });
  viewer.addHandler("open", () => { tiledImage = viewer.world.getItemAt(0); });
  window.famos.viewer = viewer;  // for a test (or a console) to ask whether everything is drawn
  viewer.open(source);
  poll();
}
start().catch(err => { document.getElementById("error").textContent = err.message; });
</script>
</body>
</html>
"""

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>famos renders</title>
<style>body { font: 14px system-ui, sans-serif; margin: 2em; } #error { color: #b00; }</style></head>
<body><h1>famos renders</h1><ul id="list"></ul><p id="error"></p>
<script>
"use strict";
// the list is asked for like any image, with the token of this page's #token=... fragment
// (browsers never send a fragment, so the page itself carries no identifiers)
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const view = id => "/view/" + encodeURIComponent(id) + location.hash;
fetch("/api/images.json", { headers: token ? { Authorization: "Bearer " + token } : {} })
  .then(async response => {
    if (!response.ok) throw new Error(response.status + " " + (await response.text()));
    return response.json();
  })
  .then(({ identifiers }) => {
    if (identifiers.length === 1) return location.replace(view(identifiers[0]));
    const list = document.getElementById("list");
    list.replaceChildren(...identifiers.map(id => {
      const link = document.createElement("a");
      link.href = view(id);
      link.textContent = id;
      const item = document.createElement("li");
      item.append(link);
      return item;
    }));
    if (!identifiers.length) list.textContent = "nothing to show yet";
  })
  .catch(err => { document.getElementById("error").textContent = err.message; });
</script>
</body></html>
"""

_PLACEHOLDER = re.compile(r"__([A-Z][A-Z_]*?)__")
# what could end an inline <script> (</script>, <!--) or, for older JavaScript, a line (U+2028/9)
_SCRIPT_UNSAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _fill(template: str, values: dict[str, str]) -> str:
    """The template with its placeholders replaced in one pass: a value is never searched for
    placeholders itself, so an identifier spelt like one stays the text it is."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def script_json(value: object) -> str:
    """``value`` as a JavaScript literal that is safe inside an inline <script>."""
    return json.dumps(value).translate(_SCRIPT_UNSAFE)


@dataclasses.dataclass(frozen=True)
class PinnedScript:
    """A script from a CDN, pinned to one version and its Subresource Integrity hash: a browser
    runs it only if its bytes are those."""

    version: str
    url: str  # the folder holding openseadragon.min.js and images/
    integrity: str


# viewer/static/package.json's version. The hash is of the npm package's build/openseadragon/
# openseadragon.min.js, the file jsDelivr serves from the npm registry (tests/test_viewer.py checks
# it against the npm copy where one is installed).
PINNED_OPENSEADRAGON = PinnedScript(
    version="6.1.1",
    url="https://cdn.jsdelivr.net/npm/openseadragon@6.1.1/build/openseadragon",
    integrity="sha384-KKly+4vqqBHitr2XfNKWa3+0asIVpzYs2HijkM/zz0X6rgnyLuQEVERX9HqkM5/P",
)


def viewer_page(identifier: str, *, osd_url: str) -> str:
    pinned = osd_url == PINNED_OPENSEADRAGON.url
    integrity = f' integrity="{PINNED_OPENSEADRAGON.integrity}" crossorigin="anonymous"' if pinned else ""
    return _fill(_PAGE, {
        "TITLE": html.escape(identifier),
        "OSD_SCRIPT": html.escape(f"{osd_url}/openseadragon.min.js"),
        "OSD_INTEGRITY": integrity,
        "CONFIG": script_json({"identifier": identifier, "osd": osd_url}),
    })


def index_page() -> str:
    """The list of images: the page fetches it from /api/images.json."""
    return _INDEX
