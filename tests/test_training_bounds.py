"""Hostile `famos train` inputs: each is one error line (exit code 2) naming the option and its
range, raised before anything is allocated, instead of an OOM kill, a hang or a traceback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from famos import checkpoint
from famos.cli import main as famos
from famos.config import GeneratorConfig, NoiseConfig
from test_training_cli import TINY_ARGS, _one_line_error, images, keep_threads, train  # noqa: F401
from famos.training.config import DiscriminatorConfig, TrainConfig
from famos.training.trainer import Trainer


@pytest.fixture()
def no_training(monkeypatch):
    """A refused input must not get as far as building G and D."""

    def start(*args, **kwargs):
        raise AssertionError("Trainer.start was reached")

    monkeypatch.setattr(Trainer, "start", start)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--kernel", "999"], "--kernel 999 must be odd, from 1 to 15"),
        (["--kernel", "4"], "--kernel 4 must be odd"),
        (["--depth", "50"], "--depth 50 must be from 1 to 8"),
        (["--width", "100000"], "--width 100000 must be from 1 to 1024"),
        (["--depth", "5", "--width", "1024"], "--width 1024 makes a 16384-channel level"),
        (["--templates", "100000"], "--templates 100000 must be from 0 to 256"),
        (["--res-blocks", "100000"], "--res-blocks 100000 must be from 0 to 16"),
        (["--noise-local", "1000"], "--noise-local 1000 must be from 0 to 64"),
        (["--noise-global", "-1"], "--noise-global -1 must be from 0 to 64"),
        (["--d-depth", "50"], "--d-depth 50 must be from 1 to 8"),
        (["--d-depth", "6"], "--d-depth 6 needs a --patch of at least 2^d-depth = 64 px; the patch is 32"),
        (["--d-kernel", "999"], "--d-kernel 999 must be odd, from 1 to 15"),
        (["--d-width", "5000"], "--d-width 5000 must be from 1 to 1024"),
        (["--d-depth", "5", "--d-width", "1024"], "--d-width 1024 makes a 16384-channel level"),
        (["--batch", "100000"], "--batch 100000 x --patch 32: at most 1024 patches"),
        (["--batch", "512", "--patch", "256", "--canvas", "512x512"], "16,777,216 pixels a step"),
    ],
)
def test_architecture_bounds_fail_on_one_line_before_training(images, tmp_path, capsys, no_training, extra, needle):
    _one_line_error(capsys, train(images, tmp_path / "run", *extra), needle)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seed", str(2**70)], f"--seed {2**70} must be from 0 to 2**64 - 1"),
        (["--seed", "-1"], "--seed -1 must be from 0 to 2**64 - 1"),
        (["--template-seed", "-1"], "--template-seed -1 must be from 0 to 2**64 - 1"),
        (["--template-seed", str(2**70)], "must be from 0 to 2**64 - 1"),
        (["--style-scale", "inf"], "--style-scale inf must be a finite positive number"),
        (["--style-scale", "nan"], "--style-scale nan must be a finite positive number"),
        (["--lr", "nan"], "--lr nan: must be a finite number"),
        (["--lr", "inf"], "--lr inf: must be a finite number"),
        (["--content-weight", "nan"], "--content-weight nan: must be a finite number"),
        (["--gp-weight", "inf"], "--gp-weight inf: must be a finite number"),
    ],
)
def test_seeds_and_numbers_out_of_range_fail_on_one_line(images, tmp_path, capsys, no_training, extra, needle):
    _one_line_error(capsys, train(images, tmp_path / "run", *extra), needle)


@pytest.mark.parametrize(
    "scale, needle",
    [
        ("1e-9", "at --style-scale 1e-09 covers 44000000000x40000000000 canvas px, over the limit of 67 MP"),
        ("999", "at --style-scale 999 covers 0x0 canvas px; style images must cover at least 7x7"),
    ],
)
def test_a_style_scale_that_empties_or_explodes_the_style_fails_on_one_line(
    images, tmp_path, capsys, no_training, scale, needle
):
    rc = famos(["train", "--content", str(images["content"]), "--style", str(images["style_rgba"]),
                "--out", str(tmp_path / "run"), *TINY_ARGS, "--style-scale", scale])
    _one_line_error(capsys, rc, f"style_rgba.png: 44x40 px {needle}")


def test_a_one_pixel_style_image_names_the_file_and_the_minimum(images, tmp_path, capsys, no_training):
    dot = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(dot)
    rc = famos(["train", "--content", str(images["content"]), "--style", str(images["style_rgba"]), str(dot),
                "--out", str(tmp_path / "run"), *TINY_ARGS])
    _one_line_error(capsys, rc, "dot.png: 1x1 px at --style-scale 1 covers 1x1 canvas px; style images must cover at least 7x7")


def test_evaluate_checks_its_style_images_as_train_does(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(images, out, "--steps", "1", "--checkpoint-every", "10", "--preview-every", "10") == 0
    capsys.readouterr()
    dot = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(dot)
    rc = famos(["evaluate", str(out / "checkpoint.safetensors"), "--style", str(dot)])
    _one_line_error(capsys, rc, "dot.png: 1x1 px at --style-scale 1 covers 1x1 canvas px; style images must cover at least 7x7")


def test_a_checkpoint_out_of_bounds_is_refused_on_resume(images, tmp_path, capsys):
    """The bounds live in the config dataclasses, so the checkpoint door gets them too."""
    out = tmp_path / "run"
    assert train(images, out, "--steps", "1", "--checkpoint-every", "10", "--preview-every", "10") == 0
    path = out / "checkpoint.safetensors"
    tensors, header = checkpoint.load(path)
    header["training"]["discriminator"]["depth"] = 50
    checkpoint.save(path, tensors, header)
    capsys.readouterr()
    rc = famos(["train", "--out", str(out), "--resume", "--steps", "2", "--threads", "1", "--quiet"])
    _one_line_error(capsys, rc, "--d-depth 50 must be from 1 to 8")


def test_the_papers_architectures_and_the_edges_of_the_bounds_are_accepted():
    GeneratorConfig(depth=5, width=80, kernel=5, n_templates=100)  # the paper, N = 100
    GeneratorConfig(depth=8, width=8, kernel=15, n_templates=256, n_res_blocks=16,
                    noise=NoiseConfig(n_global=64, n_local=64, n_periodic=64))
    TrainConfig(patch=256, seed=2**64 - 1, discriminator=DiscriminatorConfig(depth=8, width=8, kernel=15))
    TrainConfig()  # D's defaults: depth 5, width 64 for the 160 px patch
