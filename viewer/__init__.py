"""Deep-zoom viewing of famos renders: IIIF Image API 3.0 and an OpenSeadragon page."""
