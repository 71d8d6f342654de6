"""Self-describing model files: safetensors weights + JSON metadata, never pickle.

A checkpoint (training) and the generator part of it (export) share this layout:

    tensors   "generator.<name>"   generator state dict (style images included, as buffers)
              "content_image"      uint8 (H, W, 3) default content of the canvas
              anything else the writer adds (discriminator, optimizer moments, RNG states)
    metadata  "famos" -> JSON: {"format", "code_version", "generator", "canvas", "style_sizes", ...}

Loading needs only the file: the configs rebuild the module, then weights load into it.
Writes are atomic (temporary file, fsync, rename) so an interrupted save never damages the
previous checkpoint.

A run folder (`famos train --out RUN` writes it, `famos export RUN` reads it) names its
checkpoints here, its one home for both sides:

    RUN/checkpoint.safetensors                the latest checkpoint
    RUN/checkpoints/step_000500.safetensors   snapshots
    RUN/best.safetensors, RUN/best.json       the best measured step (famos.training.best): a
                                              checkpoint whose header holds the record under "best"
"""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any

import numpy as np
import torch

from famos import __version__
from famos.config import ModelSpec
from famos.errors import UserError
from famos.files import write_atomically
from famos.generator import FamosGenerator
from famos.safetensors_header import METADATA_KEY, famos_metadata, read_safetensors_header

FORMAT = "famos-checkpoint/1"
GENERATOR_PREFIX = "generator."
LATEST_FILE = "checkpoint.safetensors"
SNAPSHOTS_FOLDER = "checkpoints"
BEST_FILE = "best.safetensors"
BEST_RECORD_FILE = "best.json"
BEST_KEY = "best"  # header key of best.safetensors' record (step, quality, score, rule)


def snapshot_name(step: int) -> str:
    """The file name of a run's snapshot of ``step`` in RUN/checkpoints/."""
    return f"step_{step:06d}.safetensors"


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, truncated, tampered with or of another format; names the file."""


def spec_of(model: FamosGenerator, style_sizes: list[tuple[int, int]]) -> ModelSpec:
    return ModelSpec(model.config, model.canvas, tuple(tuple(s) for s in style_sizes))


def empty_generator(spec: ModelSpec) -> FamosGenerator:
    """A generator of the right shape whose weights and style buffers are about to be loaded."""
    styles = [np.zeros((h, w, 3), dtype=np.float32) for h, w in spec.style_sizes]
    offsets = np.zeros((spec.generator.n_templates, 2), dtype=np.int64)
    return FamosGenerator(spec.generator, spec.canvas, styles, offsets)


def save(path: str | pathlib.Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Atomically write tensors + JSON metadata (the "famos" key) as safetensors."""
    from safetensors.torch import save as to_bytes

    path = pathlib.Path(path)
    header = {"format": FORMAT, "code_version": __version__, **metadata}
    blob = to_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={METADATA_KEY: json.dumps(header)})
    write_atomically(path, blob)


def load(path: str | pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; a clear CheckpointError for anything unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load as from_bytes

    path = pathlib.Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file") from None
    try:
        tensors = from_bytes(blob)
        header = famos_metadata(read_safetensors_header(io.BytesIO(blob)))
        if header is None:
            raise ValueError("no famos metadata")
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable famos checkpoint (truncated or corrupt: {err})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
    return tensors, header


def read_header(path: str | pathlib.Path) -> dict[str, Any]:
    """The famos metadata of a checkpoint without reading its tensors (a CheckpointError if the file
    has none); cheap at any checkpoint size. ``load`` still verifies the whole file."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as fh:
            header = famos_metadata(read_safetensors_header(fh))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable famos checkpoint ({err})") from None
    if header is None or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a famos checkpoint of format {FORMAT!r}")
    return header


def generator_tensors(model: FamosGenerator) -> dict[str, torch.Tensor]:
    return {GENERATOR_PREFIX + k: v for k, v in model.state_dict().items()}


def load_generator(path: str | pathlib.Path) -> tuple[FamosGenerator, dict[str, Any], dict[str, torch.Tensor]]:
    """The eval-mode generator of a checkpoint, its metadata, and all its tensors."""
    tensors, header = load(path)
    try:
        spec = ModelSpec.from_json(header)
        model = empty_generator(spec)
        state = {k[len(GENERATOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(GENERATOR_PREFIX)}
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]  # one line, whatever torch says
        raise CheckpointError(f"{path}: its header does not describe its tensors ({first})") from None
    return model.eval(), header, tensors


def save_generator(
    path: str | pathlib.Path,
    model: FamosGenerator,
    *,
    style_sizes: list[tuple[int, int]],
    content: np.ndarray,
    step: int = 0,
    provenance: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> None:
    """A checkpoint holding the generator, its default content (uint8 (H, W, 3)) and provenance."""
    metadata = spec_of(model, style_sizes).to_json() | {
        "step": step,
        "provenance": provenance
        or {"steps": step, "style_hashes": [], "content_hashes": [], "style_files": [], "content_files": []},
    }
    tensors = generator_tensors(model) | {"content_image": torch.from_numpy(np.ascontiguousarray(content))}
    save(path, tensors | (extra_tensors or {}), metadata | (extra_metadata or {}))
