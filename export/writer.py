"""Checkpoint -> bundle: export the graphs, check them against the eager model, write the manifest.

The bundle is assembled in a temporary folder beside the destination and renamed into place only
after every graph passed its parity check, so a failed or interrupted export leaves no bundle.

A run folder exports its best checkpoint (RUN/best.safetensors, the best measured step of the run)
when it has one, else its latest (RUN/checkpoint.safetensors, as run folders from before runs kept
their best); ``choose_checkpoint`` takes another on request. The manifest's provenance says which
kind was exported and its step.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import pathlib
import shutil
import subprocess
from typing import Any

import numpy as np
import torch

from famos.export.graph import OnnxExporter, export_onnx, export_torchscript, inference_graph, interface
from famos.export.parity import (
    FP16_TOLERANCE,
    ONNX_TOLERANCE,
    TORCHSCRIPT_TOLERANCE,
    max_differences,
    parity_windows,
)
from famos import bundle as files
from famos.bundle import Bundle, FileEntry, GraphInputs, Manifest, load_bundle
from famos.canvas import to_unit_range
from famos.checkpoint import (
    BEST_FILE,
    BEST_KEY,
    BEST_RECORD_FILE,
    LATEST_FILE,
    SNAPSHOTS_FOLDER,
    CheckpointError,
    generator_tensors,
    load_generator,
    read_header,
    save,
    snapshot_name,
)
from famos.config import ModelSpec
from famos.errors import BundleError, InvalidField, UserError, quoted
from famos.files import file_sha256
from famos.generator import FamosGenerator
from famos.planning import Rect, halo_for
from famos.chunk_loop import WindowInputs, plan_for, render_strips
from famos.runners import OnnxRunner
from famos.torch_runners import DeviceSettings, EagerRunner, TorchScriptRunner

PREVIEW_SIDE = 1024


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    fp16: bool = False  # also write model_fp16.onnx
    diagnostics: bool = True  # alpha and mix_argmax outputs besides the image
    onnx_exporter: OnnxExporter = OnnxExporter.TRACER
    overwrite: bool = False  # replace an existing bundle at the destination
    parity_windows: int = 4  # random windows checked besides the four corners
    preview_seed: int = 0
    preview_chunk: int = 256
    preview_pixels: int = 4_000_000  # larger canvases preview a centred crop of about this size


class ParityError(RuntimeError):
    """An exported graph disagrees with the eager model beyond its tolerance."""


class CheckpointKind(str, enum.Enum):
    """Which checkpoint of a run a bundle was exported from (its provenance's "checkpoint_kind")."""

    BEST = "best"  # RUN/best.safetensors: the best measured step
    LATEST = "latest"  # RUN/checkpoint.safetensors
    SNAPSHOT = "snapshot"  # RUN/checkpoints/step_NNNNNN.safetensors
    FILE = "file"  # a checkpoint file under another name


@dataclasses.dataclass(frozen=True)
class CheckpointChoice:
    path: pathlib.Path
    kind: CheckpointKind
    reason: str  # one line for the person exporting: which was taken and why ("" for a file given as such)


def choose_checkpoint(source: pathlib.Path, which: str | None = None) -> CheckpointChoice:
    """The checkpoint to export from ``source``, a checkpoint file or a run folder.

    ``which`` (`--checkpoint`) chooses within a run folder: "best", "latest", a step number (its
    snapshot in checkpoints/) or a checkpoint file's path (taken as given). None takes the run's
    best when it has one, else its latest.
    """
    if not source.is_dir():
        if which is not None:
            raise InvalidField("--checkpoint", f"{quoted(which)} chooses within a run folder; {source} is not one")
        if not source.exists():
            raise CheckpointError(f"{source}: no such checkpoint or run folder")
        return CheckpointChoice(source, _kind_of(source), "")
    best, latest = source / BEST_FILE, source / LATEST_FILE
    asked = which is not None
    if which is None:
        which = "best" if best.is_file() else "latest"
    no_best = f"no {BEST_FILE} in the run: no step measured yet, or a run from before famos kept the best step"
    if which == "best":
        if not best.is_file():
            raise CheckpointError(f"{source}: {no_best}; --checkpoint latest exports its latest")
        header = read_header(best)
        record = header.get(BEST_KEY)
        why = "asked" if asked else "the default"
        if isinstance(record, dict):
            score, style, content = (_number(record.get(k)) for k in ("score", "style_distance", "content_error"))
            why += (f": the lowest quality score measured in the run, {score}, at style distance {style} and content "
                    f"error {content}; the rule in {BEST_RECORD_FILE}")
        then = f"; --checkpoint latest for step {_step_of(latest)}" if latest.is_file() else ""
        return CheckpointChoice(best, CheckpointKind.BEST, f"the best checkpoint, step {header.get('step')} ({why}){then}")
    if which == "latest":
        if not latest.is_file():
            raise CheckpointError(f"{source}: run folder without {LATEST_FILE}")
        why = "asked" if asked else no_best
        return CheckpointChoice(latest, CheckpointKind.LATEST, f"the latest checkpoint, step {_step_of(latest)} ({why})")
    if which.isdigit() and len(which) <= 18:
        snapshot = source / SNAPSHOTS_FOLDER / snapshot_name(int(which))
        if not snapshot.is_file():
            steps = sorted(int(p.stem[len("step_"):]) for p in (source / SNAPSHOTS_FOLDER).glob("step_*.safetensors")
                           if _kind_of(p) is CheckpointKind.SNAPSHOT)
            have = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "") if steps else "none"
            raise CheckpointError(f"{source}: no snapshot of step {int(which)} in {SNAPSHOTS_FOLDER}/ (snapshots: {have})")
        return CheckpointChoice(snapshot, CheckpointKind.SNAPSHOT, f"the snapshot of step {int(which)} (asked)")
    path = pathlib.Path(which)
    if not path.is_file():
        raise InvalidField("--checkpoint", f"{quoted(which)} is not best, latest, a step number or a checkpoint file")
    return CheckpointChoice(path, _kind_of(path), f"{path} (asked)")


def _kind_of(path: pathlib.Path) -> CheckpointKind:
    """A checkpoint file's kind, told by its place in a run folder."""
    if path.name == BEST_FILE:
        return CheckpointKind.BEST
    if path.name == LATEST_FILE:
        return CheckpointKind.LATEST
    stem = path.stem[len("step_"):]
    if path.parent.name == SNAPSHOTS_FOLDER and stem.isdigit() and len(stem) <= 18 and path.name == snapshot_name(int(stem)):
        return CheckpointKind.SNAPSHOT
    return CheckpointKind.FILE


def _step_of(checkpoint: pathlib.Path) -> Any:
    return read_header(checkpoint).get("step")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "unknown"


def export_bundle(
    source: pathlib.Path, out: pathlib.Path, *, options: ExportOptions, content: np.ndarray | None = None
) -> Bundle:
    """Write the bundle of checkpoint ``source`` (file, or run folder: ``choose_checkpoint``'s
    default) to folder ``out``.

    ``content`` (uint8 RGB) replaces the checkpoint's default content image.
    """
    chosen = choose_checkpoint(source)
    checkpoint = chosen.path
    model, header, tensors = load_generator(checkpoint)
    spec = ModelSpec.from_json(header)
    if content is None:
        content = _checkpoint_content(checkpoint, tensors)
    _check_destination(out, overwrite=options.overwrite)

    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _write_files(staging, model=model, spec=spec, content=content, options=options)
        manifest = dataclasses.replace(
            manifest, provenance=_provenance(chosen, header), files=_file_entries(staging)
        )
        _write_json(staging / files.MANIFEST, manifest.to_json())
        load_bundle(staging)  # a bundle the loader would refuse never reaches --out (nor replaces one)
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out)


def _replace_folder(new: pathlib.Path, out: pathlib.Path) -> None:
    """Put ``new`` at ``out``; an old bundle there is moved aside first and deleted last, so at
    every instant ``out`` is either the old or the new complete bundle (never missing for long,
    never half-deleted)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_files(
    folder: pathlib.Path, *, model: FamosGenerator, spec: ModelSpec, content: np.ndarray, options: ExportOptions
) -> Manifest:
    """Every file but the manifest; returns the manifest without files and provenance."""
    from PIL import Image

    save(folder / files.WEIGHTS_FILE, generator_tensors(model), spec.to_json())
    Image.fromarray(content).save(folder / files.CONTENT_FILE)

    inputs, outputs = interface(spec, diagnostics=options.diagnostics)
    graph = inference_graph(model, fp16=False, diagnostics=options.diagnostics)
    opset = export_onnx(
        graph, folder / files.ONNX_FILE, spec=spec, inputs=inputs, outputs=outputs, exporter=options.onnx_exporter
    )
    export_torchscript(graph, folder / files.TORCHSCRIPT_FILE, spec=spec, inputs=inputs)
    if options.fp16:
        half = inference_graph(model, fp16=True, diagnostics=options.diagnostics)
        export_onnx(half, folder / files.FP16_FILE, spec=spec, inputs=inputs, outputs=outputs, exporter=options.onnx_exporter)

    window_inputs = WindowInputs(
        config=spec.generator, canvas=spec.canvas, content=to_unit_range(content), seed=options.preview_seed
    )
    eager = EagerRunner(model)
    takes_noise = any(i.name == files.NOISE_INPUT for i in inputs)
    parity = _check_parity(folder, spec=spec, inputs=window_inputs, eager=eager, options=options, takes_noise=takes_noise)
    preview_region = _write_preview(folder / files.PREVIEW_FILE, spec=spec, inputs=window_inputs, eager=eager, options=options)
    export_info: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "onnx_exporter": f"torch.onnx.export(dynamo={options.onnx_exporter is OnnxExporter.DYNAMO})",
        "torch_version": torch.__version__,
        "batchnorm": "folded into the preceding convolutions at export",
        "torchscript": "generator scripted (runs on any device), output wrapper traced",
        "parity_max_abs": parity,
        "preview": {"seed": options.preview_seed, "region": dataclasses.asdict(preview_region)},
        "git_commit": _git_commit(),
    }
    return Manifest(
        spec=spec,
        halo=halo_for(spec.generator),
        alignment=spec.generator.alignment,
        opset=opset,
        inputs=inputs,
        outputs=outputs,
        files={},
        provenance={},
        export=export_info,
        fp16_file=files.FP16_FILE if options.fp16 else None,
        fp16_tolerance=FP16_TOLERANCE if options.fp16 else None,
    )


def _check_parity(
    folder: pathlib.Path,
    *,
    spec: ModelSpec,
    inputs: WindowInputs,
    eager: EagerRunner,
    options: ExportOptions,
    takes_noise: bool,
) -> dict[str, float]:
    windows = parity_windows(spec, count=options.parity_windows)
    cpu = ["CPUExecutionProvider"]
    alignment = spec.generator.alignment
    feeds = GraphInputs(alignment=alignment, trained_canvas=spec.canvas.aligned(alignment), takes_noise=takes_noise)
    candidates = {
        "onnx": (OnnxRunner(folder / files.ONNX_FILE, providers=cpu, inputs=feeds), ONNX_TOLERANCE),
        "torchscript": (
            TorchScriptRunner(folder / files.TORCHSCRIPT_FILE, settings=DeviceSettings(), inputs=feeds),
            TORCHSCRIPT_TOLERANCE,
        ),
    }
    if options.fp16:
        # onnxruntime's CPU provider runs float16 convolutions (slowly): a numerical check of the
        # exported graph here; speed is for the CUDA/TensorRT providers.
        half = OnnxRunner(folder / files.FP16_FILE, providers=cpu, inputs=feeds)
        candidates["onnx_fp16"] = (half, FP16_TOLERANCE)
    runners = {name: runner for name, (runner, _) in candidates.items()}
    # the same windows on a canvas twice the trained size: the graphs' canvas input must agree too
    canvas = spec.canvas
    doubled = WindowInputs(
        config=spec.generator, canvas=dataclasses.replace(canvas, height=2 * canvas.height, width=2 * canvas.width),
        content=inputs.content, seed=inputs.seed,
    )
    measured = max_differences(eager, runners, inputs=inputs, windows=windows)
    for name, worst in max_differences(eager, runners, inputs=doubled, windows=windows).items():
        measured[name] = max(measured[name], worst)
    for name, (_, tolerance) in candidates.items():
        if not measured[name] <= tolerance:
            raise ParityError(
                f"{name} graph differs from the eager model by {measured[name]:.3g} (tolerance {tolerance:g})"
            )
    return measured


def _write_preview(
    path: pathlib.Path, *, spec: ModelSpec, inputs: WindowInputs, eager: EagerRunner, options: ExportOptions
) -> Rect:
    """The canvas (or a centred crop of a big one) through the chunked renderer, downscaled."""
    from PIL import Image

    canvas = spec.canvas
    scale = min(1.0, (options.preview_pixels / (canvas.height * canvas.width)) ** 0.5)
    height, width = max(1, int(canvas.height * scale)), max(1, int(canvas.width * scale))
    region = Rect((canvas.height - height) // 2, (canvas.width - width) // 2, height, width)
    plan = plan_for(spec.generator, canvas, chunk_size=options.preview_chunk, region=region)
    image = Image.fromarray(np.concatenate(list(render_strips(plan, inputs, eager))))
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    image.save(path)
    return region


def _checkpoint_content(checkpoint: pathlib.Path, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    image = tensors.get("content_image")
    if image is None:
        raise CheckpointError(f"{checkpoint}: no content_image tensor; pass --content")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CheckpointError(f"{checkpoint}: content_image is {image.dtype} {tuple(image.shape)}, expected uint8 (H, W, 3)")
    return image.numpy()


def _check_destination(out: pathlib.Path, *, overwrite: bool) -> None:
    if not out.exists():
        # Like `famos train --out`: missing parent folders are created (bundles/tiny just works).
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--out {out}: cannot create folder {out.parent} ({err.strerror})") from None
        return
    if not overwrite:
        raise UserError(f"--out {out}: already exists (pass --overwrite to replace a bundle)")
    if not (out / files.MANIFEST).is_file():
        # Never delete a folder that is not a bundle, whatever the flag says.
        raise BundleError(f"--out {out}: exists and is not a bundle; refusing to replace it")


def _provenance(chosen: CheckpointChoice, header: dict[str, Any]) -> dict[str, Any]:
    training = dict(header.get("provenance") or {})
    checkpoint = chosen.path
    best = {"best": header[BEST_KEY]} if BEST_KEY in header else {}  # step, quality, score and rule
    return {
        "steps": training.pop("steps", header.get("step")),
        "step": header.get("step"),
        **training,  # style/content hashes and file names, as training recorded them
        "checkpoint": checkpoint.name,
        "checkpoint_kind": chosen.kind.value,
        **best,
        "checkpoint_sha256": file_sha256(checkpoint),
        "training_code_version": header.get("code_version"),
        "training": header.get("training"),  # the training options, when training wrote them
    }


def _file_entries(folder: pathlib.Path) -> dict[str, FileEntry]:
    return {
        p.name: FileEntry(sha256=file_sha256(p), bytes=p.stat().st_size)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != files.MANIFEST
    }


def _write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _git_commit() -> str | None:
    """The source commit when exporting from a git checkout (read-only query), else None."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=pathlib.Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None
