"""The PyTorch runners: eager (generator.safetensors, the reference) and TorchScript (model.ts).

Imported by ``famos.runners`` only when one of these backends is asked for, so the ONNX path
stays torch-free; training uses ``EagerRunner`` directly for previews and evaluation.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Optional

import numpy as np
import torch

from famos.checkpoint import load_generator
from famos.bundle import GraphInputs
from famos.errors import BackendUnavailable
from famos.generator import FamosGenerator, HalfPrecisionUNet
from famos.window import check_window


def set_threads(threads: int) -> None:
    """Torch's intra-op threads for this process (a process-wide setting: one runner per process)."""
    torch.set_num_threads(threads)


def _torch_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device!r}: this torch has no CUDA device")
    return device


class EagerRunner:
    """Runs one window through an eval-mode generator: the reference backend."""

    def __init__(self, model: FamosGenerator, *, device: str = "cpu"):
        self.device = _torch_device(device)
        self.model = model.eval().to(self.device)
        self.alignment = model.config.alignment

    @torch.inference_mode()
    def __call__(
        self, content: np.ndarray, origin: np.ndarray, noise: Optional[np.ndarray], canvas: Optional[np.ndarray] = None
    ) -> np.ndarray:
        check_window(content, origin, self.alignment)
        to = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        size = None if canvas is None else to(np.ascontiguousarray(canvas, dtype=np.int64))
        image = self.model(to(content), to(origin), None if noise is None else to(noise), size)[0]
        return image.float().cpu().numpy()


def eager_runner(path: pathlib.Path, *, device: str, fp16: bool) -> EagerRunner:
    """The generator rebuilt from safetensors + JSON (weights-only), optionally with a float16 U-Net."""
    model, _, _ = load_generator(path)
    if fp16:
        model.unet = HalfPrecisionUNet(model.unet)
    return EagerRunner(model, device=device)


class TorchScriptRunner:
    """Windows through the TorchScript module; its outputs after the image are diagnostics."""

    def __init__(self, path: pathlib.Path, *, device: str, fp16: bool, inputs: GraphInputs):
        if fp16:
            raise BackendUnavailable("--fp16: use the onnx or torch backend (model.ts is float32)")
        self.device = _torch_device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, not gone
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.inputs = inputs

    def __call__(
        self, content: np.ndarray, origin: np.ndarray, noise: Optional[np.ndarray], canvas: Optional[np.ndarray] = None
    ) -> np.ndarray:
        feeds = self.inputs(content, origin, noise, canvas)  # positional, in the graph's order
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(a).to(self.device) for a in feeds.values()])
        image = out[0] if isinstance(out, (tuple, list)) else out
        return image.float().cpu().numpy()
