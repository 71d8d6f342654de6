"""famos TIFFs through the tools print shops and archives use: checkit_tiff (with the profile in
tests/conformance), libvips, GDAL, exiftool and LittleCMS. Each test skips, with the reason, where
its tool is missing; .ci/run installs them (Debian: checkit-tiff, libvips-tools, gdal-bin,
libimage-exiftool-perl)."""

from __future__ import annotations

import io
import pathlib
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from famos.icc import srgb_v2_profile
from famos.previews import overview_of_tiff
from famos.tiff_options import BigTiff, Compression, Intent, ResolutionUnit, Subsampling, TiffOptions
from famos.tiff_writer import write_tiled_tiff

HERE = pathlib.Path(__file__).parent
CHECKIT_PROFILE = HERE / "conformance" / "checkit_famos.cfg"

FILES = {  # name -> options; every file is 8-bit RGB, tiled, with the sRGB ICC profile
    "deflate": TiffOptions(dpi=150, artist="Jane Doe", copyright="(c) 2026 Jane Doe"),
    "lzw": TiffOptions(compression=Compression.LZW),
    "none": TiffOptions(compression=Compression.NONE, tile=128),
    "jpeg420": TiffOptions(compression=Compression.JPEG),
    "jpeg444": TiffOptions(compression=Compression.JPEG, subsampling=Subsampling.S444, quality=95),
    "pyramid": TiffOptions(pyramid=True, dpi=200, unit=ResolutionUnit.CM, tile=64),
    "bigtiff": TiffOptions(bigtiff=BigTiff.YES, pyramid=True, tile=64),
}
CLASSIC = ["deflate", "lzw", "none", "jpeg420", "jpeg444"]


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package; .ci/run installs it)")


def image(height: int = 333, width: int = 517) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, ((x // 16 + y // 16) % 2) * 200 + 20], axis=-1)
    grain = np.random.default_rng(0).integers(0, 16, (height, width, 3))
    return (smooth + grain).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("conformance")
    pixels = image()
    out = {}
    for name, options in FILES.items():
        out[name] = folder / f"{name}.tif"
        write_tiled_tiff(out[name], [pixels[:100], pixels[100:]], height=pixels.shape[0], width=pixels.shape[1],
                         options=options)
    return out


def checkit(path: pathlib.Path) -> list[str]:
    result = subprocess.run(["checkit_tiff", "-q", str(CHECKIT_PROFILE), str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("(EE)") and "Found" not in line and "not valid" not in line]


# checkit_tiff 0.4's type table disagrees with the specifications on two tags (see the profile)
CHECKIT_TYPE_TABLE = {
    "pyramid": "tag 330 (SubIFD)",  # type IFD (13): TIFF Technical Note 1
    "jpeg420": "tag 532 (ReferenceBlackWhite)",  # type RATIONAL: TIFF 6.0 section 21
    "jpeg444": "tag 532 (ReferenceBlackWhite)",
}


@pytest.mark.parametrize("name", [*CLASSIC, "pyramid"])
def test_checkit_tiff_finds_no_error(files, name):
    needs("checkit_tiff")
    errors = checkit(files[name])
    if name in CHECKIT_TYPE_TABLE:
        assert errors and all(CHECKIT_TYPE_TABLE[name] in e and "Unexpected tag type" in e for e in errors), errors
    else:
        assert errors == []


@pytest.mark.parametrize("name", list(FILES))
def test_vips_and_gdal_decode_what_tifffile_decodes(files, name, tmp_path):
    expected = tifffile.imread(files[name])
    tolerance = 2 if name.startswith("jpeg") else 0  # two JPEG decoders may round an IDCT differently
    for tool, command in (("vips", ["vips", "copy", str(files[name]), str(tmp_path / "vips.png")]),
                          ("gdal_translate", ["gdal_translate", "-q", "-of", "PNG", str(files[name]),
                                              str(tmp_path / "gdal_translate.png")])):
        if shutil.which(tool) is None:
            continue
        subprocess.run(command, check=True, capture_output=True)
        decoded = np.asarray(Image.open(tmp_path / f"{tool}.png").convert("RGB")).astype(int)
        assert decoded.shape == expected.shape
        assert np.abs(decoded - expected).max() <= tolerance, tool
    if shutil.which("vips") is None and shutil.which("gdal_translate") is None:
        pytest.skip("neither libvips nor GDAL is installed")


@pytest.mark.parametrize("name", list(FILES))
def test_exiftool_reports_no_error_and_reads_the_metadata(files, name):
    needs("exiftool")
    result = subprocess.run(["exiftool", "-a", "-G1", "-validate", "-error", "-Software", "-ModifyDate",
                             "-ProfileVersion", "-Artist", "-Copyright", str(files[name])], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.split(":")[0].strip().endswith("Error")], result.stdout
    from famos import __version__

    # every level says what made it and carries the profile (exiftool may list a SubIFD twice:
    # once from the SubIFDs tag, once following the levels' chain)
    levels = 1 + len(tifffile.TiffFile(files[name]).pages[0].pages or [])
    assert sum(f"Software                        : famos {__version__}" in line for line in lines) >= levels
    assert sum("Profile Version                 : 2.1.0" in line for line in lines) >= levels
    assert not any("Software" in line and "famos" not in line for line in lines)
    assert any("Modify Date" in line for line in lines)
    if name == "deflate":
        assert any(line.endswith(": Jane Doe") for line in lines)
        assert any(line.endswith(": (c) 2026 Jane Doe") for line in lines)


@pytest.mark.parametrize("name", ["deflate", "pyramid"])
def test_every_levels_icc_profile_maps_white_to_l_100(files, name):
    with tifffile.TiffFile(files[name]) as tif:
        pages = [tif.pages[0], *(tif.pages[0].pages or [])]
        profiles = [page.tags["InterColorProfile"].value for page in pages]
    lab = ImageCms.createProfile("LAB")
    for data in profiles:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(bytes(data)))
        assert profile.profile.version == 2.1
        to_lab = ImageCms.buildTransform(profile, lab, "RGB", "LAB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        white = ImageCms.applyTransform(Image.new("RGB", (1, 1), (255, 255, 255)), to_lab).getpixel((0, 0))
        assert white[0] == 255 and abs(white[1] - 128) <= 1 and abs(white[2] - 128) <= 1  # L* 100, neutral


def test_every_level_prints_the_same_physical_size_exactly(files):
    with tifffile.TiffFile(files["pyramid"]) as tif:
        pages = [tif.pages[0], *tif.pages[0].pages]
        sizes = set()
        for page in pages:
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            numerator, denominator = page.tags["XResolution"].value
            sizes.add(Fraction(page.shape[1]) / Fraction(numerator, denominator))
    assert sizes == {Fraction(517) / (Fraction(200) / Fraction(254, 100))}, sizes  # 6.5659 cm, every level


def test_jpeg_subsampling_follows_the_option(files):
    for name, factors in (("jpeg420", (2, 2)), ("jpeg444", (1, 1))):
        with tifffile.TiffFile(files[name]) as tif:
            assert tuple(tif.pages[0].tags["YCbCrSubSampling"].value) == factors


def test_a_print_size_in_cm_tags_cm_and_prints_that_size(tmp_path):
    from famos.cli import main

    from conftest import CanvasConfig, GeneratorConfig, make_bundle

    bundle = make_bundle(tmp_path / "b", GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(60, 90))
    out = tmp_path / "print.tif"
    assert main(["render", str(bundle), "--out", str(out), "--quiet", "--print-size", "30x20cm", "--dpi", "30",
                 "--pyramid", "--tile", "16"]) == 0
    with tifffile.TiffFile(out) as tif:
        for page in [tif.pages[0], *tif.pages[0].pages]:
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            numerator, denominator = page.tags["XResolution"].value
            width_cm = page.shape[1] * denominator / numerator
            assert abs(width_cm - 30.0) < 1e-6, width_cm  # exactly the print size asked for, every level


# output colour management (profiles from Debian's libgs-common, never copied into the repository)

GHOSTSCRIPT_ICC = pathlib.Path("/usr/share/color/icc/ghostscript")


def shop_profile(name: str) -> pathlib.Path:
    path = GHOSTSCRIPT_ICC / name
    if not path.is_file():
        pytest.skip(f"{path} is missing (Debian package libgs-common)")
    return path


def test_cmyk_output_is_converted_tile_by_tile_and_read_everywhere(tmp_path):
    cmyk = shop_profile("default_cmyk.icc")
    pixels = image()
    options = TiffOptions(output_profile=str(cmyk), intent=Intent.PERCEPTUAL, pyramid=True, tile=64)
    path = tmp_path / "cmyk.tif"
    write_tiled_tiff(path, [pixels[:150], pixels[150:]], height=pixels.shape[0], width=pixels.shape[1], options=options)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.SEPARATED and page.shape == (333, 517, 4)
        assert page.tags["InkSet"].value == 1
        for level in [page, *page.pages]:  # the shop's profile, in every level
            assert bytes(level.tags["InterColorProfile"].value) == cmyk.read_bytes()
        written = page.asarray()
    # the tiles hold what LittleCMS makes of the whole image in one go
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(srgb_v2_profile())), ImageCms.ImageCmsProfile(str(cmyk)), "RGB", "CMYK",
        renderingIntent=ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    assert np.array_equal(written, np.asarray(ImageCms.applyTransform(Image.fromarray(pixels), transform)))
    if shutil.which("vipsheader"):
        header = subprocess.run(["vipsheader", str(path)], capture_output=True, text=True, check=True).stdout
        assert "4 bands, cmyk" in header, header
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert "Size is 517, 333" in info
    # on screen, through the profile (a soft proof), the print is the render, its saturated
    # colours pulled into the press's gamut
    proof = overview_of_tiff(path).astype(float)
    assert np.abs(proof - pixels).mean() < 30
    for c in range(3):
        assert np.corrcoef(proof[..., c].ravel(), pixels[..., c].ravel().astype(float))[0, 1] > 0.95


def test_an_rgb_output_profile_and_the_refusals(tmp_path):
    from famos.tiff_options import TiffOptionError

    adobe = shop_profile("a98.icc")
    pixels = image(64, 64)
    write_tiled_tiff(tmp_path / "a98.tif", [pixels], height=64, width=64,
                     options=TiffOptions(output_profile=str(adobe), tile=16))
    with tifffile.TiffFile(tmp_path / "a98.tif") as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
        assert bytes(tif.pages[0].tags["InterColorProfile"].value) == adobe.read_bytes()
    with pytest.raises(TiffOptionError, match="compression: jpeg: CMYK output needs a lossless codec"):
        TiffOptions(output_profile=str(shop_profile("default_cmyk.icc")), compression=Compression.JPEG)
    with pytest.raises(TiffOptionError, match="a GRAY profile; an output profile for famos has RGB or CMYK data"):
        TiffOptions(output_profile=str(shop_profile("sgray.icc")))
    (tmp_path / "fake.icc").write_bytes(b"not a profile")
    with pytest.raises(TiffOptionError, match="not an ICC profile"):
        TiffOptions(output_profile=str(tmp_path / "fake.icc"))


def test_16_bit_files_hold_the_render_at_16_bits(tmp_path):
    from famos.bundle import load_bundle
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings

    from conftest import CanvasConfig, GeneratorConfig, make_bundle

    bundle = load_bundle(make_bundle(tmp_path / "b", GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(70, 90)))
    settings = RenderSettings(seed=1, chunk=32)
    renderer = Renderer(bundle)
    for bits, compression in ((8, Compression.DEFLATE), (16, Compression.DEFLATE), (16, Compression.LZW), (16, Compression.NONE)):
        render_tiff(renderer, tmp_path / f"{bits}-{compression.value}.tif", settings=settings,
                    options=TiffOptions(bits=bits, compression=compression, pyramid=True, tile=16),
                    preview=tmp_path / f"{bits}-{compression.value}.png")
    eight = tifffile.imread(tmp_path / "8-deflate.tif")
    for compression in ("deflate", "lzw", "none"):
        with tifffile.TiffFile(tmp_path / f"16-{compression}.tif") as tif:
            sixteen = tif.pages[0].asarray()
            assert sixteen.dtype == np.uint16 and [p.dtype for p in tif.pages[0].pages] == [np.uint16] * len(tif.pages[0].pages)
            assert tif.pages[0].tags["BitsPerSample"].value == (16, 16, 16)
        assert np.abs(sixteen / 257.0 - eight).max() <= 0.51  # the same render, 257x finer steps
        assert len(np.unique(sixteen)) > len(np.unique(eight))
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"16-{compression}.png")),
                              np.asarray(Image.open(tmp_path / "8-deflate.png")))  # its preview is the 8-bit one
        for tool in ("vips", "gdal_translate"):
            if shutil.which(tool):
                out = tmp_path / f"{tool}-{compression}.tif"
                command = (["vips", "copy", str(tmp_path / f"16-{compression}.tif"), str(out)] if tool == "vips" else
                           ["gdal_translate", "-q", str(tmp_path / f"16-{compression}.tif"), str(out)])
                subprocess.run(command, check=True, capture_output=True)
                assert np.array_equal(tifffile.imread(out), sixteen), tool
    from famos.tiff_options import TiffOptionError

    with pytest.raises(TiffOptionError, match="bits: 16: JPEG holds 8 bits"):
        TiffOptions(bits=16, compression=Compression.JPEG)


def test_a_model_trained_for_a_print_size_renders_at_its_resolution(tmp_path):
    from famos.cli import main

    from conftest import CanvasConfig, GeneratorConfig, make_bundle

    bundle = make_bundle(tmp_path / "b", GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(60, 90),
                         provenance={"print": {"size": "9x6cm", "dpi": 25.4}})  # 90x60 px = 9x6 cm
    for extra, width_cm in (([], 9.0), (["--scale", "2"], 18.0)):  # 2x the pixels: 2x the print
        out = tmp_path / f"print{len(extra)}.tif"
        assert main(["render", str(bundle), "--out", str(out), "--quiet", *extra]) == 0
        with tifffile.TiffFile(out) as tif:
            page = tif.pages[0]
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            numerator, denominator = page.tags["XResolution"].value
            assert abs(page.shape[1] * denominator / numerator - width_cm) < 1e-6
