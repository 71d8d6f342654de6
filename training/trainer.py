"""One FAMOS training state (G, D, phi, optimizers, RNG, step) and its checkpoint round trip.

A step is:  D update(s) on real style patches vs generated windows, then one G update with
adversarial + content + regularizer terms. Everything random is drawn from ``self.rng`` (one
torch.Generator stored in the checkpoint), so k steps + save + load + k steps equals 2k steps.

Checkpoint tensors (famos.checkpoint layout plus training prefixes):

    generator.*                    famos.checkpoint.generator_tensors
    content_image                  uint8 (H, W, 3): first content image, the canvas's default
    data.content.<i> (i >= 1)      further content images (independent crops), uint8
    data.style.<i>                 style images, uint8: D's real patches on resume
    discriminator.*, content_map.* state dicts
    optimizer.<generator|discriminator>.<param index>.<moment>   Adam state
    rng.sampler, rng.torch         uint8 RNG states
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from famos.checkpoint import CheckpointError, empty_generator, generator_tensors, load, save, spec_of
from famos.config import CanvasConfig, GeneratorConfig, ModelSpec, from_dict, to_dict
from famos.errors import UserError
from famos.generator import FamosGenerator, build_generator
from famos.training.config import AdversarialLoss, CorrespondenceMap, Precision, TrainConfig
from famos.training.data import Batch, WindowSampler
from famos.training.discriminator import PatchDiscriminator, dcgan_init
from famos.training.losses import (
    ContentMap,
    discriminator_fake_loss,
    discriminator_loss,
    entropy_weight,
    generator_loss,
    gradient_penalty,
    mix_entropy,
    template_diversity,
    total_variation,
)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    contents: tuple[np.ndarray, ...]  # uint8 (H, W, 3); the first is the canvas's default content
    styles: tuple[np.ndarray, ...]
    provenance: dict[str, Any]  # file names and sha256 hashes


class Trainer:
    def __init__(
        self,
        *,
        config: TrainConfig,
        generator: FamosGenerator,
        data: TrainingData,
        device: torch.device,
        vgg_state: dict[str, torch.Tensor] | None = None,
    ):
        self.config = config
        self.data = data
        self.device = device
        self.step = 0
        self.generator = generator.to(device).train()
        self.discriminator = PatchDiscriminator(
            config.discriminator, batch_norm=config.losses.adversarial is not AdversarialLoss.WGAN_GP
        ).to(device)
        dcgan_init(self.discriminator)
        self.content_map = ContentMap(config.losses, vgg_state=vgg_state).to(device)
        betas = (config.beta1, config.beta2)
        self.g_params = list(self.generator.parameters()) + list(self.content_map.parameters())
        self.g_params = [p for p in self.g_params if p.requires_grad]
        self.g_optimizer = torch.optim.Adam(self.g_params, lr=config.lr, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        fp16 = config.precision is Precision.FP16
        self.g_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.d_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.sampler = WindowSampler(
            config=generator.config,
            canvas=generator.canvas,
            contents=list(data.contents),
            styles=list(data.styles),
            patch=config.patch,
            batch=config.batch,
            crop=config.crop,
            mirror_style=config.mirror_style,
        )
        self.rng = torch.Generator().manual_seed(config.seed)

    @classmethod
    def start(
        cls,
        *,
        config: TrainConfig,
        generator_config: GeneratorConfig,
        canvas: CanvasConfig,
        data: TrainingData,
        device: torch.device,
        vgg_state: dict[str, torch.Tensor] | None = None,
    ) -> Trainer:
        """A fresh run: DCGAN-initialized G and D, seeded by ``config.seed``."""
        torch.manual_seed(config.seed)
        generator = build_generator(generator_config, canvas, list(data.styles))
        dcgan_init(generator)
        return cls(config=config, generator=generator, data=data, device=device, vgg_state=vgg_state)

    # --- one step ------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        losses: dict[str, float] = {}
        for _ in range(self.config.losses.d_steps - 1):
            batch = self.sampler.sample(self.rng).to(self.device)
            with torch.no_grad(), self._autocast():
                fake = self.generator(batch.content, batch.origin, batch.noise)[0]
            self._update_discriminator(batch.style, fake)
        batch = self.sampler.sample(self.rng).to(self.device)
        with self._autocast():
            out = self.generator(batch.content, batch.origin, batch.noise)
        copied = out[4].detach() if self.config.losses.copy_adversarial_weight else None
        losses.update(self._update_discriminator(batch.style, out[0].detach(), copied))
        losses.update(self._update_generator(batch, out))
        self.step += 1
        return losses

    def _update_discriminator(self, real: torch.Tensor, fake: torch.Tensor,
                              copied: torch.Tensor | None = None) -> dict[str, float]:
        kind = self.config.losses.adversarial
        with self._autocast():
            loss = discriminator_loss(kind, self.discriminator(real).float(), self.discriminator(fake).float())
            if copied is not None:  # fAdvM: the copied image I_M is a fake too
                loss = loss + discriminator_fake_loss(kind, self.discriminator(copied).float())
            out = {"d": float(loss.detach())}
            if kind is AdversarialLoss.WGAN_GP:
                penalty = gradient_penalty(self.discriminator, real, fake.float(), rng=self.rng)
                out["gp"] = float(penalty.detach())
                loss = loss + self.config.losses.gradient_penalty * penalty
        self.d_optimizer.zero_grad(set_to_none=True)
        self.d_scaler.scale(loss).backward()
        self.d_scaler.step(self.d_optimizer)
        self.d_scaler.update()
        return out

    def _update_generator(self, batch: Batch, out: tuple[torch.Tensor, ...]) -> dict[str, float]:
        image, alpha, weights, _, copied = out
        losses, regs = self.config.losses, self.config.regularizers
        with self._autocast():
            terms = {"g_adv": generator_loss(losses.adversarial, self.discriminator(image).float())}
            if losses.copy_adversarial_weight:
                terms["g_adv_copy"] = losses.copy_adversarial_weight * generator_loss(
                    losses.adversarial, self.discriminator(copied).float())
            if losses.content_weight or losses.copy_content_weight:
                with torch.no_grad():
                    target = self.content_map.target(batch.content).float()
                if losses.content_weight:
                    terms["content"] = losses.content_weight * F.mse_loss(self.content_map.output(image).float(), target)
                if losses.copy_content_weight:
                    mapped = self.content_map.output(copied).float()
                    terms["content_copy"] = losses.copy_content_weight * F.mse_loss(mapped, target)
            weights, alpha = weights.float(), alpha.float()
            entropy = entropy_weight(regs, self.step)
            if entropy:
                terms["entropy"] = entropy * mix_entropy(weights)
            if regs.mix_tv:
                terms["mix_tv"] = regs.mix_tv * total_variation(weights)
            if regs.alpha_norm:
                terms["alpha_norm"] = regs.alpha_norm * alpha.mean()
            if regs.alpha_tv:
                terms["alpha_tv"] = regs.alpha_tv * total_variation(alpha)
            if regs.diversity:
                terms["diversity"] = regs.diversity * template_diversity(weights)
            total = sum(terms.values())
        self.g_optimizer.zero_grad(set_to_none=True)
        self.g_scaler.scale(total).backward()
        self.g_scaler.step(self.g_optimizer)
        self.g_scaler.update()
        return {"g": float(total.detach()), **{name: float(value.detach()) for name, value in terms.items()}}

    def _autocast(self):
        precision = self.config.precision
        if precision is Precision.FP32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # --- checkpoints ---------------------------------------------------------------------------

    def spec(self) -> ModelSpec:
        return spec_of(self.generator, [s.shape[:2] for s in self.data.styles])

    def tensors(self) -> dict[str, torch.Tensor]:
        out = dict(generator_tensors(self.generator))
        out["content_image"] = torch.from_numpy(self.data.contents[0])
        out.update({f"data.content.{i}": torch.from_numpy(c) for i, c in enumerate(self.data.contents) if i})
        out.update({f"data.style.{i}": torch.from_numpy(s) for i, s in enumerate(self.data.styles)})
        out.update({f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()})
        out.update({f"content_map.{k}": v for k, v in self.content_map.state_dict().items()})
        for name, optimizer in (("generator", self.g_optimizer), ("discriminator", self.d_optimizer)):
            for index, moments in optimizer.state_dict()["state"].items():
                out.update({f"optimizer.{name}.{index}.{k}": v for k, v in moments.items()})
        out["rng.sampler"] = self.rng.get_state()
        out["rng.torch"] = torch.get_rng_state()
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            **self.spec().to_json(),
            "step": self.step,
            "training": to_dict(self.config),
            "provenance": {**self.data.provenance, "steps": self.step},
            "grad_scalers": {"generator": self.g_scaler.state_dict(), "discriminator": self.d_scaler.state_dict()},
        }

    def save(self, path: pathlib.Path) -> None:
        try:
            save(path, self.tensors(), self.metadata())
        except OSError as err:
            reason = err.strerror or str(err)
            raise UserError(f"{path}: cannot write checkpoint ({reason}); the previous checkpoint is intact") from None

    @classmethod
    def resume(cls, path: pathlib.Path, *, device: torch.device, steps: int | None = None, **overrides: Any) -> Trainer:
        """The training state of a checkpoint; ``steps`` and run options (``overrides``) may change."""
        tensors, header = load(path)
        try:
            config = from_dict(TrainConfig, header["training"])
            config = dataclasses.replace(config, **({"steps": steps} if steps else {}), **overrides)
            spec = ModelSpec.from_json(header)
            generator = empty_generator(spec)
            generator.load_state_dict(_prefixed(tensors, "generator."), strict=True)
            data = TrainingData(
                contents=(tensors["content_image"].numpy(), *_numbered(tensors, "data.content.", start=1)),
                styles=tuple(_numbered(tensors, "data.style.", start=0)),
                provenance={k: v for k, v in header["provenance"].items() if k != "steps"},
            )
            content_map_state = _prefixed(tensors, "content_map.")
            vgg = {k[len("vgg.") :]: v for k, v in content_map_state.items() if k.startswith("vgg.")}
            trainer = cls(
                config=config,
                generator=generator,
                data=data,
                device=device,
                vgg_state=vgg if config.losses.correspondence is CorrespondenceMap.VGG else None,
            )
            trainer.discriminator.load_state_dict(_prefixed(tensors, "discriminator."), strict=True)
            trainer.content_map.load_state_dict(content_map_state, strict=True)
            for name, optimizer in (("generator", trainer.g_optimizer), ("discriminator", trainer.d_optimizer)):
                _load_optimizer(optimizer, _prefixed(tensors, f"optimizer.{name}."))
            trainer.g_scaler.load_state_dict(header["grad_scalers"]["generator"])
            trainer.d_scaler.load_state_dict(header["grad_scalers"]["discriminator"])
            trainer.rng.set_state(tensors["rng.sampler"])
            torch.set_rng_state(tensors["rng.torch"])
            trainer.step = int(header["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: not a resumable training checkpoint ({err})") from None
        return trainer


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _numbered(tensors: dict[str, torch.Tensor], prefix: str, *, start: int) -> list[np.ndarray]:
    out, i = [], start
    while f"{prefix}{i}" in tensors:
        out.append(tensors[f"{prefix}{i}"].numpy())
        i += 1
    return out


def _load_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    """Adam moments from ``<param index>.<name>`` tensors; hyperparameters come from the config."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
