"""Training internals on tiny models: every loss, map, regularizer and mode runs; data; metrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from famos.config import BlendMode, CanvasConfig, Fold, GeneratorConfig, NoiseConfig
from famos.errors import UserError
from training.config import (
    AdversarialLoss,
    CorrespondenceMap,
    CropMode,
    DiscriminatorConfig,
    EntropySchedule,
    LossConfig,
    RegularizerConfig,
    TrainConfig,
    parse_canvas,
    print_pixels,
)
from famos.units import parse_print_size
from training.data import WindowSampler
from training.losses import Vgg19Features, load_vgg_weights
from training.metrics import content_error, sliced_wasserstein
from training.trainer import Trainer, TrainingData

TINY_G = GeneratorConfig(depth=2, width=4, kernel=3, n_templates=3)
TINY = TrainConfig(steps=2, patch=32, batch=2, discriminator=DiscriminatorConfig(depth=2, width=8, kernel=3))


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions are faster on one thread, and the suite shares its cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images(seed: int = 0):
    rng = np.random.default_rng(seed)
    content = rng.integers(0, 256, (44, 58, 3), dtype=np.uint8)
    styles = (rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return TrainingData(contents=(content, content[::-1].copy()), styles=styles, provenance={})


def trainer(config=TINY, gconfig=TINY_G, canvas=CanvasConfig(44, 58), vgg_state=None) -> Trainer:
    return Trainer.start(
        config=config, generator_config=gconfig, canvas=canvas, data=images(), device=torch.device("cpu"),
        vgg_state=vgg_state,
    )


def one_step_losses(**kwargs) -> dict[str, float]:
    losses = trainer(**kwargs).train_step()
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    return losses


@pytest.mark.parametrize("kind", list(AdversarialLoss))
def test_each_adversarial_loss_runs(kind):
    config = dataclasses.replace(TINY, losses=LossConfig(adversarial=kind, d_steps=2))
    losses = one_step_losses(config=config)
    assert ("gp" in losses) == (kind is AdversarialLoss.WGAN_GP)


@pytest.mark.parametrize("kind", [k for k in CorrespondenceMap if k is not CorrespondenceMap.VGG])
def test_each_correspondence_map_runs(kind):
    config = dataclasses.replace(TINY, losses=LossConfig(correspondence=kind, copy_content_weight=0.5))
    losses = one_step_losses(config=config)
    assert {"content", "content_copy"} <= set(losses)


def test_vgg_map_from_local_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in Vgg19Features(None).state_dict().items()}, str(path))
    config = dataclasses.replace(TINY, losses=LossConfig(correspondence=CorrespondenceMap.VGG, vgg_weights=str(path)))
    one_step_losses(config=config, vgg_state=load_vgg_weights(path))
    save_file({"features.0.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="features.0.weight"):
        load_vgg_weights(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="no such"):
        load_vgg_weights(tmp_path / "missing.pth")


def test_every_regularizer_runs():
    regs = RegularizerConfig(
        entropy=0.1, entropy_schedule=EntropySchedule.RAMP, entropy_ramp_steps=1, mix_tv=0.1, alpha_norm=0.1,
        alpha_tv=0.1, diversity=0.1,
    )
    t = trainer(config=dataclasses.replace(TINY, regularizers=regs))
    t.train_step()  # step 0: the ramp starts at weight 0
    losses = t.train_step()
    assert {"entropy", "mix_tv", "alpha_norm", "alpha_tv", "diversity"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    "gconfig",
    [
        GeneratorConfig(depth=2, width=4, kernel=3, n_templates=0, blend=BlendMode.PAINT),
        GeneratorConfig(depth=2, width=4, kernel=3, n_templates=2, blend=BlendMode.COPY),
        GeneratorConfig(depth=2, width=4, kernel=3, n_templates=2, noise=NoiseConfig(n_local=2, n_global=1, n_periodic=1)),
    ],
    ids=["parametric", "copy", "noise"],
)
def test_modes_run(gconfig):
    one_step_losses(gconfig=gconfig)


def test_independent_crops_mirror_style_wrap_and_small_canvas():
    config = dataclasses.replace(TINY, crop=CropMode.INDEPENDENT, mirror_style=True)
    # 20 x 58 canvas: smaller than P vertically, so the window takes the aligned side (20).
    canvas = CanvasConfig(18, 58, fold=Fold.WRAP, style_scale=1.7)
    t = trainer(config=config, canvas=canvas)
    batch = t.sampler.sample(torch.Generator().manual_seed(0))
    assert batch.content.shape == (2, 3, 20, 32) and batch.style.shape == (2, 3, 20, 32)
    assert (batch.origin % 4 == 0).all() and batch.origin.dtype == torch.int64
    assert batch.content.abs().max() <= 1 and batch.style.abs().max() <= 1
    one_step_losses(config=config, canvas=canvas)


def test_same_crop_content_matches_window():
    data = images()
    sampler = WindowSampler(
        config=TINY_G, canvas=CanvasConfig(44, 58), contents=list(data.contents), styles=list(data.styles),
        patch=16, batch=3, crop=CropMode.SAME, mirror_style=False,
    )
    from famos.canvas import content_window, to_unit_range
    from famos.planning import Rect

    batch = sampler.sample(torch.Generator().manual_seed(3))
    for content, (y, x) in zip(batch.content, batch.origin.tolist()):
        expected = content_window(to_unit_range(data.contents[0]), canvas_height=44, canvas_width=58, window=Rect(y, x, 16, 16))
        assert np.array_equal(content.numpy(), expected)


def test_print_size_and_canvas_parsing():
    assert parse_print_size("120x80cm") == pytest.approx((120 / 2.54, 80 / 2.54))
    assert parse_print_size("47x31in") == (47.0, 31.0)
    assert parse_print_size("1200 x 800 mm") == pytest.approx((1200 / 25.4, 800 / 25.4))
    assert print_pixels("120x80cm", dpi=150) == (round(120 / 2.54 * 150), round(80 / 2.54 * 150))
    assert parse_canvas("640x480") == (640, 480)
    for bad in ("120x80", "x80cm", "0x80cm", "12x8ft"):
        with pytest.raises(UserError):
            parse_print_size(bad)
    for bad in ("0x10", "10", "-5x5"):
        with pytest.raises(UserError, match="canvas"):
            parse_canvas(bad)


def test_metrics_swd_and_content_error():
    rng = np.random.default_rng(0)
    # A smooth, structured "style": stripes plus a gradient.
    y, x = np.mgrid[0:96, 0:96]
    style = np.stack([(np.sin(x / 3.0) + 1) * 100, y * 2.0, (np.cos(y / 5.0) + 1) * 120], axis=2).astype(np.uint8)
    noise = rng.integers(0, 256, style.shape, dtype=np.uint8)
    same = sliced_wasserstein(style, [style])
    other = sliced_wasserstein(noise, [style])
    assert same < 0.02 and other > 10 * same
    assert content_error(style, style) == 0.0
    assert content_error(noise, style) > 0.01
