"""Invariants of the streaming TIFF writer: strips in equal pixels out, tags as asked, pyramid
levels are box means, an independent reader accepts the files, no partial file ever appears at
the final path, and memory does not grow with the canvas."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import tracemalloc

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")

from famos.tiff_options import BigTiff, Compression, TiffOptions  # noqa: E402
from famos.tiff_size import needs_bigtiff  # noqa: E402
from famos.tiff_writer import write_tiled_tiff  # noqa: E402

HEIGHT, WIDTH = 150, 230  # deliberately not multiples of any tile size
LOSSLESS = [Compression.NONE, Compression.DEFLATE, Compression.ZSTD, Compression.LZW]


@pytest.fixture(scope="module")
def noise_canvas() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def smooth_canvas() -> np.ndarray:
    """Image-like content, for the lossy codec (JPEG on pure noise measures nothing useful)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    rgb = np.stack(
        [128 + 100 * np.sin(x / 17), 128 + 100 * np.cos(y / 23), 128 + 60 * np.sin((x + y) / 31)],
        axis=-1,
    )
    return np.clip(rgb, 0, 255).astype(np.uint8)


def uneven_strips(canvas: np.ndarray):
    """Strips of 7, 64, 1 and the rest rows: crossing tile rows at odd places."""
    bounds = [0, 7, 71, 72, canvas.shape[0]]
    for top, bottom in zip(bounds, bounds[1:]):
        yield canvas[top:bottom]


def write(path, canvas, **options):
    return write_tiled_tiff(
        path,
        uneven_strips(canvas),
        height=canvas.shape[0],
        width=canvas.shape[1],
        options=TiffOptions(**options),
    )


@pytest.mark.parametrize("compression", LOSSLESS, ids=lambda c: c.value)
@pytest.mark.parametrize("tile", [16, 64])
@pytest.mark.parametrize("predictor", [True, False], ids=["pred", "nopred"])
def test_lossless_round_trip(tmp_path, noise_canvas, compression, tile, predictor):
    path = tmp_path / "out.tif"
    report = write(path, noise_canvas, tile=tile, compression=compression, predictor=predictor)
    assert report.path == path and report.levels == 1 and not report.bigtiff
    assert report.bytes_written == path.stat().st_size
    np.testing.assert_array_equal(tifffile.imread(path), noise_canvas)


def test_jpeg_round_trip_is_close(tmp_path, smooth_canvas):
    path = tmp_path / "out.tif"
    write(path, smooth_canvas, tile=64, compression=Compression.JPEG, quality=90)
    back = tifffile.imread(path)
    assert back.shape == smooth_canvas.shape
    assert np.abs(back.astype(np.int16) - smooth_canvas).mean() < 3.0
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG


def test_tags(tmp_path, noise_canvas):
    path = tmp_path / "out.tif"
    provenance = {"model": "marble", "seed": 7, "canvas": [HEIGHT, WIDTH], "version": "0.1.0"}
    write_tiled_tiff(
        path,
        uneven_strips(noise_canvas),
        height=HEIGHT,
        width=WIDTH,
        options=TiffOptions(tile=64, compression=Compression.ZSTD, predictor=True, dpi=300),
        description=provenance,
    )
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (64, 64)
        assert page.compression == tifffile.COMPRESSION.ZSTD
        assert page.predictor == tifffile.PREDICTOR.HORIZONTAL
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH
        assert page.tags["XResolution"].value == (300, 1)
        assert page.tags["YResolution"].value == (300, 1)
        icc = page.tags[34675].value
        assert icc[36:40] == b"acsp"
        # exactly our JSON, no tifffile shape metadata mixed in
        assert json.loads(page.description) == provenance
        assert page.description == json.dumps(provenance, sort_keys=True)


def test_no_icc_no_dpi_no_description(tmp_path, noise_canvas):
    path = tmp_path / "out.tif"
    write(path, noise_canvas, icc_profile=False)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert 34675 not in page.tags
        # no DPI given: the documented default, so the file still says how large it prints
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH
        assert page.tags["XResolution"].value == (300, 1)
        assert not page.description


@pytest.mark.parametrize(("bigtiff", "expected"), [(BigTiff.YES, True), (BigTiff.NO, False)])
def test_bigtiff_forced(tmp_path, noise_canvas, bigtiff, expected):
    path = tmp_path / "out.tif"
    report = write(path, noise_canvas, bigtiff=bigtiff)
    assert report.bigtiff is expected
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff is expected
    np.testing.assert_array_equal(tifffile.imread(path), noise_canvas)


def test_needs_bigtiff_decision():
    auto = TiffOptions()
    assert needs_bigtiff(40000, 40000, options=auto)
    assert not needs_bigtiff(1000, 1000, options=auto)
    # ~3.8 GB raw: fits uncompressed, but the pyramid's extra third does not
    assert not needs_bigtiff(35000, 36000, options=TiffOptions(compression=Compression.NONE))
    assert needs_bigtiff(
        35000, 36000, options=TiffOptions(compression=Compression.NONE, pyramid=True)
    )
    assert needs_bigtiff(100, 100, options=TiffOptions(bigtiff=BigTiff.YES))
    assert not needs_bigtiff(1000, 1000, options=TiffOptions(bigtiff=BigTiff.NO))
    with pytest.raises(ValueError, match="classic TIFF"):
        needs_bigtiff(40000, 40000, options=TiffOptions(bigtiff=BigTiff.NO))


def box_mean(image: np.ndarray) -> np.ndarray:
    """Reference 2x2 mean in float, odd edges averaging the pixels that exist."""
    h, w = image.shape[:2]
    padded = np.pad(image.astype(np.float64), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return (
        padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    ) / 4


@pytest.mark.parametrize("height", [HEIGHT, HEIGHT - 1])  # even and odd canvas heights
def test_pyramid_levels(tmp_path, noise_canvas, height):
    canvas = noise_canvas[:height]
    path = tmp_path / "out.tif"
    report = write(path, canvas, tile=32, compression=Compression.DEFLATE, pyramid=True)
    # 230 -> 115 -> 58 -> 29 fits one 32 tile
    expected = [(height, WIDTH)]
    while max(expected[-1]) > 32:
        h, w = expected[-1]
        expected.append(((h + 1) // 2, (w + 1) // 2))
    assert report.levels == len(expected) == 4
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        levels = [page.asarray()] + [sub.asarray() for sub in page.pages]
        assert [level.shape[:2] for level in levels] == expected
        assert all(sub.subfiletype == 1 and sub.is_tiled for sub in page.pages)
    np.testing.assert_array_equal(levels[0], canvas)
    for upper, lower in zip(levels, levels[1:]):
        assert np.abs(lower.astype(np.float64) - box_mean(upper)).max() <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]  # spool files removed


@pytest.mark.skipif(
    shutil.which("tiffinfo") is None, reason="tiffinfo (libtiff-tools) is not installed"
)
@pytest.mark.parametrize(
    "options",
    [
        {"bigtiff": BigTiff.NO},
        {"bigtiff": BigTiff.YES, "compression": Compression.ZSTD},
        {"pyramid": True, "compression": Compression.LZW},
    ],
    ids=["classic", "bigtiff", "pyramid"],
)
def test_tiffinfo_reads_it(tmp_path, noise_canvas, options):
    path = tmp_path / "out.tif"
    write(path, noise_canvas, tile=64, **options)
    result = subprocess.run(
        ["tiffinfo", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Tile Width: 64 Tile Length: 64" in result.stdout
    assert "Image Width: 230 Image Length: 150" in result.stdout
    if options.get("pyramid"):
        assert "Image Width: 115 Image Length: 75" in result.stdout


@pytest.mark.parametrize(
    "error",
    [RuntimeError("renderer died"), OSError(errno.ENOSPC, "No space left on device")],
    ids=["crash", "disk-full"],
)
def test_failing_source_leaves_nothing(tmp_path, noise_canvas, error):
    path = tmp_path / "out.tif"

    def broken():
        yield noise_canvas[:100]
        raise error

    with pytest.raises(type(error)):
        write_tiled_tiff(
            path, broken(), height=HEIGHT, width=WIDTH, options=TiffOptions(tile=16, pyramid=True)
        )
    assert list(tmp_path.iterdir()) == []


def test_interrupt_leaves_nothing_and_keeps_old_file(tmp_path, noise_canvas):
    path = tmp_path / "out.tif"
    path.write_bytes(b"previous render")

    def cancelled():
        yield noise_canvas[:64]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tiled_tiff(path, cancelled(), height=HEIGHT, width=WIDTH)
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    assert path.read_bytes() == b"previous render"


@pytest.mark.parametrize(
    ("rows", "message"), [(HEIGHT - 1, "ended after 149 rows"), (HEIGHT + 1, "more than")]
)
def test_height_mismatch(tmp_path, noise_canvas, rows, message):
    path = tmp_path / "out.tif"
    canvas = np.concatenate([noise_canvas, noise_canvas[:1]])[:rows]
    with pytest.raises(ValueError, match=message):
        write_tiled_tiff(path, uneven_strips(canvas), height=HEIGHT, width=WIDTH)
    assert list(tmp_path.iterdir()) == []


def test_empty_strips_are_harmless(tmp_path, noise_canvas):
    empty = noise_canvas[:0]
    strips = [noise_canvas[:3], empty, noise_canvas[3:90], empty, noise_canvas[90:]]
    path = tmp_path / "out.tif"
    write_tiled_tiff(
        path, iter(strips), height=HEIGHT, width=WIDTH, options=TiffOptions(tile=16, pyramid=True)
    )
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray(), noise_canvas)
        level1 = tif.pages[0].pages[0].asarray()
    assert np.abs(level1 - box_mean(noise_canvas)).max() <= 1


def test_bad_strip_shape(tmp_path, noise_canvas):
    with pytest.raises(ValueError, match="expected"):
        write_tiled_tiff(
            tmp_path / "out.tif", iter([noise_canvas[:, :-1]]), height=HEIGHT, width=WIDTH
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(tmp_path, noise_canvas):
    with pytest.raises(FileNotFoundError, match="nope"):
        write(tmp_path / "nope" / "out.tif", noise_canvas)


@pytest.mark.parametrize("tile", [100, 0, -16])
def test_bad_tile(tile):
    with pytest.raises(ValueError, match="tile"):
        TiffOptions(tile=tile)


def peak_bytes_writing(path, *, height: int, width: int, strip_rows: int) -> int:
    base = np.random.default_rng(1).integers(0, 256, (strip_rows, width, 3), dtype=np.uint8)

    def strips():
        for top in range(0, height, strip_rows):
            # a fresh array each time, as a renderer would produce
            yield np.roll(base, top, axis=1)[: min(strip_rows, height - top)]

    tracemalloc.start()
    try:
        write_tiled_tiff(
            path,
            strips(),
            height=height,
            width=width,
            options=TiffOptions(compression=Compression.ZSTD, encode_workers=2, pyramid=True),
        )
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_independent_of_canvas(tmp_path):
    side = 4096  # 48 MiB canvas; 96-row strips are deliberately not tile aligned
    peak = peak_bytes_writing(tmp_path / "big.tif", height=side, width=side, strip_rows=96)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 48 MiB canvas"
    # the real invariant: a canvas 4x taller costs no more memory
    short_peak = peak_bytes_writing(
        tmp_path / "short.tif", height=side // 4, width=side, strip_rows=96
    )
    assert peak < 1.25 * short_peak, (peak, short_peak)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.pages[0].shape == (side, side, 3)
        assert [sub.shape[:2] for sub in tif.pages[0].pages] == [
            (2048, 2048), (1024, 1024), (512, 512), (256, 256)
        ]


def test_software_datetime_artist_and_copyright(tmp_path, noise_canvas, monkeypatch):
    from famos import __version__
    from famos.tiff_options import TiffOptionError

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    path = tmp_path / "tagged.tif"
    write(path, noise_canvas, artist="Jane Doe", copyright="(c) 2026 Jane Doe", pyramid=True, tile=16)
    with tifffile.TiffFile(path) as tif:
        for page in [tif.pages[0], *tif.pages[0].pages]:  # every level says what made it, and when
            assert page.tags["Software"].value == f"famos {__version__}"
            assert page.tags["DateTime"].value == "2026:01:01 00:00:00"
        assert tif.pages[0].tags["Artist"].value == "Jane Doe"
        assert tif.pages[0].tags["Copyright"].value == "(c) 2026 Jane Doe"
    for field, value in (("artist", "Jöns"), ("copyright", "x" * 2000), ("datetime", "yesterday")):
        with pytest.raises(TiffOptionError, match=field):
            TiffOptions(**{field: value})
