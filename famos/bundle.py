"""The artifact bundle format: its files, its manifest, and loading with verification.

Pure numpy and JSON, no torch and no runtime: ``famos.runners`` runs a loaded bundle, ``export``
writes one.

    BUNDLE/
      manifest.json          format, model spec, halo, graph interface, provenance, file checksums
      model.onnx             G + memory in float32, BatchNorm folded, dynamic batch/height/width
      model_fp16.onnx        optional: the U-Net in float16 (inputs and outputs stay float32)
      model.ts               TorchScript of the same graph (scripted generator: any device)
      generator.safetensors  weights + spec: the eager PyTorch reference
      content.png            default content image
      preview.png            the canvas rendered by the eager model, long side <= 1024 px

The manifest lists every other file with its size and SHA-256, and loading checks them all, so a
truncated or modified file is refused before a runtime parses it. Nothing is unpickled: JSON, PNG,
ONNX protobuf and safetensors carry no code, and torch.jit.load restores only TorchScript types.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from famos import __version__
from famos.config import ModelSpec
from famos.canvas import load_rgb
from famos.errors import BundleError
from famos.files import file_sha256
from famos.planning import Halo
from famos.safetensors_header import famos_metadata, read_safetensors_header
from famos.window import check_window

FORMAT = "famos-bundle/2"  # 2: the graph takes the canvas size (any output size from one model)
READABLE_FORMATS = ("famos-bundle/1", FORMAT)  # a /1 bundle renders only its trained canvas
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
FP16_FILE = "model_fp16.onnx"
TORCHSCRIPT_FILE = "model.ts"
WEIGHTS_FILE = "generator.safetensors"
CONTENT_FILE = "content.png"
PREVIEW_FILE = "preview.png"
REQUIRED_FILES = (ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, CONTENT_FILE, PREVIEW_FILE)

# Graph interface names, shared by the exporter and every runner.
CONTENT_INPUT, ORIGIN_INPUT, CANVAS_INPUT, NOISE_INPUT = "content", "origin", "canvas", "noise"
IMAGE_OUTPUT, ALPHA_OUTPUT, MIX_OUTPUT = "image", "alpha", "mix_argmax"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One graph input or output; a str axis is dynamic ("batch", "height", ...)."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorInfo:
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]))


@dataclasses.dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """manifest.json, parsed. ``export`` records how the graphs were made (exporter, BatchNorm
    folding, measured parity, preview region); ``provenance`` where the weights came from."""

    spec: ModelSpec
    halo: Halo
    alignment: int
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    files: dict[str, FileEntry]
    provenance: dict[str, Any]
    export: dict[str, Any]
    fp16_file: str | None = None
    fp16_tolerance: float | None = None  # max |diff| of the fp16 graph against float32, output range [-1, 1]
    format: str = FORMAT
    code_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "code_version": self.code_version,
            "spec": self.spec.to_json(),
            "halo": dataclasses.asdict(self.halo),
            "alignment": self.alignment,
            "opset": self.opset,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "fp16_file": self.fp16_file,
            "fp16_tolerance": self.fp16_tolerance,
            "files": {name: dataclasses.asdict(entry) for name, entry in sorted(self.files.items())},
            "provenance": self.provenance,
            "export": self.export,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Raises KeyError, TypeError or ValueError for anything malformed: a count or size that is
        not a whole number (256.0, 1e30, Infinity, "abc") included, so it fails here, as one
        BundleError, and not later where it is used (a status message, a plan, a protobuf field)."""
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {data.get('format')!r}, expected one of {', '.join(READABLE_FORMATS)}")
        files = {
            str(name): FileEntry(sha256=str(entry["sha256"]), bytes=_whole(entry["bytes"], f"files.{name}.bytes"))
            for name, entry in data["files"].items()
        }
        for size in data["spec"]["style_sizes"]:
            for side in size:
                _whole(side, "spec.style_sizes")
        spec = ModelSpec.from_json(data["spec"])
        _check_numbers(spec.generator, "spec.generator")
        _check_numbers(spec.canvas, "spec.canvas")
        provenance = dict(data["provenance"])
        if provenance.get("steps") is not None:
            _whole(provenance["steps"], "provenance.steps", high=2**63 - 1)  # an int64 in ModelInfo
        fp16_file = data.get("fp16_file")
        if fp16_file is not None and not isinstance(fp16_file, str):
            raise ValueError(f"fp16_file = {fp16_file!r:.40} is not a file name")
        fp16_tolerance = data.get("fp16_tolerance")
        if fp16_tolerance is not None and not (_is_number(fp16_tolerance) and math.isfinite(fp16_tolerance)):
            raise ValueError(f"fp16_tolerance = {fp16_tolerance!r} is not a finite number")
        return cls(
            spec=spec,
            halo=Halo(**{str(k): _whole(v, f"halo.{k}") for k, v in data["halo"].items()}),
            alignment=_whole(data["alignment"], "alignment", low=1),
            opset=_whole(data["opset"], "opset", low=1),
            inputs=tuple(TensorInfo.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorInfo.from_json(t) for t in data["outputs"]),
            files=files,
            provenance=provenance,
            export=dict(data["export"]),
            fp16_file=fp16_file,
            fp16_tolerance=fp16_tolerance,
            format=data["format"],
            code_version=str(data["code_version"]),
        )

    def takes_noise(self) -> bool:
        return any(t.name == NOISE_INPUT for t in self.inputs)

    def takes_canvas(self) -> bool:
        """Whether the graph renders canvases other than the trained one (format 2 on)."""
        return any(t.name == CANVAS_INPUT for t in self.inputs)

    def graph_inputs(self) -> GraphInputs:
        return GraphInputs(
            alignment=self.alignment,
            trained_canvas=self.spec.canvas.aligned(self.alignment),
            takes_noise=self.takes_noise(),
            takes_canvas=self.takes_canvas(),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any, what: str, *, low: int = 0, high: int = 2**31 - 1) -> int:
    """``value`` if it is a whole JSON number in [low, high]; the default ``high`` fits the int32
    fields that carry sizes to clients."""
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{what} = {value!r:.40} is not a whole number from {low} to {high}")
    return value


def _check_numbers(config: Any, what: str) -> None:
    """Every int field of a config dataclass tree a whole int64, every float field finite
    (``from_dict`` takes JSON values as they come); ranges are ``verify_spec``'s."""
    import typing

    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, where = getattr(config, field.name), f"{what}.{field.name}"
        if dataclasses.is_dataclass(value):
            _check_numbers(value, where)
        elif value is None or isinstance(value, enum.Enum):
            continue
        elif int in typing.get_args(hints[field.name]) or hints[field.name] is int:
            _whole(value, where, low=-(2**63), high=2**63 - 1)
        elif hints[field.name] is float and not (_is_number(value) and math.isfinite(value)):
            raise ValueError(f"{where} = {value!r:.40} is not a finite number")
        elif hints[field.name] is bool and not isinstance(value, bool):
            raise ValueError(f"{where} = {value!r:.40} is not true or false")


@dataclasses.dataclass(frozen=True)
class GraphInputs:
    """How an exported graph (ONNX or TorchScript) is fed a window: the one place that checks the
    window, fills in the trained canvas and keeps a format-1 graph to its canvas."""

    alignment: int
    trained_canvas: tuple[int, int]  # aligned (height, width)
    takes_noise: bool
    takes_canvas: bool = True

    def __call__(
        self, content: np.ndarray, origin: np.ndarray, noise: np.ndarray | None, canvas: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """The graph's inputs by name, in its input order (content, origin, canvas, noise)."""
        check_window(content, origin, self.alignment)
        feeds = {
            CONTENT_INPUT: np.ascontiguousarray(content, dtype=np.float32),
            ORIGIN_INPUT: np.ascontiguousarray(origin, dtype=np.int64),
        }
        if canvas is None:
            canvas = np.tile(np.array([self.trained_canvas], dtype=np.int64), (len(content), 1))
        canvas = np.ascontiguousarray(canvas, dtype=np.int64)
        if self.takes_canvas:
            feeds[CANVAS_INPUT] = canvas
        elif np.any(canvas != self.trained_canvas):
            raise BundleError("this bundle (format 1) renders only its trained canvas: export it again for other sizes")
        if self.takes_noise:
            if noise is None:
                raise ValueError("this model has noise channels: pass its noise window")
            feeds[NOISE_INPUT] = np.ascontiguousarray(noise, dtype=np.float32)
        return feeds


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A verified bundle folder; ``sha256`` (of manifest.json, which hashes every other file)
    identifies it."""

    path: pathlib.Path
    manifest: Manifest
    sha256: str

    @property
    def spec(self) -> ModelSpec:
        return self.manifest.spec

    def default_content(self) -> np.ndarray:
        """The default content image, uint8 (H, W, 3)."""
        return load_rgb(self.path / CONTENT_FILE)


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """A bundle folder (or its manifest.json), with every file checked against the manifest."""
    path = pathlib.Path(path)
    folder = path.parent if path.name == MANIFEST and path.is_file() else path
    if not folder.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    manifest_path = folder / MANIFEST
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{folder}: not a famos bundle (no {MANIFEST})") from None
    try:
        manifest = Manifest.from_json(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"{manifest_path}: not valid JSON (truncated or corrupt)") from None
    except RecursionError:  # json and from_json recurse: a manifest nested thousands deep
        raise BundleError(f"{manifest_path}: nested too deeply to be a manifest") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise BundleError(f"{manifest_path}: invalid manifest ({type(err).__name__}: {err})") from None
    for name in REQUIRED_FILES + ((manifest.fp16_file,) if manifest.fp16_file else ()):
        if name not in manifest.files:
            raise BundleError(f"{manifest_path}: lists no {name}")
    for name, entry in manifest.files.items():
        if name != pathlib.PurePath(name).name or name in (".", "..", MANIFEST):
            raise BundleError(f"{manifest_path}: file name {name!r} is not a plain file of the bundle")
        verify_file(folder / name, entry)
    verify_spec(manifest, folder)
    return Bundle(path=folder, manifest=manifest, sha256=hashlib.sha256(raw).hexdigest())


def verify_spec(manifest: Manifest, folder: pathlib.Path) -> None:
    """The manifest's description of the model against what it describes: ranges, the halo and
    alignment the architecture implies, and the spec the weights file carries in its own header
    (generator.safetensors, whose checksum the manifest holds). A manifest edited by hand (another
    canvas, depth, template count, halo) is refused, not rendered."""
    from famos.planning import halo_for
    from famos.units import MAX_SIDE

    where = folder / MANIFEST
    spec = manifest.spec
    generator, canvas = spec.generator, spec.canvas
    checks = [
        (1 <= canvas.height <= MAX_SIDE and 1 <= canvas.width <= MAX_SIDE, f"canvas {canvas.width}x{canvas.height}"),
        (1 <= generator.depth <= 10, f"depth {generator.depth}"),
        (1 <= generator.width <= 4096, f"width {generator.width}"),
        (0 <= generator.n_templates <= 4096, f"{generator.n_templates} templates"),
        (bool(spec.style_sizes) and all(h > 0 and w > 0 for h, w in spec.style_sizes), "style sizes"),
    ]
    for ok, what in checks:
        if not ok:
            raise BundleError(f"{where}: {what} is out of range")
    if manifest.alignment != generator.alignment:
        raise BundleError(f"{where}: alignment {manifest.alignment}, the architecture's is {generator.alignment}")
    if manifest.halo != halo_for(generator):
        raise BundleError(f"{where}: halo {dataclasses.asdict(manifest.halo)} is not the architecture's "
                          f"{dataclasses.asdict(halo_for(generator))}")
    weights = folder / WEIGHTS_FILE
    try:
        with open(weights, "rb") as fh:
            header = read_safetensors_header(fh)
        embedded = famos_metadata(header)
    except (OSError, ValueError) as err:
        raise BundleError(f"{weights}: unreadable header ({err})") from None
    except RecursionError:  # the header is JSON too, and json recurses
        raise BundleError(f"{weights}: header nested too deeply to be a safetensors header") from None
    described = spec.to_json()
    # Export always writes the spec into the weights; without it the manifest's spec is unchecked,
    # so a weights file stripped of it is refused rather than trusted.
    missing = [key for key in ("generator", "canvas", "style_sizes") if key not in (embedded or {})]
    if missing:
        raise BundleError(f"{weights}: no famos metadata ({', '.join(missing)}) to check the manifest against "
                          f"(not written by famos export)")
    try:  # as the weights' spec reads today (a field added since takes its value for older models)
        embedded = ModelSpec.from_json(embedded).to_json()
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{weights}: its famos metadata is not a model spec ({str(err)[:200]})") from None
    for key in ("generator", "canvas", "style_sizes"):
        if embedded[key] != described[key]:
            raise BundleError(f"{where}: its {key.replace('_', ' ')} differs from the one {WEIGHTS_FILE} was "
                              f"trained with (the manifest was edited)")
    offsets = header.get("generator.sampler.offset_x")
    offsets = offsets.get("shape") if isinstance(offsets, dict) else None
    if offsets is not None and offsets != [generator.n_templates]:
        raise BundleError(f"{where}: {generator.n_templates} templates, the weights hold offsets of shape {offsets}")


def verify_file(path: pathlib.Path, entry: FileEntry) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleError(f"{path}: missing from the bundle") from None
    if size < entry.bytes:
        raise BundleError(f"{path}: truncated ({size} of {entry.bytes} bytes)")
    if size != entry.bytes:
        raise BundleError(f"{path}: {size} bytes, the manifest says {entry.bytes}")
    if file_sha256(path) != entry.sha256:
        raise BundleError(f"{path}: checksum mismatch (the file was modified or is corrupt)")


