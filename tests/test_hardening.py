"""Bad input of every kind gets one line naming the field and the limit, and nothing is written:
bundles whose manifest lies, checkpoints whose header lies, numbers out of range, limits."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from conftest import CanvasConfig, GeneratorConfig, make_bundle, tiny_model, write_checkpoint
from famos.cli import main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b"), GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(64, 96))


def one_line(capsys, rc: int, *fragments: str) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def tampered(bundle, tmp_path, edit) -> str:
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["spec"]["canvas"].update(height=999), "canvas differs from the one generator.safetensors was trained with"),
    (lambda m: m["spec"]["canvas"].update(height=-5), "canvas height = -5 must be positive"),
    (lambda m: m["spec"]["generator"].update(depth=3), "alignment 4, the architecture's is 8"),
    (lambda m: m["spec"]["generator"].update(width=8), "generator differs"),
    (lambda m: m["spec"]["generator"].update(n_templates=5), "generator differs"),
    (lambda m: m["halo"].update(top=-8), "halo.top = -8 is not a whole number from 0"),
    (lambda m: m["halo"].update(top=7), "is not the architecture's"),
    (lambda m: m.update(alignment=0), "alignment = 0 is not a whole number from 1"),
    (lambda m: m.update(alignment=8), "alignment 8, the architecture's is 4"),
    (lambda m: m["spec"].update(style_sizes=[[10, 10]]), "style sizes differs"),
    (lambda m: m["spec"].update(style_sizes=[]), "style sizes is out of range"),
])
def test_a_manifest_that_lies_is_refused_in_one_line(bundle, tmp_path, capsys, edit, fragment):
    out = tmp_path / "out.tif"
    rc = main(["render", tampered(bundle, tmp_path, edit), "--out", str(out), "--quiet"])
    one_line(capsys, rc, fragment)
    assert not out.exists() and not list(tmp_path.glob(".out.tif*"))


def test_a_checkpoint_whose_header_lies_is_refused_in_one_line(tmp_path, capsys):
    config, canvas = GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(64, 96)
    ckpt = tmp_path / "model.safetensors"
    write_checkpoint(ckpt, tiny_model(config, canvas))
    blob = bytearray(ckpt.read_bytes())
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + size])
    famos = json.loads(header["__metadata__"]["famos"])
    famos["generator"]["width"] = 8  # the tensors are width 4
    header["__metadata__"]["famos"] = json.dumps(famos)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (tmp_path / "lying.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(blob[8 + size :]))
    rc = main(["export", str(tmp_path / "lying.safetensors"), "--out", str(tmp_path / "bundle")])
    one_line(capsys, rc, "its header does not describe its tensors")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("option, value, fragment", [
    ("--dpi", "inf", "dpi: must be a number from 1 to 100000"),
    ("--dpi", "1e-300", "dpi: must be a number from 1 to 100000"),
    ("--dpi", "nan", "dpi"),
    ("--quality", "0", "quality"),
    ("--tile", "100", "tile"),
    ("--size", "0x10", "size"),
    ("--scale", "inf", "scale"),
    ("--chunk", "3", "chunk"),
    ("--size", "300000x300000", "over the limit of"),
])
def test_render_numbers_out_of_range_are_one_line(bundle, tmp_path, capsys, option, value, fragment):
    out = tmp_path / "out.tif"
    one_line(capsys, main(["render", str(bundle), "--out", str(out), "--quiet", option, value]), fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_render_that_cannot_fit_on_the_disk_is_refused_before_it_starts(bundle, tmp_path, capsys, monkeypatch):
    import collections
    import shutil as shutil_module

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    out = tmp_path / "big.tif"
    rc = main(["render", str(bundle), "--out", str(out), "--quiet", "--size", "4000x3000", "--compression", "none"])
    one_line(capsys, rc, "the file needs about 38 MB, 1 MB are free there")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value, fragment", [
    ("--canvas", "1x1", "smaller than the 64 px training patch"),
    ("--canvas", "100000x100000", "over the limit of 1,074 MP"),
    ("--scale", "1000", "over the limit of"),
    ("--lr", "nan", "--lr nan: must be a finite number"),
    ("--lr", "-1", "--lr -1.0"),
    ("--beta1", "2", "--beta1"),
    ("--content-weight", "inf", "--content-weight"),
])
def test_training_numbers_out_of_range_are_one_line(tmp_path, capsys, option, value, fragment):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--steps", "1", "--out", str(out), "--quiet", option, value])
    one_line(capsys, rc, fragment)
    assert not out.exists()


def without_famos_metadata(folder) -> None:
    """generator.safetensors with its famos metadata stripped, and the manifest re-hashed to match."""
    from famos.files import file_sha256

    weights = folder / "generator.safetensors"
    blob = weights.read_bytes()
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + size])
    del header["__metadata__"]["famos"]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    weights.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + size :])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["generator.safetensors"] = {"sha256": file_sha256(weights), "bytes": weights.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit", [lambda m: None, lambda m: m["spec"]["canvas"].update(height=999)],
                         ids=["unedited", "edited-manifest"])
def test_weights_without_famos_metadata_are_refused_in_one_line(bundle, tmp_path, capsys, edit):
    from famos.bundle import load_bundle
    from famos.errors import BundleError

    folder = tmp_path / "stripped"
    shutil.copytree(tampered(bundle, tmp_path, edit), folder)
    without_famos_metadata(folder)
    with pytest.raises(BundleError, match="generator.safetensors: no famos metadata"):
        load_bundle(folder)
    out = tmp_path / "out.tif"
    one_line(capsys, main(["render", str(folder), "--out", str(out), "--quiet"]), "no famos metadata")
    assert not out.exists()
    one_line(capsys, main(["inspect", str(folder)]), "no famos metadata")
