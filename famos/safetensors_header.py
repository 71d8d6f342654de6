"""The JSON header of a .safetensors file, read without torch and without loading its tensors.

    [8 bytes: header length, little-endian] [header: JSON object] [tensor bytes]

The header maps each tensor name to its dtype, shape and offsets; "__metadata__" maps strings to
strings, and famos keeps its own JSON (format, spec, provenance) under METADATA_KEY. Only JSON is
parsed here: nothing is unpickled.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

METADATA_KEY = "famos"
# The length is read before anything is verified, so a hostile or corrupt one must not make us read
# and parse gigabytes; real headers are kilobytes.
MAX_HEADER_BYTES = 2**27


def read_safetensors_header(fh: BinaryIO) -> dict[str, Any]:
    """The header of the safetensors stream at ``fh``'s start; ValueError if it is unusable."""
    prefix = fh.read(8)
    size = int.from_bytes(prefix, "little")
    if len(prefix) < 8 or not 0 < size < MAX_HEADER_BYTES:
        raise ValueError("header length out of range")
    raw = fh.read(size)
    if len(raw) < size:
        raise ValueError("header length out of range")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def famos_metadata(header: dict[str, Any]) -> dict[str, Any] | None:
    """What famos stored in a header's metadata; None when the file carries none."""
    metadata = header.get("__metadata__") or {}
    stored = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if stored is None:
        return None
    if not isinstance(stored, str):
        raise ValueError(f"metadata {METADATA_KEY!r} is not a string")
    embedded = json.loads(stored)
    if not isinstance(embedded, dict):
        raise ValueError(f"metadata {METADATA_KEY!r} is not a JSON object")
    return embedded
