"""The PyTorch runners: eager (generator.safetensors, the reference) and TorchScript (model.ts),
one ``TorchRunner`` for the CPU and CUDA alike.

Imported by ``famos.runners`` only when one of these backends is asked for, so the ONNX path
stays torch-free; training uses ``EagerRunner`` directly for previews and evaluation.

Besides the window contract (``famos.window``: float32 windows in and out, the reference), a
``TorchRunner`` renders chunks the device way (``stage`` then ``submit``), which the render
pipeline uses when a runner offers it:

    prepare thread   stage: the window's inputs into page-locked (pinned) host memory
    device thread    submit: non-blocking upload on a copy stream, the generator on the compute
                     stream, the halo cropped and the pixels quantized to 8/16 bits on the device,
                     a non-blocking download of just those bytes; returns at once
    consumer         ``PendingPixels.result()`` waits for that chunk's event only

so that preparing chunk i+2, uploading i+1, computing i, downloading i-1 and encoding earlier
strips overlap. On the CPU the same code runs with no streams, pins or events.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import time
import warnings
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch

from famos.bundle import GraphInputs
from famos.canvas import PIXEL_SCALES
from famos.checkpoint import load_generator
from famos.config import Precision
from famos.errors import BackendUnavailable
from famos.generator import FamosGenerator, cast_unets
from famos.planning import Rect
from famos.window import check_window

DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
# The widest full-resolution tensors of a window (the U-Net's last level, the N templates x 3) have
# about 128 channels: a window side past 4096 would pass 2^31 elements in one tensor, where some
# cuDNN kernels index with 32 bits. The measured default chunk stays under it.
MAX_WINDOW_SIDE = 4096


def set_threads(threads: int) -> None:
    """Torch's intra-op threads for this process (a process-wide setting: one runner per process)."""
    torch.set_num_threads(threads)


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    device: str = "cpu"
    precision: Precision = Precision.FP32
    # None: NHWC on every device. Tensor cores want it, and so does oneDNN on a CPU (bench/bench_peak.py,
    # the paper's U-Net: fp32 1.20x, bf16 1.31x the contiguous layout, chunk-exact either way)
    channels_last: bool | None = None
    autotune: bool = False  # cuDNN benchmarks algorithms per shape: faster, but not reproducible across processes


def torch_device(settings: DeviceSettings) -> torch.device:
    """``settings.device`` as a torch device; BackendUnavailable when this machine lacks it."""
    device = torch.device(settings.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"device {settings.device!r}: this torch has no CUDA device")
        if (device.index or 0) >= torch.cuda.device_count():
            raise BackendUnavailable(f"device {settings.device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if settings.precision is Precision.BF16 and not torch.cuda.is_bf16_supported():
            raise BackendUnavailable(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16")
    return device


def configure_math(settings: DeviceSettings) -> None:
    """The process-wide math settings of a render (not of training, which keeps its own).

    float32 means float32 on a GPU too (cuDNN and cuBLAS would otherwise use TF32, 10-bit
    mantissas, for float32 convolutions). Without ``autotune`` cuDNN picks deterministic algorithms
    by its heuristics, so the same window gives the same bytes in every process: a resumed job
    equals an uninterrupted one. With it, the fastest algorithm for each chunk shape is measured
    once, and a run may differ from another by a rounding step."""
    if torch.device(settings.device).type != "cuda":
        return
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = settings.autotune
    torch.backends.cudnn.deterministic = not settings.autotune


class PendingPixels:
    """One chunk's pixels on their way to the host; ``result`` waits for them."""

    def __init__(self, host: torch.Tensor, done: torch.cuda.Event | None = None, *,
                 started: torch.cuda.Event | None = None, runner: TorchRunner | None = None):
        self._host = host
        self._done = done
        self._started = started
        self._runner = runner

    def result(self) -> np.ndarray:
        if self._done is not None:
            self._done.synchronize()
            self._runner.busy_seconds += self._started.elapsed_time(self._done) / 1000
        pixels = self._host.numpy()  # shares the pinned block, released to torch's cache with it
        return pixels.astype(np.uint16) if pixels.dtype == np.int32 else pixels


# The window's inputs as a runner's callable takes them, positionally, numpy on the host.
Feed = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]], tuple]


class TorchRunner:
    """Windows through a torch callable on one device (see the module's docstring)."""

    def __init__(self, call: Callable[..., torch.Tensor], feed: Feed, *, device: torch.device, alignment: int):
        self.call = call  # tensors in the order ``feed`` gives them -> (B, 3, h, w) image
        self.feed = feed
        self.device = device
        self.alignment = alignment
        self.cuda = device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self.compute_stream = torch.cuda.Stream(device) if self.cuda else None
        self.busy_seconds = 0.0  # device time of the chunks submitted so far (CUDA events; wall time on the CPU)

    @torch.inference_mode()
    def __call__(
        self, content: np.ndarray, origin: np.ndarray, noise: Optional[np.ndarray], canvas: Optional[np.ndarray] = None
    ) -> np.ndarray:
        feeds = self.feed(content, origin, noise, canvas)
        tensors = [None if a is None else torch.from_numpy(a).to(self.device) for a in feeds]
        return self.call(*tensors).float().cpu().numpy()

    def stage(self, inputs: tuple) -> tuple:
        """A window's inputs (content, origin, noise, canvas) in pinned host memory, as ``call``
        takes them (called on the prepare threads: the copy into page-locked memory is host work,
        kept off the device thread)."""
        tensors = tuple(None if a is None else torch.from_numpy(a) for a in self.feed(*inputs))
        return tuple(t.pin_memory() if self.cuda and t is not None else t for t in tensors)

    @torch.inference_mode()
    def submit(self, staged: tuple, crop: Rect, bits: int) -> PendingPixels:
        """Starts one chunk: ``staged`` window inputs in, its ``crop`` of the output as (h, w, 3)
        pixels of ``bits`` bits out, when ``PendingPixels.result`` is called."""
        if not self.cuda:
            start = time.perf_counter()
            image = self.call(*staged)
            pixels = quantize(image[0, :, crop.y : crop.bottom, crop.x : crop.right], bits)
            self.busy_seconds += time.perf_counter() - start
            return PendingPixels(pixels)
        # after whatever the caller queued on its stream (a model moved or cast there, say)
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.copy_stream):
            on_device = [None if t is None else t.to(self.device, non_blocking=True) for t in staged]
        self.compute_stream.wait_stream(self.copy_stream)
        started = torch.cuda.Event(enable_timing=True)  # from here to ``done``: the device is busy with this chunk
        started.record(self.compute_stream)
        with torch.cuda.stream(self.compute_stream):
            for t in on_device:  # used on the compute stream: freed only after it is done with them
                if t is not None:
                    t.record_stream(self.compute_stream)
            image = self.call(*on_device)
            pixels = quantize(image[0, :, crop.y : crop.bottom, crop.x : crop.right], bits)
            host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            done = torch.cuda.Event(enable_timing=True)
            done.record(self.compute_stream)
        return PendingPixels(host, done, started=started, runner=self)

    def memory_per_pixel(self, probe: tuple) -> float:
        """Device bytes one window pixel takes at its peak, measured on the ``probe`` window's inputs."""
        height, width = probe[0].shape[-2:]
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.submit(self.stage(probe), Rect(0, 0, height, width), 8).result()
        torch.cuda.synchronize(self.device)
        return (torch.cuda.max_memory_allocated(self.device) - before) / (height * width)

    def suggest_chunk(self, probe: Callable[[Rect], tuple], *, margin: int, limit: int = 8192, share: float = 0.5) -> int | None:
        """The largest chunk whose window (chunk + ``margin``, the halos of both sides) fits in
        ``share`` of the free device memory, measured on a 512 px window that ``probe`` gives the
        inputs of (so it follows the architecture); None on the CPU, where the default stands."""
        if not self.cuda:
            return None
        side = 512 - 512 % self.alignment
        per_pixel = self.memory_per_pixel(probe(Rect(0, 0, side, side)))
        free, _ = torch.cuda.mem_get_info(self.device)
        side = min(int((share * free / per_pixel) ** 0.5), MAX_WINDOW_SIDE) - margin
        return max(self.alignment, min(limit, side - side % self.alignment))


def quantize(values: torch.Tensor, bits: int) -> torch.Tensor:
    """float (3, h, w) in [-1, 1] -> (h, w, 3) uint8 or uint16: ``famos.canvas.to_pixels`` on a
    device, the same float32 operations in the same order, so the same integers."""
    # 16 bits travel as int32 (cast to uint16 on the host): torch's uint16 is not on every device
    scale, top = PIXEL_SCALES[bits]
    ints = torch.clamp(torch.round((values.float() + 1.0) * scale), 0, top).to(torch.uint8 if bits == 8 else torch.int32)
    return ints.permute(1, 2, 0).contiguous()


def eager_runner(path: pathlib.Path, *, settings: DeviceSettings) -> EagerRunner:
    """The generator rebuilt from safetensors + JSON (weights-only), its U-Net cast to the precision."""
    model, _, _ = load_generator(path)
    return EagerRunner(model, settings=settings)


class EagerRunner(TorchRunner):
    """An eval-mode generator: the reference backend, in any precision and memory layout."""

    def __init__(self, model: FamosGenerator, *, settings: DeviceSettings = DeviceSettings()):
        device = torch_device(settings)
        channels_last = settings.channels_last if settings.channels_last is not None else True
        if settings.precision is not Precision.FP32 or channels_last:
            model = copy.deepcopy(model)  # the caller's model (a trainer's, say) keeps its U-Net
            cast_unets(model, DTYPES[settings.precision], channels_last=channels_last)
        self.model = model.eval().to(device)
        alignment = model.config.alignment

        def feed(content, origin, noise, canvas):
            check_window(content, origin, alignment)
            return tuple(None if a is None else np.ascontiguousarray(a) for a in (content, origin, noise, canvas))

        super().__init__(lambda *tensors: self.model(*tensors)[0], feed, device=device, alignment=alignment)


class TorchScriptRunner(TorchRunner):
    """Windows through the TorchScript module (float32); its outputs after the image are diagnostics."""

    def __init__(self, path: pathlib.Path, *, settings: DeviceSettings, inputs: GraphInputs):
        if settings.precision is not Precision.FP32:
            raise BackendUnavailable(f"--precision {settings.precision.value}: use the torch backend (model.ts is float32)")
        device = torch_device(settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, not gone
            self.module = torch.jit.load(str(path), map_location=device).eval()

        def call(*feeds):  # positional, in the graph's order
            out = self.module(*feeds)
            return out[0] if isinstance(out, (tuple, list)) else out

        super().__init__(call, lambda *window: tuple(inputs(*window).values()), device=device, alignment=inputs.alignment)
