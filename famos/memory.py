"""Host memory: what a render window holds by the estimate, what this machine has free, and the
CPU's default chunk that follows from both. The server's admission (``famos.request.render_memory``,
its ``--max-memory`` budget) and the renderer's default chunk share these figures."""

from __future__ import annotations

import os

from famos.config import GeneratorConfig

# Host bytes per window pixel and U-Net channel: float32 activations of the levels alive at once,
# the decoder's concatenated skips and the runtime's arena (measured peak RSS of onnxruntime
# windows, widths 8-32, depths 3-4: 17-23; the paper's width 80 on a 2192 px window: onnxruntime
# 12.6 GiB, openvino fp32 11.5 GiB, bf16 9.3 GiB, i.e. up to 35), rounded up; plus the inputs and
# output per pixel.
WINDOW_BYTES_PER_PIXEL_CHANNEL = 36
WINDOW_BYTES_PER_PIXEL = 64
# The CPU's default chunk: the largest whose window fits in half the available memory, at most
# CPU_MAX_CHUNK (`bench/bench_peak.py --sweep`, openvino bf16 on the paper's U-Net, 2026-12-06:
# 0.58, 0.63, 0.85 and 0.73 delivered MP/s at chunks 512, 1024, 1536 and 2048), in steps of CPU_CHUNK_STEP so that a
# little more or less free memory does not change the plan (nor, on a backend that is not
# chunk-exact, the bytes).
CPU_MAX_CHUNK = 1536
CPU_CHUNK_STEP = 256
# What a chunk left out means, in every door's --help.
DEFAULT_CHUNK_HELP = (f"on the CPU the largest whose window fits in half the available memory, at most {CPU_MAX_CHUNK}; "
                      "with a torch backend on CUDA the largest whose window fits in half the free GPU memory; "
                      "else 2048")


def window_bytes_per_pixel(config: GeneratorConfig) -> int:
    """Host bytes one window pixel of ``config``'s U-Net holds at the runner's peak. A multi-scale
    U-Net also holds the N templates (3 float32 each) and their pooled copies (a third more)
    through its pass, where the others sample them after it (within the calibrated constants)."""
    templates = 16 * config.n_templates if config.multi_scale else 0
    return WINDOW_BYTES_PER_PIXEL_CHANNEL * config.width + WINDOW_BYTES_PER_PIXEL + templates


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def available_memory() -> int:
    """Memory a new allocation can take now without swapping (Linux's MemAvailable); elsewhere
    half the machine."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return machine_memory() // 2


def cpu_default_chunk(config: GeneratorConfig, margin: int, *, available: int | None = None) -> int:
    """The chunk side a CPU render takes when none is asked for: its window (chunk + ``margin``,
    the halos of both sides) within half the ``available`` memory, at most CPU_MAX_CHUNK, at
    least one step."""
    available = available_memory() if available is None else available
    side = int((available / 2 / window_bytes_per_pixel(config)) ** 0.5) - margin
    return max(CPU_CHUNK_STEP, min(CPU_MAX_CHUNK, side - side % CPU_CHUNK_STEP))
