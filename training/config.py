"""Training configuration (frozen dataclasses, Enums for modes).

``TrainConfig`` travels inside every checkpoint as JSON (famos.config.to_dict), so a run resumes
from the file alone. Canvas sizes (pixels, scale, print size) parse with famos.units, the grammar
`famos render`, the batch and the server share.
"""

from __future__ import annotations

import dataclasses
import enum

from famos.config import MAX_DEPTH, MAX_KERNEL, MAX_SEED, MAX_WIDTH, Precision, oversized_convolution
from famos.errors import UserError


class CropMode(enum.Enum):
    SAME = "same"  # content and psi/templates from the same window: best mosaic of this canvas
    INDEPENDENT = "independent"  # content from elsewhere: generalizes to new content images


class AdversarialLoss(enum.Enum):
    DCGAN = "dcgan"  # binary cross-entropy on logits
    LSGAN = "lsgan"  # least squares
    WGAN_GP = "wgan-gp"  # Wasserstein critic with gradient penalty


class CorrespondenceMap(enum.Enum):
    """phi in the content loss ||phi(I_c) - phi(I)||: what of the content must survive."""

    BLUR = "blur"  # Gaussian blur (reflection padding), then grey
    DOWN4 = "down4"  # average-pool x4, then grey
    DOWN8 = "down8"
    DOWN16 = "down16"
    LEARNED = "learned"  # blur of phi_rec(I): a learned 1x1 network may recolour the output
    VGG = "vgg"  # VGG-19 features up to relu3_1, weights from a local file only


class EntropySchedule(enum.Enum):
    CONSTANT = "constant"
    # Weight grows linearly from 0: templates mix softly first (good gradients), then the
    # entropy term forces crisp per-pixel choices.
    RAMP = "ramp"


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    depth: int = 5  # stride-2 convolutions; receptive field grows with it
    width: int = 64  # channels of the first layer, doubling per layer
    kernel: int = 5

    def __post_init__(self) -> None:
        # The generator's bounds, for the same reason (famos.config); how deep D may go for a given
        # patch is TrainConfig's check.
        if not 1 <= self.depth <= MAX_DEPTH:
            raise UserError(f"--d-depth {self.depth} must be from 1 to {MAX_DEPTH}")
        if not 1 <= self.width <= MAX_WIDTH:
            raise UserError(f"--d-width {self.width} must be from 1 to {MAX_WIDTH}")
        if not (1 <= self.kernel <= MAX_KERNEL and self.kernel % 2 == 1):
            raise UserError(f"--d-kernel {self.kernel} must be odd, from 1 to {MAX_KERNEL}")
        oversized = oversized_convolution(kernel=self.kernel, channels=self.width * 2 ** (self.depth - 1))
        if oversized:
            raise UserError(f"--d-width {self.width} {oversized}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    adversarial: AdversarialLoss = AdversarialLoss.DCGAN
    d_steps: int = 1  # discriminator updates per generator update
    gradient_penalty: float = 10.0  # WGAN-GP only
    content_weight: float = 1.0  # lambda: content term on the final image I
    copy_content_weight: float = 0.0  # content term on the copied image I_M alone
    # the seed's fAdvM: D also sees the copied image I_M as a fake, and G is scored on it with this
    # weight, so that the mosaic from memory alone must look like the style too
    copy_adversarial_weight: float = 0.0
    correspondence: CorrespondenceMap = CorrespondenceMap.BLUR
    blur_sigma: float = 3.0  # pixels; for blur and learned maps
    vgg_weights: str | None = None  # local file for the vgg map (never downloaded)


@dataclasses.dataclass(frozen=True)
class RegularizerConfig:
    entropy: float = 0.0  # per-pixel entropy of the mixing weights A
    entropy_schedule: EntropySchedule = EntropySchedule.CONSTANT
    entropy_ramp_steps: int = 1000  # steps to full weight with the ramp schedule
    mix_tv: float = 0.0  # total variation of A
    alpha_norm: float = 0.0  # mean of alpha: prefer copying over painting
    alpha_tv: float = 0.0  # total variation of alpha
    diversity: float = 0.0  # log N - entropy of the mean template usage: use all templates


MAX_BATCH = 1024
MAX_PATCH = 4096
MAX_STEP_PIXELS = 2**24


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000  # total generator updates of the run
    patch: int = 160  # P: training windows are P x P (a multiple of the alignment)
    batch: int = 8
    crop: CropMode = CropMode.SAME
    mirror_style: bool = False  # random flips of the real style patches
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    preview_every: int = 500
    preview_max_side: int = 1024  # the canvas preview is downscaled to this longest side
    precision: Precision = Precision.FP32
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    losses: LossConfig = LossConfig()
    regularizers: RegularizerConfig = RegularizerConfig()

    def __post_init__(self) -> None:
        for name in ("steps", "patch", "batch", "checkpoint_every", "preview_every", "preview_max_side"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)} must be positive")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed {self.seed} must be from 0 to 2**64 - 1")
        # One step's windows through G, D and the losses: the paper's batches of 8-16 patches of
        # 128-256 px are under a million pixels; 2^24 (64 patches of 512 px) leaves room for more.
        if self.batch > MAX_BATCH or self.patch > MAX_PATCH or self.batch * self.patch**2 > MAX_STEP_PIXELS:
            raise UserError(f"--batch {self.batch} x --patch {self.patch}: at most {MAX_BATCH} patches of at most "
                            f"{MAX_PATCH} px, and {MAX_STEP_PIXELS:,} pixels a step in all")
        # Past this, D's stride-2 layers only convolve padding: the patch ends before its depth does.
        if 2**self.discriminator.depth > self.patch:
            raise UserError(f"--d-depth {self.discriminator.depth} needs a --patch of at least 2^d-depth = "
                            f"{2**self.discriminator.depth} px; the patch is {self.patch}")
        if not self.losses.copy_adversarial_weight >= 0:
            raise UserError(f"--copy-adversarial-weight {self.losses.copy_adversarial_weight} must be 0 or more")
        if self.losses.d_steps < 1:
            raise UserError(f"--d-steps {self.losses.d_steps} must be positive")
        if self.regularizers.entropy_ramp_steps < 1:
            raise UserError(f"--entropy-ramp-steps {self.regularizers.entropy_ramp_steps} must be positive")
