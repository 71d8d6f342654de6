"""Tile encoding throughput: MB/s of raw RGB per encode-worker count, codec and level, with the
compression ratio, through ``famos.tiles.TileCodec`` (what every render writes with). A GPU makes
about 3 GB of raw pixels per gigapixel in seconds; this says how many cores, and which deflate
level, keep up with it.

    python bench/bench_encode.py --megapixels 32 --workers 1,2,16

The pixels are a famos mosaic at its native resolution (``--image``, default the README's quick
start mosaic), repeated across a band 8192 px wide and cut into tile rows (so the codecs see real
texture, not an upscaled blur); nothing touches the disk. Compare rows of one run only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# (label, TiffOptions fields): deflate at the levels worth choosing between, zstd, and the rest
CODECS = [
    ("deflate 1", {"compression": "deflate", "level": 1}),
    ("deflate 3", {"compression": "deflate", "level": 3}),
    ("deflate 6", {"compression": "deflate", "level": 6}),
    ("deflate 9", {"compression": "deflate", "level": 9}),
    ("zstd 1", {"compression": "zstd", "level": 1}),
    ("zstd 3", {"compression": "zstd", "level": 3}),
    ("zstd 9", {"compression": "zstd", "level": 9}),
    ("lzw", {"compression": "lzw"}),
    ("jpeg 90", {"compression": "jpeg"}),
    ("none", {"compression": "none"}),
]


MOSAIC = pathlib.Path(__file__).resolve().parents[1] / "examples" / "readme" / "quickstart.jpg"


def mosaic_band(image: pathlib.Path, *, rows: int, width: int):
    import numpy as np
    from PIL import Image

    picture = np.asarray(Image.open(image).convert("RGB"))
    h, w = picture.shape[:2]
    return np.tile(picture, (-(-rows // h), -(-width // w), 1))[:rows, :width]


def measure(*, megapixels: float, workers: list[int], codecs: list[str] | None = None, tile: int = 256,
            image: pathlib.Path = MOSAIC) -> list[dict]:
    """One row per (codec, workers): MB/s of raw pixels in and the compressed share."""
    import numpy as np

    from famos.tiff_options import Compression, TiffOptions
    from famos.tiff_writer import tile_format
    from famos.tiles import TileCodec

    width = 8192
    band = mosaic_band(image, rows=tile * 4, width=width)
    rows_total = max(tile, int(megapixels * 1e6 / width) // tile * tile)
    out = []
    for label, fields in CODECS:
        if codecs and label.split()[0] not in codecs:
            continue
        options = TiffOptions(tile=tile, **{**fields, "compression": Compression(fields["compression"])})
        for count in workers:
            with TileCodec(tile_format(options), encode_workers=count) as codec:
                codec.encode_rows(band[:tile], width=width)  # warm the pool and the codec
                raw = packed = 0
                start = time.perf_counter()
                for top in range(0, rows_total, tile):
                    rows = np.roll(band[top % len(band) : top % len(band) + tile], top // tile * 37, axis=1)
                    packed += sum(map(len, codec.encode_rows(rows, width=width)))
                    raw += rows.nbytes
                seconds = time.perf_counter() - start
            out.append({"codec": label, "workers": count, "mb_per_s": raw / seconds / 1e6, "ratio": packed / raw})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| codec | workers | MB/s raw | per worker | size / raw |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['codec']} | {r['workers']} | {r['mb_per_s']:.0f} | {r['mb_per_s'] / r['workers']:.0f} | "
                     f"{r['ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=32.0, help="encoded per row of the table")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="comma-separated encode worker counts")
    parser.add_argument("--image", type=pathlib.Path, default=MOSAIC, help="the pixels to encode (an RGB picture)")
    parser.add_argument("--codecs", help="comma-separated codec names (deflate,zstd,lzw,jpeg,none); default all")
    args = parser.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",")})
    rows = measure(megapixels=args.megapixels, workers=workers, codecs=args.codecs.split(",") if args.codecs else None, image=args.image)
    print(f"{platform.node()}, {os.cpu_count()} cores, {datetime.date.today()}: "
          f"python bench/bench_encode.py --megapixels {args.megapixels:g} --workers {args.workers}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
