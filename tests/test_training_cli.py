"""`famos train` / `famos evaluate` end to end on tiny models: files, resume exactness, Ctrl-C,
bad input, and a short run on the bundled samples that must beat the untrained generator."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from famos import checkpoint
from famos.cli import main as famos
from famos.training.trainer import Trainer

TINY_ARGS = [
    "--depth", "2", "--width", "4", "--kernel", "3", "--templates", "2", "--patch", "32", "--batch", "2",
    "--d-depth", "2", "--d-width", "8", "--d-kernel", "3", "--threads", "1", "--quiet",
]


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = {
        "content": folder / "content.png",
        "style_rgba": folder / "style_rgba.png",
        "style_grey16": folder / "style16.png",
    }
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(paths["content"])
    Image.fromarray(rng.integers(0, 256, (40, 44, 4), dtype=np.uint8), "RGBA").save(paths["style_rgba"])
    Image.fromarray(rng.integers(0, 65536, (36, 30), dtype=np.uint16)).save(paths["style_grey16"])
    return paths


def train(images, out, *extra: str) -> int:
    return famos(
        ["train", "--content", str(images["content"]), "--style", str(images["style_rgba"]),
         str(images["style_grey16"]), "--out", str(out), *TINY_ARGS, *extra]
    )


def test_end_to_end_writes_run_dir_and_checkpoint_contract(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(images, out, "--steps", "4", "--checkpoint-every", "2", "--preview-every", "2", "--canvas", "60x40") == 0
    for name in ("checkpoint.safetensors", "checkpoints/step_000002.safetensors", "checkpoints/step_000004.safetensors",
                 "losses.csv", "losses.png", "preview.png", "quality.csv",
                 "previews/step_000002_patches.png", "previews/step_000004_canvas.png"):
        assert (out / name).is_file(), name
    assert Image.open(out / "preview.png").size == (60, 40)
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and {"d", "g", "content"} <= set(rows[0])

    model, header, tensors = checkpoint.load_generator(out / "checkpoint.safetensors")
    assert header["step"] == 4 and header["canvas"]["height"] == 40 and header["canvas"]["width"] == 60
    assert header["training"]["patch"] == 32 and header["training"]["losses"]["adversarial"] == "dcgan"
    provenance = header["provenance"]
    assert provenance["steps"] == 4 and provenance["style_files"] == ["style_rgba.png", "style16.png"]
    assert len(provenance["style_hashes"][0]) == 64 and len(provenance["content_hashes"]) == 1
    assert tensors["content_image"].dtype == torch.uint8 and tuple(tensors["content_image"].shape) == (50, 70, 3)
    assert model.config.n_templates == 2 and model.config.depth == 2

    capsys.readouterr()
    assert famos(["evaluate", str(out / "checkpoint.safetensors"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # evaluate scores the saved model exactly as the run scored it at its end (same region, seed and
    # images, so the same numbers as quality.csv's last row), and an untrained output is not the content.
    with open(out / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 2, 4]  # before training, then at each preview
    before, after = rows[0], rows[-1]
    assert result["step"] == int(after["step"]) == 4 and int(before["step"]) == 0
    assert result["content_error"] == pytest.approx(float(after["content_error"]), rel=1e-5)
    assert result["style_distance"] == pytest.approx(float(after["style_distance"]), rel=1e-5)
    assert result["content_error"] > 0 and result["style_distance"] > 0


def test_resume_is_exact(images, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(images, straight, "--steps", "4", "--checkpoint-every", "10", "--preview-every", "10") == 0
    assert train(images, split, "--steps", "2", "--checkpoint-every", "10", "--preview-every", "10") == 0
    assert famos(["train", "--out", str(split), "--resume", "--steps", "4", "--threads", "1", "--quiet"]) == 0
    a, meta_a = checkpoint.load(straight / "checkpoint.safetensors")
    b, meta_b = checkpoint.load(split / "checkpoint.safetensors")
    assert sorted(a) == sorted(b)
    assert any(k.startswith("optimizer.generator.") for k in a) and any(k.startswith("discriminator.") for k in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert meta_a["step"] == meta_b["step"] == 4
    with open(split / "losses.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_ctrl_c_saves_and_exits_cleanly(images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    step = Trainer.train_step

    def interrupted_step(self):
        losses = step(self)
        if self.step == 3:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C delivers, inside the loop
        return losses

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    assert train(images, out, "--steps", "50", "--checkpoint-every", "2", "--preview-every", "100") == 130
    assert "interrupted at step 3" in capsys.readouterr().err
    _, header = checkpoint.load(out / "checkpoint.safetensors")
    assert header["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", step)
    assert famos(["train", "--out", str(out), "--resume", "--steps", "5", "--threads", "1", "--quiet"]) == 0
    assert checkpoint.load(out / "checkpoint.safetensors")[1]["step"] == 5


def _one_line_error(capsys, rc: int, needle: str) -> None:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--canvas", "0x10"], "positive"),
        (["--canvas", "60x40", "--scale", "2"], "one of --canvas"),
        (["--dpi", "150"], "--print-size"),
        (["--print-size", "10x5cm"], "--dpi"),
        (["--mode", "parametric", "--templates", "0", "--entropy", "1"], "--entropy"),
        (["--mode", "parametric", "--templates", "3"], "--templates"),
        (["--correspondence", "vgg"], "--vgg-weights"),
        (["--patch", "30"], "multiple of the alignment"),
        (["--loss", "hinge"], "hinge"),
        (["--steps", "0"], "steps"),
    ],
)
def test_bad_options_fail_on_one_line(images, tmp_path, capsys, extra, needle):
    _one_line_error(capsys, train(images, tmp_path / "run", *extra), needle)


def test_bad_images_fail_on_one_line(images, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rc = famos(["train", "--content", str(tmp_path / "missing.png"), "--style", str(images["style_rgba"]),
                "--out", str(tmp_path / "a"), *TINY_ARGS])
    _one_line_error(capsys, rc, "missing.png")
    rc = famos(["train", "--content", str(images["content"]), "--style", str(corrupt), "--out", str(tmp_path / "b"),
                *TINY_ARGS])
    _one_line_error(capsys, rc, "corrupt.png")


def test_failures_leave_previous_checkpoint_intact(images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train(images, out, "--steps", "2", "--checkpoint-every", "10", "--preview-every", "10") == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    _one_line_error(capsys, train(images, out, "--steps", "2"), "--resume")
    rc = famos(["train", "--out", str(out), "--resume", "--steps", "4", "--canvas", "10x10", "--quiet"])
    _one_line_error(capsys, rc, "--canvas")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    rc = famos(["train", "--out", str(out), "--resume", "--steps", "3", "--threads", "1", "--quiet"])
    _one_line_error(capsys, rc, "no space left on device")
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_short_tiny_run_beats_untrained_generator(tmp_path):
    """The tiny preset on the bundled samples (200 steps): both quality numbers must improve."""
    out = tmp_path / "tiny"
    assert famos(["train", "--preset", "tiny", "--out", str(out), "--threads", "1", "--quiet",
                  "--checkpoint-every", "1000", "--preview-every", "1000"]) == 0
    with open(out / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    before, after = rows[0], rows[-1]
    assert int(after["step"]) == 200
    assert float(after["content_error"]) < float(before["content_error"])
    assert float(after["style_distance"]) < float(before["style_distance"])


def test_a_gigapixel_canvas_trains_with_bounded_previews(images, tmp_path):
    """A 40000x26700 canvas (1.07 gigapixels): every preview and the final one render at most
    about 4 MP (a whole render would take hours here), as a captioned sheet: the composition
    small and three 100 % crops."""
    out = tmp_path / "giga"
    assert train(images, out, "--steps", "2", "--checkpoint-every", "2", "--preview-every", "1",
                 "--canvas", "40000x26700", "--preview-max-side", "600") == 0
    sheet = np.asarray(Image.open(out / "preview.png"))
    assert sheet.shape[1] >= 3 * 512  # three crops side by side
    assert sheet.shape[0] * sheet.shape[1] < 4_000_000
    assert (out / "previews" / "step_000001_canvas.png").exists()
    assert (out / "preview.png").read_bytes() == (out / "previews" / "step_000002_canvas.png").read_bytes()


def test_bounded_preview_crops_are_the_real_canvas_at_100_percent():
    from conftest import tiny_model
    from famos.config import CanvasConfig, GeneratorConfig
    from famos.planning import Rect
    from famos.training.metrics import render_region
    from famos.training.previews import canvas_preview

    model = tiny_model(GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(1200, 1800))
    content = np.random.default_rng(2).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    whole = canvas_preview(model, content, max_side=300, max_pixels=3_000_000)
    assert whole.shape == (200, 300, 3)  # within the budget: the whole canvas, downscaled
    sheet = canvas_preview(model, content, max_side=300, max_pixels=1_000_000)
    # layout: caption, overview (200 x 300), gap, caption, three 512 crops in a row
    top = 14 + 200 + 8 + 14
    centre = render_region(model, content, Rect(344, 644, 512, 512))  # centred on (900, 600)
    assert np.array_equal(sheet[top : top + 512, 520 : 520 + 512], centre)


def test_the_quick_start_preset_trains_a_2_megapixel_canvas_of_the_bundled_samples():
    """README's first command: `--preset mosaic` is the tiny architecture on the bundled samples
    for an 1800x1200 canvas; an explicit size or scale replaces that canvas."""
    from famos.training.cli import EXAMPLES, _resolve, build_parser

    options, _ = _resolve(build_parser().parse_args(["--preset", "mosaic", "--out", "x"]))
    assert options["canvas"] == "1800x1200" and 1800 * 1200 >= 2_000_000
    assert options["content"] == [EXAMPLES / "content" / "chelsea.png"] and all(p.exists() for p in options["style"])
    assert options["preview_every"] == options["steps"]  # only the final preview renders
    options, _ = _resolve(build_parser().parse_args(["--preset", "mosaic", "--out", "x", "--scale", "2"]))
    assert "canvas" not in options and options["scale"] == 2


@pytest.mark.parametrize("mode", ["parametric", "copy", "full"])
def test_the_quick_start_preset_serves_every_variant(mode):
    """bench/bench_variants.py trains `--preset mosaic --mode M`: the preset's template options
    (entropy) quietly do not apply to the parametric U-Net, while the same flag given by hand is refused."""
    from famos.errors import UserError
    from famos.training.cli import _resolve, build_parser, configs

    args = build_parser().parse_args(["--preset", "mosaic", "--mode", mode, "--out", "x"])
    options, given = _resolve(args)
    generator, canvas, _ = configs(options, given=given, content_size=(451, 300))
    assert (canvas.width, canvas.height) == (1800, 1200)
    assert generator.n_templates == (0 if mode == "parametric" else 16)
    args = build_parser().parse_args(["--preset", "mosaic", "--mode", "parametric", "--entropy", "0.1", "--out", "x"])
    options, given = _resolve(args)
    with pytest.raises(UserError, match="entropy"):
        configs(options, given=given, content_size=(451, 300))


def test_the_default_preset_without_images_names_the_missing_option(tmp_path, capsys):
    rc = famos(["train", "--preset", "default", "--out", str(tmp_path / "run"), "--quiet"])
    _one_line_error(capsys, rc, "--style is required")
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_no_preset_trains_the_dataclasses_defaults_and_presets_hold_only_differences():
    """One source of defaults: the options left out are the config dataclasses' own defaults."""
    from famos.config import CanvasConfig, GeneratorConfig
    from famos.training.cli import DEFAULTS, PRESETS, _resolve, build_parser, configs
    from famos.training.config import TrainConfig

    for argv in ([], ["--preset", "default"]):
        options, given = _resolve(build_parser().parse_args(["--out", "x", *argv]))
        assert configs(options, given=given, content_size=(451, 300)) == (
            GeneratorConfig(), CanvasConfig(300, 451), TrainConfig())
    for name, preset in PRESETS.items():
        restated = {k: v for k, v in preset.items() if k in DEFAULTS and DEFAULTS[k] == v}
        assert not restated, (name, restated)
