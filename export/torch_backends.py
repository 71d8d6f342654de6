"""The bundle's PyTorch backends: TorchScript (model.ts) and eager (generator.safetensors).

Imported only when ``Bundle.runner`` is asked for one of them, so the ONNX path stays torch-free.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Optional

import numpy as np
import torch

from export.bundle import BackendUnavailable
from famos.rendering import WindowRunner


class TorchScriptRunner:
    """Windows through the TorchScript module; its outputs after the image are diagnostics."""

    def __init__(self, path: pathlib.Path, *, device: str, fp16: bool, takes_noise: bool):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device!r}: this torch has no CUDA device")
        if fp16:
            raise BackendUnavailable("fp16: use the onnx or torch backend (model.ts is float32)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, not gone
            self.module = torch.jit.load(str(path), map_location=device).eval()
        self.device = device
        self.takes_noise = takes_noise

    def __call__(self, content: np.ndarray, origin: np.ndarray, noise: Optional[np.ndarray]) -> np.ndarray:
        args = [torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)), torch.from_numpy(origin)]
        if self.takes_noise:
            if noise is None:
                raise ValueError("this model has noise channels: pass its noise window")
            args.append(torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32)))
        with torch.inference_mode():
            out = self.module(*[a.to(self.device) for a in args])
        image = out[0] if isinstance(out, (tuple, list)) else out
        return image.float().cpu().numpy()


def eager_runner(path: pathlib.Path, *, device: str, fp16: bool) -> WindowRunner:
    """The reference backend: the generator rebuilt from safetensors + JSON (weights-only)."""
    from famos.checkpoint import load_generator
    from famos.eager import EagerRunner

    model, _, _ = load_generator(path)
    if fp16:
        from export.graph import HalfPrecisionUNet

        model.unet = HalfPrecisionUNet(model.unet)
    return EagerRunner(model, device=device)
