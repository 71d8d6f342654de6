"""Adversarial losses, content correspondence maps and the regularizers of the mixing weights.

    L_G = adv(D(I)) + lambda ||phi(I_c) - phi(I)||^2 + lambda_M ||phi(I_c) - phi(I_M)||^2 + regularizers
"""

from __future__ import annotations

import math
import pathlib

import torch
import torch.nn.functional as F
from torch import nn

from famos.errors import UserError
from famos.training.config import AdversarialLoss, CorrespondenceMap, EntropySchedule, LossConfig, RegularizerConfig

_LUMA = (0.299, 0.587, 0.114)


# --- adversarial -------------------------------------------------------------------------------


def discriminator_loss(kind: AdversarialLoss, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D's loss from its logits on real style patches and on generated images."""
    if kind is AdversarialLoss.DCGAN:
        return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + discriminator_fake_loss(kind, fake)
    if kind is AdversarialLoss.LSGAN:
        return 0.5 * ((real - 1) ** 2).mean() + discriminator_fake_loss(kind, fake)
    return discriminator_fake_loss(kind, fake) - real.mean()


def discriminator_fake_loss(kind: AdversarialLoss, fake: torch.Tensor) -> torch.Tensor:
    """D's term for one more kind of generated image (the copied image I_M under fAdvM)."""
    if kind is AdversarialLoss.DCGAN:
        return F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    if kind is AdversarialLoss.LSGAN:
        return 0.5 * (fake**2).mean()
    return fake.mean()


def generator_loss(kind: AdversarialLoss, fake: torch.Tensor) -> torch.Tensor:
    if kind is AdversarialLoss.DCGAN:
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind is AdversarialLoss.LSGAN:
        return 0.5 * ((fake - 1) ** 2).mean()
    return -fake.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, rng: torch.Generator) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    mix = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real.device)
    points = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


# --- correspondence maps -------------------------------------------------------------------------


class ContentMap(nn.Module):
    """phi of the content loss. ``target(I_c)`` and ``output(I)`` differ only for the learned map,
    where a 1x1 network phi_rec recolours the output before comparison (trained with G)."""

    def __init__(self, config: LossConfig, *, vgg_state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.kind = config.correspondence
        self.register_buffer("blur_kernel", gaussian_kernel(config.blur_sigma), persistent=False)
        self.reconstruct = (
            nn.Sequential(nn.Conv2d(3, 16, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 3, 1), nn.Tanh())
            if self.kind is CorrespondenceMap.LEARNED
            else None
        )
        self.vgg = Vgg19Features(vgg_state) if self.kind is CorrespondenceMap.VGG else None

    def target(self, image: torch.Tensor) -> torch.Tensor:
        if self.kind is CorrespondenceMap.LEARNED:
            return blur(image, self.blur_kernel)
        return self._fixed(image)

    def output(self, image: torch.Tensor) -> torch.Tensor:
        if self.reconstruct is not None:
            return blur(self.reconstruct(image), self.blur_kernel)
        return self._fixed(image)

    def _fixed(self, image: torch.Tensor) -> torch.Tensor:
        if self.kind is CorrespondenceMap.BLUR:
            return grey(blur(image, self.blur_kernel))
        if self.vgg is not None:
            return self.vgg(image)
        factor = {CorrespondenceMap.DOWN4: 4, CorrespondenceMap.DOWN8: 8, CorrespondenceMap.DOWN16: 16}[self.kind]
        return grey(F.avg_pool2d(image, factor, ceil_mode=True))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with reflection padding (no dark frame from zero padding)."""
    channels, radius = image.shape[1], kernel.numel() // 2
    # Reflection needs the pad smaller than the side; tiny windows fall back to replication.
    mode = "reflect" if min(image.shape[2:]) > radius else "replicate"
    k = kernel.to(image.dtype)
    x = F.pad(image, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def grey(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


class Vgg19Features(nn.Module):
    """VGG-19 up to relu3_1 (frozen), with torchvision's ``features.<i>`` parameter names."""

    LAYERS = (64, 64, "pool", 128, 128, "pool", 256)  # conv widths up to conv3_1
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, state: dict[str, torch.Tensor] | None):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in self.LAYERS:
            if item == "pool":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        if state is not None:
            self.load_state_dict(state, strict=True)
        self.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(((image + 1) / 2 - self.mean) / self.std)


def load_vgg_weights(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """The conv weights Vgg19Features needs, from a local safetensors or torch file (weights only)."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such VGG weights file") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means the file is unusable
        raise UserError(f"{path}: not a readable VGG-19 weights file ({type(err).__name__})") from None
    needed = Vgg19Features(None).state_dict()
    state = {}
    for name, value in needed.items():
        tensor = raw.get(name) if isinstance(raw, dict) else None
        if not isinstance(tensor, torch.Tensor) or tensor.shape != value.shape:
            raise UserError(f"{path}: no VGG-19 tensor {name!r} of shape {tuple(value.shape)}")
        state[name] = tensor.float()
    return state


# --- regularizers ------------------------------------------------------------------------------


def entropy_weight(config: RegularizerConfig, step: int) -> float:
    if config.entropy_schedule is EntropySchedule.RAMP:
        return config.entropy * min(1.0, step / config.entropy_ramp_steps)
    return config.entropy


def mix_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel entropy of the mixing weights (B, N, h, w)."""
    return -(weights * torch.log(weights.clamp_min(1e-8))).sum(dim=1).mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def template_diversity(weights: torch.Tensor) -> torch.Tensor:
    """log N - entropy of the batch's mean template usage: 0 when every template is used equally."""
    usage = weights.mean(dim=(0, 2, 3))
    return math.log(weights.shape[1]) + (usage * torch.log(usage.clamp_min(1e-8))).sum()
