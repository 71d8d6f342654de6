"""The training run: steps, checkpoints, logs and previews in RUN_DIR.

    RUN_DIR/checkpoint.safetensors                   always the latest checkpoint (atomic)
    RUN_DIR/checkpoints/step_000500.safetensors      snapshots every checkpoint_every steps
    RUN_DIR/losses.csv, RUN_DIR/losses.png           every step / at previews and the end
    RUN_DIR/previews/step_000500_patches.png         I_C, I_M, I_G, I, a real style patch, alpha, A
                                                     of fixed windows, each row captioned
    RUN_DIR/previews/step_000500_canvas.png          the canvas through the chunked renderer (at most
                                                     4 MP: a large canvas shows its composition small
                                                     and three 100 % crops, captioned)
    RUN_DIR/preview.png                              the final canvas, the same way
    RUN_DIR/quality.csv, RUN_DIR/quality.png         content error and style distance: before training,
                                                     at each preview and at the end (a warning on
                                                     stderr when the style distance keeps rising)
    RUN_DIR/best.safetensors, RUN_DIR/best.json      the checkpoint of the best measured step and its
                                                     record (training/best.py: the rule), replaced
                                                     when a measurement scores better; the default
                                                     of `famos export RUN_DIR`

Ctrl-C finishes the current step, saves the checkpoint and returns 130; a second Ctrl-C aborts
at once (the previous checkpoint is intact either way).
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import pathlib
import time

import torch

from famos.checkpoint import BEST_FILE, LATEST_FILE, SNAPSHOTS_FOLDER, snapshot_name
from famos.errors import UserError
from famos.files import atomic_output
from famos.progress import ProgressLines
from famos.units import duration
from famos.training.best import BestCheckpoint
from famos.training.metrics import Quality, evaluate
from famos.previews import save_png
from famos.training.plots import plot_losses, plot_quality
from famos.training.previews import LossLog, QualityLog, canvas_preview, patch_grid, read_log
from famos.training.trainer import Trainer

INTERRUPTED = 130
PREVIEW_SEED = 0  # fixed preview windows, drawn from their own generator: training RNG untouched


class StopRequest:
    """First SIGINT asks the loop to stop at the next step boundary; the second interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(trainer: Trainer, run_dir: pathlib.Path, *, progress: bool = True) -> int:
    config = trainer.config
    paths = RunPaths(run_dir)
    paths.make()
    log = LossLog(paths.losses, resume_step=trainer.step, tensorboard_dir=run_dir / "tensorboard")
    quality = QualityLog(paths.quality, resume_step=trainer.step)
    if trainer.step == 0:
        quality.append(0, _quality(trainer))
    best = BestCheckpoint(run_dir, resume=trainer.step > 0, measured=quality.rows)
    for warning in best.warnings:
        print(f"famos train: warning: {warning}", file=sys.stderr)
    preview_batch = trainer.sampler.sample(torch.Generator().manual_seed(PREVIEW_SEED))
    _check_budget(trainer, run_dir, progress=progress)
    bar = _progress(trainer, enabled=progress)
    started, first = time.monotonic(), trainer.step
    # off a terminal tqdm draws nothing: a line every LOG_EVERY_SECONDS instead
    lines = ProgressLines("famos train", config.steps - first, unit="steps", enabled=progress and bar.disable)
    saved_step = trainer.step
    try:
        with StopRequest() as stop:
            while trainer.step < config.steps and not stop.requested:
                losses = trainer.train_step()
                step = trainer.step
                if step == first + 1 and progress:
                    per_step = time.monotonic() - started
                    total = per_step * (config.steps - first)
                    print(f"famos train: first step in {per_step:.2f} s; expected about {duration(total)} for the "
                          f"{config.steps - first} steps", file=sys.stderr)
                log.append(step, losses)
                bar.update(1)
                lines.update(step - first, time.monotonic() - started)
                postfix = {k: f"{v:.3g}" for k, v in losses.items() if k in ("d", "g", "content")}
                if best.record is not None:
                    postfix["best"] = best.record.step
                bar.set_postfix(postfix, refresh=False)
                if step % config.checkpoint_every == 0:
                    _checkpoint(trainer, paths, snapshot=True)
                    saved_step = step
                    if bar.disable:  # no progress bar off a terminal: one line per checkpoint
                        rate = (step - first) / max(time.monotonic() - started, 1e-9)
                        print(f"step {step}/{config.steps} ({rate:.2f} it/s) saved {paths.checkpoint}", file=sys.stderr)
                if step % config.preview_every == 0:
                    _previews(trainer, paths, preview_batch)
                    measured = _quality(trainer)
                    warning = quality.append(step, measured)
                    if best.consider(trainer, measured) and bar.disable:  # a terminal's bar shows best=STEP
                        print(_best_line(best, paths), file=sys.stderr)
                    _charts(trainer, paths, best)
                    if warning:
                        bar.write(f"famos train: warning: {warning}", file=sys.stderr)
    finally:
        bar.close()
        log.close()
    if stop.requested:
        if saved_step != trainer.step or not paths.checkpoint.exists():
            _checkpoint(trainer, paths, snapshot=False)
        print(f"interrupted at step {trainer.step}; checkpoint saved to {paths.checkpoint} (continue with --resume)",
              file=sys.stderr)
        return INTERRUPTED
    if saved_step != trainer.step:
        _checkpoint(trainer, paths, snapshot=True)
    last_preview = paths.preview(trainer.step, "canvas")
    if last_preview.exists():  # the final step just previewed the same weights: no second render
        with atomic_output(run_dir / "preview.png") as tmp:
            shutil.copyfile(last_preview, tmp)
    else:
        save_png(run_dir / "preview.png", _canvas(trainer))
    after = quality.at(trainer.step)  # measured by the final step's preview: the same weights
    if after is None:
        after = _quality(trainer)
        warning = quality.append(trainer.step, after)
        best.consider(trainer, after)
        if warning:
            print(f"famos train: warning: {warning}", file=sys.stderr)
    _charts(trainer, paths, best)
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"trained {trainer.step} steps ({(trainer.step - first) / elapsed:.2f} it/s); "
        f"content error {after.content_error:.5f}, style distance {after.style_distance:.5f}; "
        f"checkpoint {paths.checkpoint}; {_best_summary(best, paths)}",
        file=sys.stderr,
    )
    return 0


def _best_line(best: BestCheckpoint, paths: RunPaths) -> str:
    record = best.record
    return (f"step {record.step}: best so far (style distance {record.quality.style_distance:.5f}, content error "
            f"{record.quality.content_error:.5f}, score {record.score:.4f}) saved {paths.best}")


def _best_summary(best: BestCheckpoint, paths: RunPaths) -> str:
    record = best.record
    if record is None:
        return "no best step (no measurement had a finite score)"
    return f"best step {record.step} (score {record.score:.4f}, the export default) {paths.best}"


def _check_budget(trainer: Trainer, run_dir: pathlib.Path, *, progress: bool) -> None:
    """Before a run: the checkpoints it will write against the free disk (refused when they cannot
    fit), and one line saying so."""
    config = trainer.config
    parameters = sum(p.numel() * p.element_size() for m in (trainer.generator, trainer.discriminator)
                     for p in m.parameters())
    checkpoint = 3 * parameters + trainer.generator.canvas.height * trainer.generator.canvas.width * 3  # weights + Adam's two moments
    snapshots = (config.steps - trainer.step) // config.checkpoint_every + 3  # + the latest, the last and the best
    needs = checkpoint * snapshots
    free = shutil.disk_usage(run_dir).free
    if needs > free:
        raise UserError(f"{run_dir}: {snapshots} checkpoints of about {checkpoint / 1e6:,.0f} MB need "
                        f"{needs / 1e6:,.0f} MB, {free / 1e6:,.0f} MB are free there (raise --checkpoint-every)")
    if progress:
        canvas = trainer.generator.canvas
        print(f"famos train: canvas {canvas.width}x{canvas.height} = {canvas.width * canvas.height / 1e6:,.1f} MP, "
              f"{config.steps - trainer.step} steps, {snapshots} checkpoints of about {checkpoint / 1e6:,.0f} MB, "
              f"{free / 1e6:,.0f} MB free at {run_dir}", file=sys.stderr)


class RunPaths:
    def __init__(self, run_dir: pathlib.Path):
        self.root = run_dir
        self.checkpoint = run_dir / LATEST_FILE
        self.snapshots = run_dir / SNAPSHOTS_FOLDER
        self.best = run_dir / BEST_FILE  # and best.json: training/best.py
        self.previews = run_dir / "previews"
        self.losses = run_dir / "losses.csv"
        self.losses_plot = run_dir / "losses.png"
        self.quality = run_dir / "quality.csv"
        self.quality_plot = run_dir / "quality.png"

    def make(self) -> None:
        for folder in (self.root, self.snapshots, self.previews):
            folder.mkdir(parents=True, exist_ok=True)

    def snapshot(self, step: int) -> pathlib.Path:
        return self.snapshots / snapshot_name(step)

    def preview(self, step: int, kind: str) -> pathlib.Path:
        return self.previews / f"step_{step:06d}_{kind}.png"


def _checkpoint(trainer: Trainer, paths: RunPaths, *, snapshot: bool) -> None:
    if snapshot:
        trainer.save(paths.snapshot(trainer.step))
    trainer.save(paths.checkpoint)


def _previews(trainer: Trainer, paths: RunPaths, batch) -> None:
    generator = trainer.generator
    batch = batch.to(trainer.device)
    generator.eval()
    try:
        with torch.no_grad():
            image, alpha, weights, painted, copied = generator(batch.content, batch.origin, batch.noise)
        grid = patch_grid(content=batch.content, copied=copied, painted=painted, image=image, style=batch.style,
                          alpha=alpha, weights=weights, blend=generator.config.blend,
                          title=f"{paths.root.name}, step {trainer.step}: one fixed window of the canvas per column")
        save_png(paths.preview(trainer.step, "patches"), grid)
        save_png(paths.preview(trainer.step, "canvas"), _canvas(trainer))
    finally:
        generator.train()


def _charts(trainer: Trainer, paths: RunPaths, best: BestCheckpoint) -> None:
    title = f"{paths.root.name}, step {trainer.step} of {trainer.config.steps}"
    save_png(paths.losses_plot, plot_losses(read_log(paths.losses), title=title))
    best_step = best.record.step if best.record else None
    save_png(paths.quality_plot, plot_quality(read_log(paths.quality), title=title, best_step=best_step))


def _canvas(trainer: Trainer):
    try:
        return canvas_preview(
            trainer.generator, trainer.data.contents[0], max_side=trainer.config.preview_max_side,
            seed=PREVIEW_SEED, device=str(trainer.device),
        )
    finally:
        trainer.generator.train()


def _quality(trainer: Trainer) -> Quality:
    try:
        return evaluate(
            trainer.generator, content=trainer.data.contents[0], styles=list(trainer.data.styles),
            device=str(trainer.device),
        )
    finally:
        trainer.generator.train()


def _progress(trainer: Trainer, *, enabled: bool):
    from tqdm import tqdm

    # tqdm's ETA is the remaining steps at the measured rate; disabled off a terminal.
    return tqdm(
        total=trainer.config.steps, initial=trainer.step, unit="step", dynamic_ncols=True,
        disable=None if enabled else True, mininterval=0.5,
    )
