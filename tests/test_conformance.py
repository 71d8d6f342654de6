"""famos TIFFs through the tools print shops and archives use: checkit_tiff (with the profiles in
tests/conformance), libvips, GDAL, exiftool and LittleCMS. Each test skips, with the reason, where
its tool is missing; .ci/run installs them (Debian: checkit-tiff, libvips-tools, gdal-bin,
libimage-exiftool-perl, libtiff-tools).

Which checkit_tiff profile (tests/conformance/checkit_<profile>.cfg) each kind of output passes;
`famos` is every famos TIFF that is TIFF 6.0, the others pin one kind each, and every kind is
rejected by every profile not named here (test_each_kind_passes_its_checkit_profiles_and_no_other):

    kind                               passes          why not the others
    deflate (the default), lzw, none   famos, rgb8
    pyramid (SubIFDs)                  famos, rgb8     checkit_tiff reads IFD0 only; exiftool
                                                       validates the levels, tifffile reads them
    a98 (a shop's RGB profile)         famos, rgb8
    bits16 (--bits 16)                 famos, rgb16
    jpeg420, jpeg444                   famos, jpeg     (less checkit_tiff's type for tag 532)
    cmyk (a shop's CMYK profile)       famos, cmyk
    zstd                               zstd            50000 is libtiff's code, not TIFF 6.0
    bigtiff                            none            checkit_tiff reads classic TIFF only;
                                                       tiffinfo, libvips, GDAL, tifffile read it
    no-icc (--no-icc)                  none            every profile wants the ICC profile (34675)

exiftool -validate finds nothing in any of them but where famos leaves Baseline TIFF on purpose
(test_exiftool_validate_warns_only_where_famos_leaves_baseline_tiff)."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import re
import shutil
import struct
import subprocess
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from famos.icc import srgb_v2_profile
from famos.previews import overview_of_tiff
from famos.tiff_options import BigTiff, Compression, Intent, ResolutionUnit, Subsampling, TiffOptions
from famos.tiff_writer import write_tiled_tiff

HERE = pathlib.Path(__file__).parent
PROFILES = ("famos", "rgb8", "rgb16", "jpeg", "cmyk", "zstd")  # tests/conformance/checkit_<name>.cfg
# output colour management: profiles from Debian's libgs-common, never copied into the repository
GHOSTSCRIPT_ICC = pathlib.Path("/usr/share/color/icc/ghostscript")


@dataclasses.dataclass(frozen=True)
class Kind:
    options: dict[str, Any]  # TiffOptions fields; an output_profile names a Ghostscript profile
    passes: tuple[str, ...]  # the checkit_tiff profiles it passes
    outside: str = ""  # what keeps it out of checkit_famos.cfg (TIFF 6.0), as checkit_tiff says it


KINDS = {  # every file is tiled and, unless said otherwise, 8-bit sRGB with the sRGB ICC profile
    "deflate": Kind(dict(dpi=150, artist="Jane Doe", copyright="(c) 2026 Jane Doe"), ("famos", "rgb8")),
    "lzw": Kind(dict(compression=Compression.LZW), ("famos", "rgb8")),
    "none": Kind(dict(compression=Compression.NONE, tile=128), ("famos", "rgb8")),
    "pyramid": Kind(dict(pyramid=True, dpi=200, unit=ResolutionUnit.CM, tile=64), ("famos", "rgb8")),
    "a98": Kind(dict(output_profile="a98.icc"), ("famos", "rgb8")),
    "bits16": Kind(dict(bits=16), ("famos", "rgb16")),
    "jpeg420": Kind(dict(compression=Compression.JPEG), ("famos", "jpeg")),
    "jpeg444": Kind(dict(compression=Compression.JPEG, subsampling=Subsampling.S444, quality=95), ("famos", "jpeg")),
    "cmyk": Kind(dict(output_profile="default_cmyk.icc", intent=Intent.PERCEPTUAL, pyramid=True, tile=64),
                 ("famos", "cmyk")),
    "zstd": Kind(dict(compression=Compression.ZSTD), ("zstd",), outside="tag 259 (Compression)"),
    "bigtiff": Kind(dict(bigtiff=BigTiff.YES, pyramid=True, tile=64), (),
                    outside="(HE)TIFF Header error, not a MAGIC BYTE for TIFF: 0x002b"),
    "no-icc": Kind(dict(icc_profile=False), (), outside="tag 34675 (ICC Profile)"),
}
SRGB = [name for name, kind in KINDS.items() if "output_profile" not in kind.options and name != "no-icc"]
EIGHT_BIT_RGB = [name for name in SRGB if name != "bits16"] + ["a98"]


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package; .ci/run installs it)")


def shop_profile(name: str) -> pathlib.Path:
    path = GHOSTSCRIPT_ICC / name
    if not path.is_file():
        pytest.skip(f"{path} is missing (Debian package libgs-common)")
    return path


def image(height: int = 333, width: int = 517) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, ((x // 16 + y // 16) % 2) * 200 + 20], axis=-1)
    grain = np.random.default_rng(0).integers(0, 16, (height, width, 3))
    return (smooth + grain).clip(0, 255).astype(np.uint8)


def options_of(name: str) -> TiffOptions | None:
    """The kind's options; None where its output profile is not installed."""
    fields = dict(KINDS[name].options)
    if "output_profile" in fields:
        fields["output_profile"] = str(GHOSTSCRIPT_ICC / fields["output_profile"])
        if not pathlib.Path(fields["output_profile"]).is_file():
            return None
    return TiffOptions(**fields)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, pathlib.Path | None]:
    """Each kind's file; None where its output profile is not installed."""
    folder = tmp_path_factory.mktemp("conformance")
    pixels = image()
    out: dict[str, pathlib.Path | None] = {}
    for name in KINDS:
        options = options_of(name)
        out[name] = None if options is None else folder / f"{name}.tif"
        if options is None:
            continue
        samples = pixels.astype(np.uint16) * 257 if options.bits == 16 else pixels
        write_tiled_tiff(out[name], [samples[:100], samples[100:]], height=pixels.shape[0], width=pixels.shape[1],
                         options=options)
    return out


def file_of(files: dict[str, pathlib.Path | None], name: str) -> pathlib.Path:
    if files[name] is None:
        shop_profile(KINDS[name].options["output_profile"])  # skips, naming the missing profile
    return files[name]


def checkit(path: pathlib.Path, profile: str) -> list[str]:
    """checkit_tiff's findings for ``path`` under tests/conformance/checkit_<profile>.cfg; [] where it passes."""
    result = subprocess.run(["checkit_tiff", "-q", str(HERE / "conformance" / f"checkit_{profile}.cfg"), str(path)],
                            capture_output=True, text=True)
    findings = [line for line in (result.stdout + result.stderr).splitlines()
                if line.startswith(("(EE)", "(HE)")) and "Found" not in line and "not valid" not in line
                # checkit_tiff 0.4's type table gives ReferenceBlackWhite another type than the
                # RATIONAL of TIFF 6.0 section 21 (libtiff writes it so too): a finding about the tool
                and not ("tag 532 (ReferenceBlackWhite)" in line and "found: RATIONAL" in line)]
    return findings


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_passes_its_checkit_profiles_and_no_other(files, name):
    needs("checkit_tiff")
    path = file_of(files, name)
    findings = {profile: checkit(path, profile) for profile in PROFILES}
    assert [profile for profile in PROFILES if not findings[profile]] == list(KINDS[name].passes), findings
    if KINDS[name].outside:  # rejected by the TIFF 6.0 profile for exactly this
        assert findings["famos"] and all(KINDS[name].outside in line for line in findings["famos"]), findings["famos"]


def test_the_profiles_share_their_common_rules_word_for_word():
    def shared(profile: str) -> str:
        text = (HERE / "conformance" / f"checkit_{profile}.cfg").read_text()
        return text[text.index("# --- shared by every famos profile"):text.index("# --- end of the shared rules ---")]

    assert len({shared(profile) for profile in PROFILES}) == 1
    assert {path.stem.removeprefix("checkit_") for path in (HERE / "conformance").glob("checkit_*.cfg")} == set(PROFILES)


def test_bigtiff_is_read_by_libtiff_libvips_gdal_and_tifffile(files):
    """checkit_tiff 0.4 cannot open BigTIFF (see the table above): other readers vouch for it."""
    path = files["bigtiff"]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and len(tif.pages[0].pages) == 4
        assert np.array_equal(tif.pages[0].asarray(), image())
    for tool, command, expected in (
            ("tiffinfo", ["tiffinfo", str(path)], "Image Width: 517 Image Length: 333"),
            ("vipsheader", ["vipsheader", str(path)], "517x333 uchar, 3 bands, srgb"),
            ("gdalinfo", ["gdalinfo", str(path)], "Overviews: 259x167, 130x84, 65x42, 33x21")):
        if shutil.which(tool):
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            assert expected in result.stdout and "rror" not in result.stderr, (tool, result.stdout, result.stderr)


@pytest.mark.parametrize("name", EIGHT_BIT_RGB)
def test_vips_and_gdal_decode_what_tifffile_decodes(files, name, tmp_path):
    path = file_of(files, name)
    expected = tifffile.imread(path)
    tolerance = 2 if name.startswith("jpeg") else 0  # two JPEG decoders may round an IDCT differently
    for tool, command in (("vips", ["vips", "copy", str(path), str(tmp_path / "vips.png")]),
                          ("gdal_translate", ["gdal_translate", "-q", "-of", "PNG", str(path),
                                              str(tmp_path / "gdal_translate.png")])):
        if shutil.which(tool) is None:
            continue
        subprocess.run(command, check=True, capture_output=True)
        decoded = np.asarray(Image.open(tmp_path / f"{tool}.png").convert("RGB")).astype(int)
        assert decoded.shape == expected.shape
        assert np.abs(decoded - expected).max() <= tolerance, tool
    if shutil.which("vips") is None and shutil.which("gdal_translate") is None:
        pytest.skip("neither libvips nor GDAL is installed")


@pytest.mark.parametrize("name", SRGB)
def test_exiftool_reports_no_error_and_reads_the_metadata(files, name):
    needs("exiftool")
    result = subprocess.run(["exiftool", "-a", "-G1", "-validate", "-error", "-Software", "-ModifyDate",
                             "-ProfileVersion", "-Artist", "-Copyright", str(files[name])], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.split(":")[0].strip().endswith("Error")], result.stdout
    from famos import __version__

    # every level says what made it and carries the profile, and exiftool meets each level once
    levels = 1 + len(tifffile.TiffFile(files[name]).pages[0].pages or [])
    assert sum(f"Software                        : famos {__version__}" in line for line in lines) == levels
    assert sum("Profile Version                 : 2.1.0" in line for line in lines) == levels
    assert not any("Software" in line and "famos" not in line for line in lines)
    assert any("Modify Date" in line for line in lines)
    if name == "deflate":
        assert any(line.endswith(": Jane Doe") for line in lines)
        assert any(line.endswith(": (c) 2026 Jane Doe") for line in lines)


# exiftool -validate holds a TIFF to Baseline TIFF (TIFF 6.0 part 1): strips, and the baseline
# codecs and colour spaces. Where famos leaves it, it does so on purpose, for a part of TIFF 6.0 or
# a technical note that RIPs and libtiff read; these are the only warnings exiftool may give.
STRIPS = {f"Missing required TIFF IFD0 tag {tag}" for tag in ("0x0111 StripOffsets", "0x0116 RowsPerStrip",
                                                              "0x0117 StripByteCounts")}


def baseline_departures(options: TiffOptions) -> set[str]:
    if options.bigtiff is BigTiff.YES:
        # exiftool checks no BigTIFF tag against Baseline TIFF, and names BigTIFF .btf; libtiff,
        # GDAL, libvips and Photoshop write and read BigTIFF as .tif, so famos keeps the user's name
        return {"File has wrong extension (should be BTF, not TIF)"}
    warnings = set(STRIPS)  # tiles (TIFF 6.0 section 15), which every RIP reads and big prints need
    if options.compression not in (Compression.NONE, Compression.LZW):
        warnings.add("Invalid value for IFD0 tag 0x0103 Compression")  # Deflate (8), JPEG (7), zstd (50000)
    if options.compression is Compression.ZSTD:
        warnings.add("[minor] Unknown value for IFD0:Compression")  # exiftool 12 has no name for 50000
    if options.compression is Compression.NONE:
        # TIFF 6.0 section 15 pads the tiles at the right and bottom edges to full size
        warnings.add("[minor] Oversized IFD0 TileByteCounts")
    cmyk = options.output_profile and pathlib.Path(options.output_profile).read_bytes()[16:20] == b"CMYK"
    if options.compression is Compression.JPEG or cmyk:
        warnings.add("Invalid value for IFD0 tag 0x0106 PhotometricInterpretation")  # YCbCr (6), CMYK (5)
    return warnings


@pytest.mark.parametrize("name", list(KINDS))
def test_exiftool_validate_warns_only_where_famos_leaves_baseline_tiff(files, name):
    """Nothing else: no "ICC_Profile pointer references previous ICC_Profile directory" in a
    pyramid (each level reached once), no "Non-standard format" for its SubIFDs tag (LONG)."""
    needs("exiftool")
    path = file_of(files, name)
    result = subprocess.run(["exiftool", "-validate", "-warning", "-error", "-a", str(path)],
                            capture_output=True, text=True, check=True)
    warnings = {re.sub(r" \(\d+ bytes, but expected \d+\)$", "", line.split(":", 1)[1].strip())
                for line in result.stdout.splitlines() if line.startswith(("Warning", "Error"))}
    assert warnings == baseline_departures(options_of(name)), result.stdout


@pytest.mark.parametrize("name", ["pyramid", "bigtiff", "cmyk"])
def test_each_pyramid_level_is_reached_once_from_the_subifds_tag(files, name):
    """As libtiff writes SubIFDs: the tag (typed LONG, or LONG8 in BigTIFF) lists every level, and
    no level chains on to another, so a reader following both ways meets each level once."""
    path = file_of(files, name)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tag = page.tags["SubIFDs"]
        assert tag.dtype == (tifffile.DATATYPE.LONG8 if tif.is_bigtiff else tifffile.DATATYPE.LONG)
        levels = [level.offset for level in page.pages]
        assert list(page.subifds) == levels and len(levels) == 4
        count_format, entry_size, offset_format = ("<Q", 20, "<Q") if tif.is_bigtiff else ("<H", 12, "<I")
        data = path.read_bytes()
        for offset in [page.offset, *levels]:
            (entries,) = struct.unpack_from(count_format, data, offset)
            next_ifd = offset + struct.calcsize(count_format) + entries * entry_size
            assert struct.unpack_from(offset_format, data, next_ifd) == (0,), offset


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


# output colour management

def test_cmyk_output_is_converted_tile_by_tile_and_read_everywhere(files):
    cmyk = shop_profile("default_cmyk.icc")
    pixels = image()
    path = files["cmyk"]  # perceptual, with a pyramid
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
