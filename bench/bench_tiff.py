"""TIFF encode throughput by compression: MB/s of uncompressed RGB fed to the streaming writer and
the size ratio of the file it produced, on a synthetic but image-like canvas (smooth colour waves
plus grain; pure noise would make every codec look equally useless).

    python bench/bench_tiff.py --megapixels 64

Throughputs are comparable within one run only (same machine, same disk).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Iterator

# runnable as a plain script from a checkout, without installing the package
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    megapixels: float = 64.0
    tile: int = 256
    workers: int = 2
    quality: int = 90
    strip_rows: int = 512
    out_dir: pathlib.Path | None = None  # a temporary folder when None


@dataclasses.dataclass(frozen=True)
class BenchRow:
    compression: str
    seconds: float
    raw_bytes: int
    file_bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.raw_bytes / 1e6 / self.seconds

    @property
    def ratio(self) -> float:
        return self.file_bytes / self.raw_bytes


def image_like_band(*, rows: int, width: int, seed: int = 0):
    """A band of smooth colour waves with mild grain; strips are cut from it so that the
    benchmark measures encoding, not synthesis."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(rows, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    channels = []
    for _ in range(3):
        fx, fy, fxy = rng.uniform(0.002, 0.03, size=3)
        phase = rng.uniform(0, 6.3, size=3)
        wave = (
            60 * np.sin(fx * x + phase[0])
            + 40 * np.cos(fy * y + phase[1])
            + 20 * np.sin(fxy * (x + 0.7 * y) + phase[2])
        )
        channels.append(128 + wave + rng.normal(0, 4, size=(rows, width)).astype(np.float32))
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def strips_from(band, *, height: int, strip_rows: int) -> Iterator:
    """Cycle through the band (rolled per strip, so tiles are not exact repeats)."""
    import numpy as np

    top = 0
    while top < height:
        rows = min(strip_rows, height - top)
        start = top % (band.shape[0] - rows + 1)
        yield np.roll(band[start : start + rows], top // strip_rows * 37, axis=1)
        top += rows


def run(config: BenchConfig) -> list[BenchRow]:
    from famos.tiff_options import Compression, TiffOptions
    from famos.tiff_writer import write_tiled_tiff

    side = max(16, round((config.megapixels * 1e6) ** 0.5))
    height = width = side
    band = image_like_band(rows=min(height, 2048), width=width)
    rows = []
    with tempfile.TemporaryDirectory(dir=config.out_dir) as folder:
        # one small write first, so codec imports and the ICC profile do not bill the first row
        warm = band[: min(64, side)]
        write_tiled_tiff(
            pathlib.Path(folder) / "warmup.tif", iter([warm]), height=warm.shape[0], width=width
        )
        for compression in Compression:
            options = TiffOptions(
                tile=config.tile,
                compression=compression,
                quality=config.quality,
                encode_workers=config.workers,
            )
            path = pathlib.Path(folder) / f"bench_{compression.value}.tif"
            start = time.perf_counter()
            report = write_tiled_tiff(
                path,
                strips_from(band, height=height, strip_rows=config.strip_rows),
                height=height,
                width=width,
                options=options,
            )
            seconds = time.perf_counter() - start
            rows.append(
                BenchRow(compression.value, seconds, height * width * 3, report.bytes_written)
            )
            path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=64.0)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--strip-rows", type=int, default=512)
    parser.add_argument("--out-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    config = BenchConfig(
        megapixels=args.megapixels,
        tile=args.tile,
        workers=args.workers,
        quality=args.quality,
        strip_rows=args.strip_rows,
        out_dir=args.out_dir,
    )
    results = run(config)
    side = max(16, round((config.megapixels * 1e6) ** 0.5))
    print(
        f"TIFF encode, {side}x{side} RGB ({side * side / 1e6:.1f} MP), tile {config.tile},"
        f" workers {config.workers}, {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} CPUs, {datetime.date.today().isoformat()}"
    )
    print()
    print("| compression | MB/s (raw in) | size ratio | seconds |")
    print("|---|---:|---:|---:|")
    for row in results:
        print(f"| {row.compression} | {row.mb_per_s:.0f} | {row.ratio:.3f} | {row.seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
