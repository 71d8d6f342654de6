"""`famos render`: TIFFs read back equal the whole-canvas eager render; regions, errors, atomicity."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tifffile

from conftest import make_bundle
from famos.cli import main
from famos.config import CanvasConfig, Fold, GeneratorConfig, NoiseConfig
from famos.planning import Rect
from famos.chunk_loop import render_strips

CONFIG = GeneratorConfig(depth=3, width=8, n_templates=3, noise=NoiseConfig(n_global=1, n_local=2, n_periodic=1))
CANVAS = CanvasConfig(90, 150, fold=Fold.MIRROR, template_seed=3)
# A chunk-exact runner for the renders compared with a whole-canvas pass: the CPU's default
# (OpenVINO, where installed) may differ from it by a rounding step where windows change shape.
EXACT = ["--backend", "onnx", "--precision", "fp32"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("render"), CONFIG, CANVAS)


@pytest.fixture(scope="module")
def whole(bundle):
    """The eager whole-canvas pass, 8-bit: the reference every render must equal."""
    from famos.bundle import load_bundle
    from famos.renderer import Renderer
    from famos.chunk_loop import RenderSettings
    from famos.runners import Backend, RunnerOptions

    renderer = Renderer(load_bundle(bundle), RunnerOptions(backend=Backend.TORCH))
    task = renderer.task(RenderSettings(seed=4, chunk=10**6))  # one chunk: the whole canvas
    assert len(task.plan.chunks) == 1
    return np.concatenate(list(render_strips(task.plan, task.inputs, renderer.run)))


@pytest.mark.parametrize(
    "chunk, tile, compression",
    [(32, 16, "deflate"), (48, 64, "zstd"), (64, 32, "lzw"), (200, 16, "none")],
)
def test_tiff_equals_whole_canvas_render(bundle, whole, tmp_path, chunk, tile, compression):
    out = tmp_path / "mosaic.tif"
    args = [str(bundle), "--out", str(out), "--seed", "4", "--chunk", str(chunk), "--tile", str(tile),
            "--compression", compression, "--quiet", *EXACT]
    assert main(["render", *args]) == 0
    image = tifffile.imread(out)
    assert image.shape == (90, 150, 3)
    assert np.array_equal(image, whole)


def test_region_equals_crop_and_tags(bundle, whole, tmp_path):
    out, preview = tmp_path / "part.tiff", tmp_path / "preview.png"
    assert main(["render", str(bundle), "--out", str(out), "--seed", "4", "--chunk", "32", "--region", "10,20,100,50",
                 "--dpi", "300", "--tile", "16", "--pyramid", "--bigtiff", "yes", "--preview", str(preview), "--quiet",
                 *EXACT]) == 0
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled
        assert np.array_equal(page.asarray(), whole[20:70, 10:110])
        assert page.tags["XResolution"].value == (300, 1) and page.tags["ResolutionUnit"].value == 2
        assert 34675 in page.tags  # ICC profile
        assert len(page.pages) >= 1  # pyramid level as SubIFD
        import json

        description = json.loads(page.description)
        assert description["seed"] == 4 and description["region"] == {"y": 20, "x": 10, "height": 50, "width": 100}
    from PIL import Image

    assert Image.open(preview).size == (100, 50)
    if shutil.which("tiffinfo"):
        subprocess.run(["tiffinfo", str(out)], check=True, capture_output=True)


def test_backends_agree(bundle, whole, tmp_path):
    for backend in ("torchscript", "torch"):
        out = tmp_path / f"{backend}.tif"
        assert main(["render", str(bundle), "--out", str(out), "--seed", "4", "--chunk", "40",
                     "--backend", backend, "--quiet"]) == 0
        assert np.array_equal(tifffile.imread(out), whole)


def test_new_content_changes_the_render(bundle, whole, tmp_path):
    from PIL import Image

    content = tmp_path / "content.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(content)
    out = tmp_path / "new.tif"
    assert main(["render", str(bundle), "--out", str(out), "--seed", "4", "--content", str(content), "--quiet"]) == 0
    assert not np.array_equal(tifffile.imread(out), whole)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--region", "0,0,500,10"], "outside the canvas"),
        (["--region", "1,2,3"], "X,Y,W,H"),
        (["--tile", "100"], "tile"),
        (["--content", "missing.png"], "missing.png"),
        (["--chunk", "4"], "chunk"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_file(bundle, tmp_path, capsys, extra, message):
    out = tmp_path / "bad.tif"
    assert main(["render", str(bundle), "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_bundle_and_folder(tmp_path, capsys, bundle):
    assert main(["render", str(tmp_path / "nope"), "--out", str(tmp_path / "a.tif")]) == 2
    assert main(["render", str(bundle), "--out", str(tmp_path / "no" / "a.tif")]) == 2
    assert capsys.readouterr().err.count("error:") == 2


def test_crash_mid_render_leaves_no_file(bundle, tmp_path):
    from famos.bundle import load_bundle
    from famos.renderer import Renderer, render_tiff
    from famos.chunk_loop import RenderSettings

    renderer = Renderer(load_bundle(bundle))
    calls = {"n": 0}
    run = renderer.run

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return run(*args)

    renderer.run = failing
    out = tmp_path / "crash.tif"
    with pytest.raises(KeyboardInterrupt):
        render_tiff(renderer, out, settings=RenderSettings(chunk=32))
    assert list(tmp_path.iterdir()) == []


def test_strips_are_rows_of_chunks(bundle):
    """The pipeline hands out one chunk row at a time (peak RSS vs canvas size: bench/bench_render.py)."""
    from famos.bundle import load_bundle
    from famos.renderer import Renderer
    from famos.chunk_loop import RenderSettings

    renderer = Renderer(load_bundle(bundle))
    heights = [strip.shape[0] for strip in renderer.strips(renderer.task(RenderSettings(chunk=32, region=Rect(0, 0, 90, 150))))]
    assert heights == [32, 32, 26]


def test_oversized_content_image_is_one_line(bundle, tmp_path, capsys):
    from conftest import bomb_png

    content = tmp_path / "huge.png"
    content.write_bytes(bomb_png())
    out = tmp_path / "x.tif"
    assert main(["render", str(bundle), "--out", str(out), "--content", str(content), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "huge.png: too large" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_classic_tiff_that_cannot_fit_is_refused_up_front():
    from famos.tiff_options import BigTiff, TiffOptionError, TiffOptions
    from famos.tiff_size import needs_bigtiff

    with pytest.raises(TiffOptionError, match="--bigtiff auto"):
        needs_bigtiff(40000, 40000, options=TiffOptions(bigtiff=BigTiff.NO))
    with pytest.raises(TiffOptionError, match="tile"):
        TiffOptions(tile=8192)


# --- any output size from one model ----------------------------------------------------------------


def whole_at(bundle, size, backend="onnx"):
    """The whole pass (one chunk) of the model on a (height, width) output canvas, 8-bit."""
    from famos.bundle import load_bundle
    from famos.renderer import Renderer
    from famos.chunk_loop import RenderSettings
    from famos.runners import Backend, RunnerOptions

    renderer = Renderer(load_bundle(bundle), RunnerOptions(backend=Backend(backend)))
    task = renderer.task(RenderSettings(seed=4, chunk=10**6, size=size))
    assert len(task.plan.chunks) == 1
    return np.concatenate(list(render_strips(task.plan, task.inputs, renderer.run)))


@pytest.mark.parametrize(
    "option, size",
    [(["--scale", "0.5"], (45, 75)), (["--size", "333x201"], (201, 333)), (["--print-size", "4x2.5cm", "--dpi", "127"], (125, 200))],
)
def test_other_sizes_render_chunked_equal_to_their_whole_pass(bundle, tmp_path, option, size):
    out = tmp_path / "sized.tif"
    assert main(["render", str(bundle), "--out", str(out), "--seed", "4", "--chunk", "32", "--quiet", *option, *EXACT]) == 0
    image = tifffile.imread(out)
    assert image.shape == (*size, 3)
    assert np.array_equal(image, whole_at(bundle, size))  # exact chunking holds at every size
    # and the exported graph's canvas input agrees with the eager generator (float rounding aside)
    assert np.abs(image.astype(int) - whole_at(bundle, size, "torch")).max() <= 1


def test_another_size_is_the_same_style_not_a_resized_image(bundle, whole, tmp_path):
    """2x the canvas is not the 1x render upscaled: templates keep their pixel scale, so the new
    canvas's top-left (ψ aside) shows the same texture scale; ψ spans the new canvas."""
    import json

    out = tmp_path / "big.tif"
    assert main(["render", str(bundle), "--out", str(out), "--seed", "4", "--scale", "2", "--region", "0,0,150,90",
                 "--quiet", *EXACT]) == 0
    with tifffile.TiffFile(out) as tif:
        part = tif.pages[0].asarray()
        description = json.loads(tif.pages[0].description)
    assert description["canvas"] == {"width": 300, "height": 180}
    assert description["trained_canvas"] == {"width": 150, "height": 90}
    assert np.array_equal(part, whole_at(bundle, (180, 300))[:90, :150])  # a region of the 2x canvas
    assert not np.array_equal(part, whole)  # ψ differs: not the trained canvas again


def test_size_errors_are_one_line(bundle, tmp_path, capsys):
    out = tmp_path / "x.tif"
    bad = (["--size", "0x10"], ["--scale", "-1"], ["--size", "10x10", "--scale", "2"], ["--print-size", "4x3cm"],
           ["--scale", "nan"], ["--scale", "inf"], ["--scale", "0.0001"], ["--dpi", "inf"],
           ["--print-size", "4x3cm", "--dpi", "nan"])
    for extra in bad:
        assert main(["render", str(bundle), "--out", str(out), "--quiet", *extra]) == 2, extra
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) and all(line.startswith("famos render: error:") for line in err), err
    assert not out.exists()


def test_memory_of_a_render_does_not_grow_with_the_output_height(bundle, tmp_path):
    """At another size too, `famos render` holds one strip of chunks: an output 32x taller (same
    width; 24 MiB more of 8-bit pixels, 100 MiB more as float) peaks within a few MiB of the short
    one (each in its own process)."""
    import os
    import sys

    def peak_mib(size: str) -> float:
        out = tmp_path / f"{size}.tif"
        command = [sys.executable, "-m", "famos.cli", "render", str(bundle), "--out", str(out), "--size", size,
                   "--chunk", "256", "--quiet"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        assert status == 0
        return usage.ru_maxrss / 1024

    short, tall = peak_mib("1024x256"), peak_mib("1024x8192")
    assert tall < short + 12, (short, tall)


def test_other_proportions_get_a_note_not_an_error(bundle, tmp_path, capsys):
    assert main(["render", str(bundle), "--out", str(tmp_path / "square.tif"), "--size", "120x120", "--chunk", "64"]) == 0
    assert "note: 120x120 has other proportions than the model's canvas 150x90" in capsys.readouterr().err
    assert main(["render", str(bundle), "--out", str(tmp_path / "double.tif"), "--scale", "2", "--chunk", "64"]) == 0
    assert "note:" not in capsys.readouterr().err
