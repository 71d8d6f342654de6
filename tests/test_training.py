"""Training internals on tiny models: each loss, map, regularizer and mode has its promised gradient; data; metrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from famos.config import BlendMode, CanvasConfig, Fold, GeneratorConfig, NoiseConfig
from famos.errors import UserError
from famos.training.config import (
    AdversarialLoss,
    CorrespondenceMap,
    CropMode,
    DiscriminatorConfig,
    EntropySchedule,
    LossConfig,
    RegularizerConfig,
    TrainConfig,
)
from famos.units import parse_canvas, parse_print_size, print_pixels
from famos.training.data import WindowSampler
from famos.training.losses import (
    Vgg19Features,
    entropy_weight,
    gradient_penalty,
    load_vgg_weights,
    mix_entropy,
    template_diversity,
    total_variation,
)
from famos.training.metrics import content_error, sliced_wasserstein
from famos.training.trainer import Trainer, TrainingData

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


def generator_update(
    t: Trainer, *, silent_discriminator: bool = False
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One ``train_step``; returns its losses and the tensors of its generator update, each carrying
    ``.grad``: the gradient of the total generator loss. With ``silent_discriminator`` D is all zeros
    and never updated, so D(x) == 0 for every x and the adversarial term has no gradient at all."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        if tensor.requires_grad:
            tensor.retain_grad()
        seen[name] = tensor

    def on_generator(module, args, out):
        if torch.is_grad_enabled():  # the update's forward, not the extra D steps' no-grad ones
            keep("content", args[0])
            for name, tensor in zip(("image", "alpha", "weights", "painted", "copied"), out):
                keep(name, tensor)

    def on_mixer(module, args, out):
        if torch.is_grad_enabled():
            keep("logits", args[0])

    def on_head(module, args, out):
        if torch.is_grad_enabled():
            keep("head", out)

    def noise_with_grad(module, args):
        x0, psi, noise, pooled = args
        if noise is None or not torch.is_grad_enabled():
            return None
        keep("noise", noise.detach().requires_grad_(True))
        return x0, psi, seen["noise"], pooled

    if silent_discriminator:
        with torch.no_grad():
            for p in t.discriminator.parameters():
                p.zero_()
        t._update_discriminator = lambda real, fake, copied=None: {}
    g = t.generator
    handles = [
        g.register_forward_hook(on_generator), g.mixer.register_forward_hook(on_mixer),
        g.unet.register_forward_hook(on_head), g.unet.register_forward_pre_hook(noise_with_grad),
    ]
    try:
        losses = t.train_step()
    finally:
        for handle in handles:
            handle.remove()
    assert all(math.isfinite(v) for v in losses.values()), losses
    return losses, seen


def grad_of(tensor: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(tensor) if tensor.grad is None else tensor.grad


def promised_gradient(quantity, at: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``quantity(at)`` and its gradient, in float64 from a detached copy of ``at``."""
    x = at.detach().double().requires_grad_(True)
    value = quantity(x)
    (grad,) = torch.autograd.grad(value, x)
    return float(value.detach()), grad


@pytest.mark.parametrize("kind", list(AdversarialLoss))
def test_each_adversarial_loss_has_its_promised_gradients(kind, monkeypatch):
    """D's loss raises its logits on real patches and lowers them on fakes; G's loss raises D's
    logits on fakes; each with the gradient of its textbook formula, through D into the image."""
    import famos.training.trainer as trainer_module

    d_calls, g_calls = [], []

    def recording(function, calls):
        def wrapped(kind, *logits):
            for x in logits:
                x.retain_grad()
            calls.append(logits)
            return function(kind, *logits)
        return wrapped

    monkeypatch.setattr(trainer_module, "discriminator_loss", recording(trainer_module.discriminator_loss, d_calls))
    monkeypatch.setattr(trainer_module, "generator_loss", recording(trainer_module.generator_loss, g_calls))
    config = dataclasses.replace(TINY, losses=LossConfig(adversarial=kind, d_steps=2, content_weight=0.0))
    t = trainer(config=config)
    styles, inputs = [], {}  # the real patches drawn; D's input behind each of its outputs
    sample = t.sampler.sample

    def recording_sample(rng):
        batch = sample(rng)
        styles.append(batch.style)
        return batch

    def on_discriminator(module, args, out):
        inputs[id(out)] = args[0]

    t.sampler.sample = recording_sample
    t.discriminator.register_forward_hook(on_discriminator)
    losses, out = generator_update(t)
    assert ("gp" in losses) == (kind is AdversarialLoss.WGAN_GP)
    # BatchNorm couples the samples whose input gradients WGAN-GP penalizes one by one.
    has_batch_norm = any(isinstance(m, torch.nn.BatchNorm2d) for m in t.discriminator.modules())
    assert has_batch_norm == (kind is not AdversarialLoss.WGAN_GP)

    # d(loss)/d(logit) per logit: descent raises real logits (negative gradient), lowers fakes.
    promised_d = {
        AdversarialLoss.DCGAN: (lambda r: torch.sigmoid(r) - 1, lambda f: torch.sigmoid(f)),
        AdversarialLoss.LSGAN: (lambda r: r - 1, lambda f: f),
        AdversarialLoss.WGAN_GP: (lambda r: -torch.ones_like(r), lambda f: torch.ones_like(f)),
    }[kind]
    assert len(d_calls) == 2  # d_steps
    for real, fake in d_calls:
        assert any(torch.equal(inputs[id(real)], style) for style in styles)  # "real": D on style patches
        assert not any(torch.equal(inputs[id(fake)], style) for style in styles)
        for logits, promised in zip((real, fake), promised_d):
            expected = promised(logits.detach()) / logits.numel()
            assert torch.allclose(grad_of(logits), expected, rtol=1e-4, atol=1e-9)
        (r, dr), (f, df) = ((x.detach(), grad_of(x)) for x in (real, fake))
        if kind is AdversarialLoss.LSGAN:  # towards the labels: 1 for real, 0 for fake
            assert (dr * (r - 1) > 0).all() and (df * f > 0).all()
        else:
            assert (dr < 0).all() and (df > 0).all()

    # G: descent raises D's logits on the fakes (LSGAN: towards the real label 1).
    promised_g = {
        AdversarialLoss.DCGAN: lambda f: F.softplus(-f).mean(),  # non-saturating: -log sigmoid(f)
        AdversarialLoss.LSGAN: lambda f: 0.5 * ((f - 1) ** 2).mean(),
        AdversarialLoss.WGAN_GP: lambda f: -f.mean(),
    }[kind]
    ((fake,),) = g_calls
    assert (fake.detach() < 1).all()  # so LSGAN's pull towards 1 is upwards too
    value, expected = promised_gradient(promised_g, fake)
    assert losses["g_adv"] == pytest.approx(value, rel=1e-5)
    assert torch.allclose(grad_of(fake).double(), expected, rtol=1e-4, atol=1e-12)
    assert (fake.grad < 0).all()
    # ... and that gradient reaches the generated image through D (not detached, the same D).
    image = out["image"]
    value, expected = promised_gradient(lambda x: promised_g(t.discriminator.double()(x)), image)
    t.discriminator.float()
    assert expected.abs().max() > 0
    assert torch.allclose(grad_of(image).double(), expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def test_gradient_penalty_is_zero_only_for_unit_gradient_norm():
    """WGAN-GP's (||grad D(x_hat)|| - 1)^2: per sample, at interpolates of real and fake, differentiable
    in D's weights (so D is pushed to unit gradient norm)."""
    torch.manual_seed(0)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    rng = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    critic = torch.nn.Conv2d(3, 1, 8)  # linear: its input gradient is its weight, everywhere
    for norm in (1.0, 3.0, 0.5):
        with torch.no_grad():
            critic.weight.mul_(norm / critic.weight.norm())
        critic.zero_grad()
        penalty = gradient_penalty(critic, real, fake, rng=rng())
        assert float(penalty.detach()) == pytest.approx((norm - 1) ** 2, abs=1e-6)
        penalty.backward()
        # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: shrinks a steep critic, steepens a flat one.
        assert torch.allclose(critic.weight.grad, 2 * (norm - 1) * critic.weight / norm, atol=1e-6)

    class HalfSquare(torch.nn.Module):  # gradient x: norm 1 on the unit sphere only
        def forward(self, x):
            return 0.5 * (x**2).sum(dim=(1, 2, 3))

    unit = torch.randn(16, 3, 8, 8)
    unit /= unit.flatten(1).norm(dim=1)[:, None, None, None]
    # Interpolates of 1.5 u and 0.5 u have gradient norm 0.5 + t: (t - 0.5)^2, below 0.25 unless t is 0 or 1.
    penalty = float(gradient_penalty(HalfSquare(), 1.5 * unit, 0.5 * unit, rng=rng()).detach())
    assert 0 < penalty < 0.2
    assert float(gradient_penalty(HalfSquare(), unit, unit, rng=rng()).detach()) == pytest.approx(0, abs=1e-10)


def tv(x: torch.Tensor) -> torch.Tensor:
    """Total variation over the two spatial axes only (never across templates or the batch)."""
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def pixel_entropy(weights: torch.Tensor) -> torch.Tensor:
    return -(weights * weights.log()).sum(dim=1).mean()  # over templates, mean over batch and pixels


def usage_deficit(weights: torch.Tensor) -> torch.Tensor:
    usage = weights.mean(dim=(0, 2, 3))  # the batch's share of each template
    return math.log(weights.shape[1]) + (usage * usage.log()).sum()


# Each regularizer: the generator output it acts on and the quantity whose gradient it must have
# (the mixing weights' terms as functions of the mix logits A, through Ã = softmax_N(A)).
REGULARIZERS = {
    "entropy": ("logits", lambda a: pixel_entropy(torch.softmax(a, dim=1))),
    "mix_tv": ("logits", lambda a: tv(torch.softmax(a, dim=1))),
    "alpha_norm": ("alpha", lambda alpha: alpha.mean()),
    "alpha_tv": ("alpha", tv),
    "diversity": ("logits", lambda a: usage_deficit(torch.softmax(a, dim=1))),
}


def test_regularizer_definitions_at_known_points():
    n = 3
    uniform = torch.full((2, n, 4, 4), 1 / n)
    one_hot = F.one_hot(torch.arange(2 * 16).reshape(2, 4, 4) % n, n).permute(0, 3, 1, 2).float()
    single = F.one_hot(torch.zeros(2, 4, 4, dtype=torch.int64), n).permute(0, 3, 1, 2).float()
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1  # +-1 checkerboard
    per_template = torch.arange(n, dtype=torch.float32)[None, :, None, None].expand(2, n, 4, 4)
    assert float(mix_entropy(uniform)) == pytest.approx(math.log(n))  # most mixed pixels
    assert float(mix_entropy(one_hot)) == pytest.approx(0, abs=1e-6)  # crisp choices
    assert float(total_variation(per_template)) == 0  # constant in space, however templates differ
    assert float(total_variation(checker.expand(2, n, 4, 4))) == pytest.approx(4.0)  # |dy| 2 + |dx| 2
    assert float(template_diversity(uniform)) == pytest.approx(0, abs=1e-6)
    assert float(template_diversity(one_hot[:, :, :3, :])) == pytest.approx(0, abs=1e-6)  # crisp, each used equally
    assert float(template_diversity(single)) == pytest.approx(math.log(n), abs=1e-5)  # one template only
    # The test's own definitions above are those same quantities.
    for w in (uniform, one_hot.clamp_min(1e-12), single.clamp_min(1e-12)):
        assert float(pixel_entropy(w)) == pytest.approx(float(mix_entropy(w)), abs=1e-5)
        assert float(usage_deficit(w)) == pytest.approx(float(template_diversity(w)), abs=1e-5)
    ramp = RegularizerConfig(entropy=0.4, entropy_schedule=EntropySchedule.RAMP, entropy_ramp_steps=4)
    assert [entropy_weight(ramp, s) for s in range(6)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert entropy_weight(dataclasses.replace(ramp, entropy_schedule=EntropySchedule.CONSTANT), 0) == 0.4


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_each_regularizer_has_the_gradient_it_promises(name):
    """Alone in G's loss (no content term, a silent D), a regularizer of weight w gives the generator
    output it acts on exactly w times the gradient of its quantity, and one small step along
    -gradient lowers that quantity. The entropy weight ramps: half of it at step 1 of 2."""
    weight = 0.3
    regs = RegularizerConfig(entropy_schedule=EntropySchedule.RAMP, entropy_ramp_steps=2, **{name: weight})
    t = trainer(config=dataclasses.replace(TINY, losses=LossConfig(content_weight=0.0), regularizers=regs))
    with torch.no_grad():  # G favours template 0: far from the uniform usage where diversity is flat
        t.generator.unet.output_convolution().bias[:3] = torch.tensor([1.5, 0.0, -1.5])
    first, _ = generator_update(t, silent_discriminator=True)
    assert (name in first) == (name != "entropy")  # the ramp starts at weight 0
    losses, out = generator_update(t, silent_discriminator=True)
    if name == "entropy":
        weight *= 0.5
    on, quantity = REGULARIZERS[name]
    x = out[on]
    value, expected = promised_gradient(quantity, x)
    assert losses[name] == pytest.approx(weight * value, rel=1e-5, abs=1e-7)  # float32 log N - H: cancellation
    grad = grad_of(x).double()
    assert expected.abs().max() > 0
    assert torch.allclose(grad, weight * expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert grad_of(out["image"]).abs().max() == 0  # nothing else in the loss
    # small: total variation sums absolute differences, and a longer step overshoots their kinks
    step = x.detach().double() - 1e-4 * grad / grad.abs().max()
    assert float(quantity(step)) < value
    if name == "alpha_norm":  # prefer copying: every alpha pushed down alike
        assert (grad > 0).all() and torch.allclose(grad, grad.flatten()[0].expand_as(grad))


CONTENT_MAPS = [k for k in CorrespondenceMap if k is not CorrespondenceMap.VGG]


@pytest.mark.parametrize("kind", CONTENT_MAPS)
def test_each_content_loss_pulls_toward_the_content(kind):
    """lambda ||phi(I_c) - phi(I)||^2 on the final image I and lambda_M ||phi(I_c) - phi(I_M)||^2 on the
    copied image I_M alone: each gives its own tensor exactly that gradient (through phi_rec for the
    learned map, whose weights it trains); for the fixed, linear maps <grad, I - I_c> = 2 * loss > 0."""
    import copy

    for term, on, content_weight, copy_weight in (("content", "image", 0.7, 0.0), ("content_copy", "copied", 0.0, 0.4)):
        losses_config = LossConfig(correspondence=kind, content_weight=content_weight, copy_content_weight=copy_weight)
        t = trainer(config=dataclasses.replace(TINY, losses=losses_config))
        weight = content_weight or copy_weight
        phi = copy.deepcopy(t.content_map).double()  # as it was during the step (the learned map trains)
        losses, out = generator_update(t, silent_discriminator=True)
        target = phi.target(out["content"].detach().double())
        value, expected = promised_gradient(lambda x: F.mse_loss(phi.output(x), target), out[on])
        assert losses[term] == pytest.approx(weight * value, rel=1e-5)
        grad = grad_of(out[on]).double()
        assert expected.abs().max() > 0
        assert torch.allclose(grad, weight * expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
        if term == "content_copy":
            assert grad_of(out["image"]).abs().max() == 0  # I_M alone
        if kind is CorrespondenceMap.LEARNED:
            assert all(p.grad is not None and p.grad.abs().max() > 0 for p in t.content_map.parameters())
        else:
            towards_content = out[on].detach().double() - out["content"].detach().double()
            assert float((grad * towards_content).sum()) == pytest.approx(2 * losses[term], rel=1e-4)

    # What phi keeps of the content: a flat colour (its luma, but the learned map's target keeps colour),
    # with no dark frame at the borders; not a +-1 checkerboard (the texture the style may change).
    colour = torch.tensor([0.6, -0.2, 0.3]).view(1, 3, 1, 1)
    kept = t.content_map.target(colour.expand(1, 3, 32, 32))
    luma = 0.299 * 0.6 + 0.587 * -0.2 + 0.114 * 0.3
    expected = colour.expand_as(kept) if kind is CorrespondenceMap.LEARNED else torch.full_like(kept, luma)
    assert torch.allclose(kept, expected, atol=1e-5)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1).expand(1, 3, 32, 32)
    assert t.content_map.target(checker).abs().max() < 1e-4


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


@pytest.mark.parametrize(
    "gconfig, trained",
    [
        # Head channels: N mix logits, the blend logit, 3 painted; trained: those G's loss reaches.
        (GeneratorConfig(depth=2, width=4, kernel=3, n_templates=0, blend=BlendMode.PAINT), {"painted"}),
        (GeneratorConfig(depth=2, width=4, kernel=3, n_templates=2, blend=BlendMode.COPY), {"logits"}),
        (
            GeneratorConfig(
                depth=2, width=4, kernel=3, n_templates=2, noise=NoiseConfig(n_local=2, n_global=1, n_periodic=1)
            ),
            {"logits", "blend", "painted", "noise"},
        ),
    ],
    ids=["parametric", "copy", "noise"],
)
def test_modes_train_what_they_use(gconfig, trained):
    """One step of each generator mode: G's loss reaches exactly the outputs the mode's image is made
    of (paint: I_G only, alpha fixed at 1; copy: the mixing logits only; blend: all, and the noise)."""
    t = trainer(gconfig=gconfig)
    _, out = generator_update(t)
    n = gconfig.n_templates
    head = grad_of(out["head"])
    reached = {
        "logits": bool(n) and head[:, :n].abs().max() > 0,
        "blend": head[:, n].abs().max() > 0,
        "painted": head[:, n + 1 :].abs().max() > 0,
        "noise": "noise" in out and grad_of(out["noise"]).abs().max() > 0,
    }
    assert {name for name, yes in reached.items() if yes} == trained
    if not n:
        assert (out["alpha"] == 1).all()  # the parametric U-Net paints everything


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
