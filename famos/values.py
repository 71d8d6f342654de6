"""Value types that the render server and its clients share: one definition each, used on both
sides of the gRPC seam (``famos.render_server.convert`` and ``famos.clients.convert`` map them to messages).

The region of a render is ``famos.planning.Rect``; TIFF options are ``famos.tiff_options.TiffOptions``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np

from famos.planning import Rect
from famos.tiff_options import ResolutionUnit


@dataclasses.dataclass(frozen=True)
class Resolution:
    """A TIFF resolution: pixels per inch, and the unit its tags are written in."""

    dpi: float
    unit: ResolutionUnit


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a render is: what the pipeline reports, the server streams and clients display."""

    chunks_done: int
    chunks_total: int
    pixels_done: int  # delivered pixels
    pixels_total: int
    seconds: float

    @property
    def fraction(self) -> float:
        return self.pixels_done / self.pixels_total if self.pixels_total else 1.0

    @property
    def megapixels_per_second(self) -> float:
        return self.pixels_done / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float:
        rate = self.pixels_done / self.seconds if self.seconds > 0 else 0.0
        return (self.pixels_total - self.pixels_done) / rate if rate > 0 else float("inf")


@dataclasses.dataclass(frozen=True)
class Started:
    """The first event of a streamed render: what is coming, and the TIFF description to write."""

    region: Rect
    chunks_total: int
    strips_total: int
    description: dict[str, Any]
    # the model's trained print resolution: what the file is tagged with when no DPI is asked for
    trained: Resolution | None = None


@dataclasses.dataclass(frozen=True)
class Piece:
    """Pixels at (y, x) relative to the region: uint8 (height, width, 3)."""

    y: int
    x: int
    pixels: np.ndarray


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A served model as ListModels/GetModel describe it."""

    name: str
    canvas_height: int
    canvas_width: int
    halo: tuple[int, int, int, int]  # top, left, bottom, right
    n_templates: int
    alignment: int
    backend: str
    device: str
    bundle_sha256: str
    training_steps: int
    noise_channels: int = 0  # 0: the seed changes nothing (servers before this field also say 0)


def unseeded(seed: int, noise_channels: int) -> str | None:
    """What to tell someone who asks for a seed of a model that takes no noise (None: nothing): the
    quick start's model is one, and two prints of it with other seeds are the same pixels."""
    if seed == 0 or noise_channels:
        return None
    return (f"the model has no noise channels, so seed {seed} renders the same pixels as any other seed "
            f"(train with --noise-local/--noise-global/--noise-periodic for seeds that vary)")


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclasses.dataclass(frozen=True)
class Job:
    """A render job in the server's store, as the store records it and clients see it."""

    id: str
    state: JobState
    model: str
    output_name: str
    strips_done: int
    strips_total: int
    strips_rendered: int  # by this server (a resumed job renders fewer than strips_total)
    pixels_total: int
    error: str
    size_bytes: int
    sha256: str
    created_at: float
    updated_at: float
    attempts: int
