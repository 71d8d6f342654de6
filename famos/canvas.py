"""Canvas inputs computed for any window, as pure functions of global position and seeds (numpy).

Nothing here is ever allocated at full-canvas size: a window of content is resampled from the
content image by global coordinates, and noise is a counter-based hash of (seed, channel, cell),
so two chunks that overlap compute identical values where they overlap. This module imports no
torch: the ONNX render path uses it as is.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from famos.config import CanvasConfig, Fold, GeneratorConfig, NoiseConfig
from famos.errors import OverLimit, UserError
from famos.planning import Rect, noise_level


class ImageError(UserError, ValueError):
    """An input image is missing, unreadable or unusable; the message names the file."""


def load_rgb(path: str | pathlib.Path) -> np.ndarray:
    """Any image (RGB, greyscale, palette, RGBA, 16-bit) as uint8 RGB, shape (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    path = pathlib.Path(path)
    try:
        with Image.open(path) as image:
            return image_to_rgb(image)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to load ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # ValueError: a text/ICC chunk bomb
        raise ImageError(f"{path}: not a readable image ({err})") from None


def encoded_image(path: str | pathlib.Path) -> bytes:
    """An image file as the bytes a render request carries: PNG and JPEG files as they are (decoded
    by ``decode_rgb`` exactly as ``load_rgb`` decodes the file), other formats converted to PNG here."""
    import io

    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot be read ({err.strerror})") from None
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return data
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(load_rgb(path)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_size(data: bytes, *, name: str, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) of PNG or JPEG bytes from their header, nothing decoded: what admitting a
    request needs before it may spend the memory. Refused as ``decode_rgb`` would refuse it."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise OverLimit(f"{name}: too large to load: over the limit of {max_pixels or 2 * Image.MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: not a readable PNG or JPEG image ({err})") from None
    if max_pixels is not None and width * height > max_pixels:
        raise OverLimit(f"{name}: {width}x{height} pixels, too large to load: over the limit of {max_pixels}")
    return width, height


def decode_rgb(data: bytes, *, name: str, max_pixels: int | None = None) -> np.ndarray:
    """PNG or JPEG bytes as uint8 RGB (H, W, 3), decoded as ``load_rgb`` decodes a file, so that a
    streamed render equals a local one. ``max_pixels`` is checked on the header first
    (``image_size``: decompression bombs); ``name`` (a file, a request field) starts every message.
    Pillow only; never pickle."""
    import io

    from PIL import Image

    image_size(data, name=name, max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            return image_to_rgb(image)
    except (OSError, SyntaxError, ValueError) as err:  # a body that fails after a readable header
        raise ImageError(f"{name}: not a readable PNG or JPEG image ({err})") from None


def image_to_rgb(image) -> np.ndarray:
    """An opened Pillow image, decoded, as uint8 RGB (H, W, 3): the one conversion every input uses
    (files here, request bytes in the server), so a streamed render equals a local one."""
    image.load()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits ourselves; Pillow's convert("RGB") clips instead.
        grey = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(np.round(grey * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (H, W, 3) in [-1, 1], the generator's value range. In place
    after the one conversion: a gigapixel-class content image costs one float copy, not three
    (the same float32 operations, so the same values)."""
    unit = image.astype(np.float32)
    unit /= 127.5
    unit -= 1.0
    return unit


# [-1, 1] onto the integers of 8 or 16 bits: (scale, top), value -> clip(rint((v + 1) * scale), 0, top).
# One table for the numpy conversion here and the torch one on a device (famos.torch_runners.quantize).
PIXEL_SCALES = {8: (127.5, 255), 16: (32767.5, 65535)}


def to_uint8(values: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8, rounding to nearest."""
    return to_pixels(values, bits=8)


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """8- or 16-bit samples as 8-bit (for a screen: previews, the viewer)."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_pixels(values: np.ndarray, *, bits: int = 8) -> np.ndarray:
    """float in [-1, 1] -> uint8 (bits 8) or uint16 (bits 16, for prints graded further), rounding to nearest."""
    scale, top = PIXEL_SCALES[bits]
    return np.clip(np.rint((values + 1.0) * scale), 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def content_window(
    content: np.ndarray, *, canvas_height: int, canvas_width: int, window: Rect
) -> np.ndarray:
    """The content image resampled onto the canvas, only inside ``window``: float32 (3, h, w).

    ``content`` is float32 (Hc, Wc, 3). Bilinear interpolation with pixel centres mapped
    ``(y + 0.5) * Hc / H - 0.5``, clamped at the border; rows beyond the delivered canvas (the
    alignment padding) repeat the last row. Each output pixel depends only on its own global
    coordinates, so windows agree wherever they overlap.
    """
    src_h, src_w = content.shape[:2]
    row_lo, row_hi, row_t = _bilinear_axis(window.y, window.height, canvas_height, src_h)
    col_lo, col_hi, col_t = _bilinear_axis(window.x, window.width, canvas_width, src_w)
    # Rows first, on the small source width (the window's rows only), then into the output's planar
    # layout and the columns in place: 2.5-4x faster than gathering (h, w, 3) and transposing, with the
    # same float32 operations in the same order (the same bits). A GPU renders faster than one
    # thread prepares inputs.
    rows = content[row_lo] * (1 - row_t)[:, None, None] + content[row_hi] * row_t[:, None, None]  # (h, Wc, 3)
    rows = np.ascontiguousarray(rows.transpose(2, 0, 1), dtype=np.float32)  # (3, h, Wc): still small
    out = np.take(rows, col_lo, axis=2)
    out *= 1 - col_t
    right = np.take(rows, col_hi, axis=2)
    right *= col_t
    out += right
    return out


def _bilinear_axis(start: int, length: int, canvas: int, source: int):
    coords = np.arange(start, start + length, dtype=np.float64)
    src = np.clip((coords + 0.5) * (source / canvas) - 0.5, 0.0, source - 1.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, source - 1)
    return lo, hi, (src - lo).astype(np.float32)


# --- noise -------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM_LOCAL, _STREAM_GLOBAL, _STREAM_PERIODIC = 1, 2, 3


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijective avalanche on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, stream: int, channel, cell_y, cell_x) -> np.ndarray:
    """Counter-based uniform values in [-1, 1) from integer keys (broadcast together)."""
    with np.errstate(over="ignore"):
        key = _mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _GOLDEN * np.uint64(stream))
        key = _mix64(key ^ np.asarray(channel, dtype=np.uint64))
        key = _mix64(key ^ (np.asarray(cell_y, dtype=np.uint64) * _GOLDEN))
        key = _mix64(key ^ np.asarray(cell_x, dtype=np.uint64))
    return ((key >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0).astype(np.float32)


def noise_window(
    config: NoiseConfig, *, seed: int, cell_y: int, cell_x: int, height: int, width: int
) -> np.ndarray:
    """Noise for cells [cell_y, cell_y + height) x [cell_x, cell_x + width): float32 (C, h, w).

    Channel order: global, local, periodic. Cells are bottleneck cells (2^depth pixels) or pixels,
    by ``config.placement``; the caller passes coordinates at that level.
    """
    ys = np.arange(cell_y, cell_y + height, dtype=np.int64)[:, None]
    xs = np.arange(cell_x, cell_x + width, dtype=np.int64)[None, :]
    planes = []
    for channel in range(config.n_global):
        value = hash_uniform(seed, _STREAM_GLOBAL, channel, 0, 0)
        planes.append(np.full((height, width), value, dtype=np.float32))
    for channel in range(config.n_local):
        planes.append(hash_uniform(seed, _STREAM_LOCAL, channel, ys, xs))
    for channel in range(config.n_periodic):
        angle, wavelength, phase = (
            float(hash_uniform(seed, _STREAM_PERIODIC, channel, k, 0)) for k in range(3)
        )
        angle = math.pi * (angle + 1.0)
        wavelength = 5.0 + 3.0 * wavelength  # 2..8 cells
        phase = math.pi * phase
        wave = (ys * math.cos(angle) + xs * math.sin(angle)) * (2 * math.pi / wavelength) + phase
        planes.append(np.sin(wave).astype(np.float32))
    if not planes:
        return np.zeros((0, height, width), dtype=np.float32)
    return np.stack(planes)


def window_noise(config: GeneratorConfig, *, seed: int, window: Rect) -> np.ndarray | None:
    """The noise a generator of ``config`` takes for ``window`` (pixels, on the alignment grid):
    float32 (C, h', w') over the cells of its noise level, or None for a model without noise.

    Rendering (famos.chunk_loop.WindowInputs) and training (training.data) both call this, so G
    trains on exactly the noise it renders with.
    """
    if not config.noise.channels:
        return None
    cell = 2 ** noise_level(config)
    return noise_window(
        config.noise,
        seed=seed,
        cell_y=window.y // cell,
        cell_x=window.x // cell,
        height=window.height // cell,
        width=window.width // cell,
    )


# --- memory templates ----------------------------------------------------------------------------


def template_offsets(canvas: CanvasConfig, style_sizes: list[tuple[int, int]], n_templates: int) -> np.ndarray:
    """Per-template offsets eta_n (style pixels), int64 (N, 2), seeded by the canvas.

    Template n tiles style image n mod K; its offset is uniform over that image's fold period, so
    the N templates show the styles at N independent shifts.
    """
    rng = np.random.default_rng(canvas.template_seed)
    offsets = np.zeros((n_templates, 2), dtype=np.int64)
    for n in range(n_templates):
        height, width = style_sizes[n % len(style_sizes)]
        period = 2 if canvas.fold is Fold.MIRROR else 1
        offsets[n] = (rng.integers(0, period * height), rng.integers(0, period * width))
    return offsets
