"""The viewer's pages: deep zoom through OpenSeadragon (loaded from the server's OpenSeadragon
folder or a configured URL, never from this repository), the render's provenance and progress.

While an image is still rendering the page polls its status; when rows were added it asks
OpenSeadragon for the tiles again (a version number in the tile URLs defeats its cache).
"""

from __future__ import annotations

import html
import json
import urllib.parse

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
<script src="__OSD__/openseadragon.min.js"></script>
<script>
"use strict";
const identifier = __IDENTIFIER__;
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
      "OpenSeadragon did not load from __OSD__ (see README: npm install --prefix viewer/static)";
    return;
  }
  const info = await getJSON(base + "/info.json");
  const source = new OpenSeadragon.IIIFTileSource(info);
  const tileUrl = source.getTileUrl.bind(source);
  source.getTileUrl = (level, x, y) => tileUrl(level, x, y) + "?v=" + version;
  const viewer = OpenSeadragon({
    id: "viewer", prefixUrl: "__OSD__/images/", showNavigator: true, maxZoomPixelRatio: 4,
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
<style>body { font: 14px system-ui, sans-serif; margin: 2em; }</style></head>
<body><h1>famos renders</h1><ul>__ITEMS__</ul>
<script>for (const link of document.links) link.hash = location.hash;  // keeps a #token=...</script>
</body></html>
"""


def viewer_page(identifier: str, *, osd_url: str) -> str:
    return (
        _PAGE.replace("__TITLE__", html.escape(identifier))
        .replace("__IDENTIFIER__", json.dumps(identifier).replace("</", "<\\/"))
        .replace("__OSD__", html.escape(osd_url))
    )


def index_page(identifiers: list[str]) -> str:
    items = "".join(
        f'<li><a href="/view/{urllib.parse.quote(i, safe="")}">{html.escape(i)}</a></li>' for i in identifiers
    ) or "<li>nothing to show yet</li>"
    return _INDEX.replace("__ITEMS__", items)
