"""The patch discriminator D: a fully convolutional DCGAN critic scoring every receptive field.

    x (B, 3, P, P) -> [conv s2, (BN), LeakyReLU] x depth -> conv -> logits (B, 1, P/2^depth, P/2^depth)
"""

from __future__ import annotations

from torch import nn

from famos.training.config import DiscriminatorConfig


class PatchDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig, *, batch_norm: bool):
        # WGAN-GP penalizes per-sample input gradients, which BatchNorm couples across the batch;
        # the caller turns BatchNorm off for it.
        super().__init__()
        k, layers, channels = config.kernel, [], 3
        for level in range(config.depth):
            out = config.width * 2**level
            layers.append(nn.Conv2d(channels, out, k, stride=2, padding=k // 2))
            if batch_norm and level > 0:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2))
            channels = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, 1, k, padding=k // 2)

    def forward(self, image):
        return self.head(self.body(image))  # (B, 1, h / 2^depth, w / 2^depth)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialization (normal, std 0.02) the paper's models train from."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
