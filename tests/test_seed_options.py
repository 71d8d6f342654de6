"""The seed's remaining options (zalandoresearch/famos `config.py`): multi-scale mixing, the refine
U-Net, fAdvM, and the U-Net switches (skip connections, ψ copies, bottleneck width), each from the
command line into the checkpoint's spec, through export (ONNX and TorchScript, parity checked) to
renders of any size that are equal chunked and whole (``tests/test_exactness.py`` checks the
chunking of each architecture at the tensor level, and the halo against an empirical reach)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from famos.cli import main as famos
from famos.config import GeneratorConfig

SEED_OPTIONS = {
    "multi-scale": (["--multi-scale"], dict(multi_scale=True)),
    "refine": (["--refine"], dict(refine=True)),
    "no-skip": (["--no-skip-connections"], dict(skip=False)),
    "no-coord-copy": (["--no-coord-copy"], dict(coord_copy=False)),
    "bottleneck": (["--bottleneck-width", "24"], dict(bottleneck_width=24)),
}


@pytest.mark.parametrize("name", sorted(SEED_OPTIONS))
def test_each_option_reaches_the_generator_config(name):
    from famos.training.cli import _resolve, build_parser, configs

    argv, fields = SEED_OPTIONS[name]
    options, given = _resolve(build_parser().parse_args(["--preset", "tiny", "--out", "x", *argv]))
    generator, _, _ = configs(options, given=given, content_size=(451, 300))
    for field, value in fields.items():
        assert getattr(generator, field) == value, field


def test_the_fadvm_weight_reaches_the_losses():
    from famos.training.cli import _resolve, build_parser, configs

    options, given = _resolve(build_parser().parse_args(["--preset", "tiny", "--out", "x",
                                                         "--copy-adversarial-weight", "0.5"]))
    _, _, train = configs(options, given=given, content_size=(451, 300))
    assert train.losses.copy_adversarial_weight == 0.5


@pytest.mark.parametrize("argv, needle", [
    (["--multi-scale", "--templates", "20"], "the decoder's 16 channels hold the 20 mixing logits"),
    (["--multi-scale", "--mode", "parametric"], "needs memory templates"),
    (["--refine", "--mode", "copy"], "needs blend mode 'blend'"),
    (["--copy-adversarial-weight", "-1"], "--copy-adversarial-weight -1.0 must be 0 or more"),
])
def test_impossible_combinations_are_one_line(tmp_path, capsys, argv, needle):
    assert famos(["train", "--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.fixture(scope="module")
def seed_bundle(tmp_path_factory):
    """One short run with every seed option at once (and fAdvM), exported: the model the render
    tests below draw from."""
    folder = tmp_path_factory.mktemp("seed-options")
    run, bundle = folder / "run", folder / "bundle"
    assert famos(["train", "--preset", "tiny", "--steps", "4", "--preview-every", "2", "--checkpoint-every", "2",
                  "--multi-scale", "--refine", "--no-skip-connections", "--no-coord-copy", "--bottleneck-width", "24",
                  "--copy-adversarial-weight", "0.5", "--noise-local", "2", "--threads", "1", "--quiet",
                  "--out", str(run)]) == 0
    assert famos(["export", str(run), "--out", str(bundle)]) == 0  # parity checked against the eager model
    return run, bundle


def test_fadvm_trains_against_the_copied_image(seed_bundle):
    run, _ = seed_bundle
    with open(run / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(float(row["g_adv_copy"]) > 0 for row in rows)


def test_the_spec_records_the_options(seed_bundle):
    import json

    _, bundle = seed_bundle
    spec = json.loads((bundle / "manifest.json").read_text())["spec"]["generator"]
    assert (spec["multi_scale"], spec["refine"], spec["skip"], spec["coord_copy"], spec["bottleneck_width"]) == (
        True, True, False, False, 24)


@pytest.mark.parametrize("backend", ["onnx", "torchscript", "torch"])
def test_every_exact_backend_renders_the_same_pixels_chunked_and_whole(seed_bundle, tmp_path, backend):
    """The chained halo of the refine U-Net, at a size other than the trained one (ψ is off, so
    the canvas input the exporter drops must not be fed), chunked in three ways."""
    _, bundle = seed_bundle
    images = []
    for chunk in ("48", "96", "4096"):
        out = tmp_path / f"{backend}-{chunk}.tif"
        assert famos(["render", str(bundle), "--out", str(out), "--backend", backend, "--chunk", chunk,
                      "--size", "250x130", "--seed", "3", "--quiet"]) == 0
        images.append(tifffile.imread(out))
    assert images[0].shape == (130, 250, 3)
    assert all(np.array_equal(image, images[0]) for image in images[1:])


def test_the_backends_agree(seed_bundle, tmp_path):
    _, bundle = seed_bundle
    renders = {}
    for backend in ("onnx", "torchscript", "torch"):
        out = tmp_path / f"{backend}.tif"
        assert famos(["render", str(bundle), "--out", str(out), "--backend", backend, "--quiet"]) == 0
        renders[backend] = tifffile.imread(out).astype(int)
    for backend, image in renders.items():
        assert np.abs(image - renders["onnx"]).max() <= 1, backend


def test_todays_architectures_keep_their_spec():
    """A spec written before the options existed reads as the same model (the fields default off)."""
    from famos.config import from_dict, to_dict

    old = to_dict(GeneratorConfig())
    for field in ("multi_scale", "refine"):
        old.pop(field)
    assert from_dict(GeneratorConfig, old) == GeneratorConfig()
