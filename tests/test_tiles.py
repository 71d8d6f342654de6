"""Tiles encoded away from the writer: the same bytes as tifffile's own writer, whatever the strips."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from famos.tiff_options import Compression, TiffOptionError, TiffOptions
from famos.tiff_writer import tile_format, write_encoded_tiff, write_tiled_tiff
from famos.tiles import EncodedStrip, TileCodec, encode_strip

CODECS = [Compression.NONE, Compression.DEFLATE, Compression.ZSTD, Compression.LZW, Compression.JPEG]


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 3 + y) % 256, (y * 2) % 256, (x ^ y) % 256], axis=-1)
    return (image + rng.integers(0, 8, image.shape)).clip(0, 255).astype(np.uint8)


def tile_bytes(path) -> list[bytes]:
    with tifffile.TiffFile(path) as tif, open(path, "rb") as fh:
        page = tif.pages[0]
        out = []
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            fh.seek(offset)
            out.append(fh.read(count))
        return out


@pytest.mark.parametrize("compression", CODECS)
def test_tiles_are_the_bytes_tifffile_writes(tmp_path, compression):
    image = smooth_image(96, 128)  # whole tiles: tifffile pads edge tiles with zeros, famos repeats the edge
    options = TiffOptions(tile=32, compression=compression, icc_profile=False)
    write_tiled_tiff(tmp_path / "famos.tif", [image], height=96, width=128, options=options)
    with TileCodec(tile_format(options)) as codec:
        page = {"compression": codec.format.compression, "predictor": codec.format.predictor}
    tifffile.imwrite(
        tmp_path / "tifffile.tif", image, tile=(32, 32), photometric="rgb", metadata=None,
        compressionargs=dict(codec.format.arguments[:1]) or None, **page,  # the level, where the codec has one
    )
    assert tile_bytes(tmp_path / "famos.tif") == tile_bytes(tmp_path / "tifffile.tif")


@pytest.mark.parametrize("compression", [Compression.DEFLATE, Compression.JPEG])
def test_strips_encoded_anywhere_write_the_same_file(tmp_path, compression):
    """Strip heights that cut tile rows anywhere (shorter than a tile, ending mid-row, odd), encoded
    apart and sent through the spool's byte format, write the file a single strip writes."""
    height, width = 203, 150
    image = smooth_image(height, width, seed=3)
    options = TiffOptions(tile=32, compression=compression, pyramid=True, dpi=300)
    write_tiled_tiff(tmp_path / "whole.tif", [image], height=height, width=width, options=options)

    cuts = [0, 7, 20, 64, 65, 131, 140, 192, 203]
    with TileCodec(tile_format(options), encode_workers=1) as codec:
        encoded = [
            EncodedStrip.from_bytes(encode_strip(image[a:b], top=a, height=height, codec=codec).to_bytes())
            for a, b in zip(cuts, cuts[1:])
        ]
    assert sum(strip.height for strip in encoded) == height
    assert any(len(s.head) for s in encoded) and any(len(s.tail) for s in encoded)
    write_encoded_tiff(tmp_path / "apart.tif", encoded, height=height, width=width, options=options)
    assert (tmp_path / "apart.tif").read_bytes() == (tmp_path / "whole.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "apart.tif") as tif:
        if compression is Compression.DEFLATE:
            assert np.array_equal(tif.pages[0].asarray(), image)
        assert [level.shape[:2] for level in tif.pages[0].pages] == [(102, 75), (51, 38), (26, 19)]


def test_out_of_order_strips_are_refused(tmp_path):
    image = smooth_image(64, 64)
    options = TiffOptions(tile=32)
    with TileCodec(tile_format(options), encode_workers=1) as codec:
        first = encode_strip(image[:32], top=0, height=64, codec=codec)
        second = encode_strip(image[32:], top=32, height=64, codec=codec)
    with pytest.raises(ValueError, match="row 32 arrived where row 0"):
        write_encoded_tiff(tmp_path / "x.tif", [second, first], height=64, width=64, options=options)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("compression", CODECS)
def test_decoded_tiles_are_what_a_tiff_reader_sees(tmp_path, compression):
    image = smooth_image(100, 150)
    options = TiffOptions(tile=32, compression=compression)
    write_tiled_tiff(tmp_path / "x.tif", [image], height=100, width=150, options=options)
    with TileCodec(tile_format(options)) as codec:
        back = codec.decode_tile_rows(codec.encode_tile_rows(image), rows=100, width=150)
    assert np.array_equal(back, tifffile.imread(tmp_path / "x.tif"))


def test_the_compression_level_is_a_size_for_speed_choice_within_range(tmp_path):
    image = smooth_image(256, 256)
    sizes = {}
    for level in (1, 9):
        options = TiffOptions(tile=64, compression=Compression.DEFLATE, level=level, icc_profile=False)
        write_tiled_tiff(tmp_path / f"{level}.tif", [image], height=256, width=256, options=options)
        assert np.array_equal(tifffile.imread(tmp_path / f"{level}.tif"), image)
        sizes[level] = (tmp_path / f"{level}.tif").stat().st_size
    assert sizes[9] != sizes[1]  # the level reached the codec (which is smaller depends on the picture)
    for compression, level, fragment in [(Compression.DEFLATE, 10, "1..9"), (Compression.ZSTD, 23, "1..22"),
                                         (Compression.JPEG, 5, "not jpeg")]:
        with pytest.raises(TiffOptionError, match=fragment):
            TiffOptions(compression=compression, level=level)


@pytest.mark.parametrize("factor", [2, 3, 5])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_box_reduce_is_the_rounded_mean_of_existing_pixels_for_any_factor(factor, dtype):
    """One box filter serves the pyramid (factor 2) and the overview (any factor): each output is
    the mean, rounded half up, of the pixels its block covers, edges repeated past the border."""
    from famos.tiles import box_reduce

    rows = np.random.default_rng(factor).integers(0, np.iinfo(dtype).max + 1, (151, 67, 3)).astype(dtype)
    padded = np.pad(rows, ((0, -151 % factor), (0, -67 % factor), (0, 0)), mode="edge").astype(np.int64)
    h, w = padded.shape[0] // factor, padded.shape[1] // factor
    sums = padded.reshape(h, factor, w, factor, 3).sum(axis=(1, 3))
    expected = (sums + factor * factor // 2) // (factor * factor)
    assert np.array_equal(box_reduce(rows, factor), expected.astype(dtype))
