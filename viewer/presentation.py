"""IIIF Presentation API 3.0: one Manifest per image, so that Mirador, Universal Viewer and other
IIIF clients open a render from its URL alone, with its provenance shown as metadata.

    Manifest {id: .../iiif/3/{identifier}/manifest.json, label, metadata: provenance}
      Canvas {width, height}                      the render's pixels
        AnnotationPage
          Annotation (painting)
            Image .../full/max/0/default.jpg      its ImageService3 (info.json) for deep zoom
"""

from __future__ import annotations

import json
from typing import Any

from famos.viewer.iiif import PROFILE
from famos.viewer.sources import ImageSource

CONTEXT = "http://iiif.io/api/presentation/3/context.json"
# Provenance is the render's own JSON; a manifest shows it whole, but bounded: a value past this is
# cut (a hand-made TIFF may carry anything in its ImageDescription).
MAX_METADATA_ENTRIES = 64
MAX_VALUE_CHARS = 500


def manifest(source: ImageSource, *, identifier: str, base: str) -> dict[str, Any]:
    """The Manifest of ``source``, whose Image API service is at ``base`` (``.../iiif/3/{identifier}``)."""
    canvas = f"{base}/canvas/1"
    metadata = [
        {"label": {"en": [key]}, "value": {"none": [value]}} for key, value in provenance_entries(source)
    ]
    return {
        "@context": CONTEXT,
        "id": f"{base}/manifest.json",
        "type": "Manifest",
        "label": {"none": [identifier]},
        "summary": {"en": [f"{source.width} x {source.height} px, rendered by famos"]},
        "metadata": metadata,
        "items": [{
            "id": canvas,
            "type": "Canvas",
            "width": source.width,
            "height": source.height,
            "items": [{
                "id": f"{canvas}/page",
                "type": "AnnotationPage",
                "items": [{
                    "id": f"{canvas}/page/image",
                    "type": "Annotation",
                    "motivation": "painting",
                    "target": canvas,
                    "body": {
                        "id": f"{base}/full/max/0/default.jpg",  # "max" honours the server's size limits
                        "type": "Image",
                        "format": "image/jpeg",
                        "width": source.width,
                        "height": source.height,
                        "service": [{"id": base, "type": "ImageService3", "profile": PROFILE}],
                    },
                }],
            }],
        }],
    }


def provenance_entries(source: ImageSource) -> list[tuple[str, str]]:
    """(label, text) pairs of the image's provenance, nested keys joined by dots, and its DPI."""
    entries: list[tuple[str, str]] = []

    def add(prefix: str, value: Any) -> None:
        if len(entries) >= MAX_METADATA_ENTRIES:
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        text = value if isinstance(value, str) else json.dumps(value)
        entries.append((prefix[:100], text[:MAX_VALUE_CHARS]))

    add("", source.description if isinstance(source.description, dict) else {})
    if source.dpi:
        add("resolution", f"{source.dpi:g} dpi")
    return entries
