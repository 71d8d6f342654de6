"""No output ever replaces an input or an unrelated file: renders, previews, downloads, batch rows,
exports. Each refusal is one line naming the option, and the file it would have hit is untouched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from conftest import SERVER_MODEL
from famos.cli import main


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    return err


@pytest.fixture
def content(tmp_path):
    path = tmp_path / "content.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def test_render_refuses_its_inputs_the_bundle_and_existing_files(models, content, tmp_path, capsys):
    bundle = models / SERVER_MODEL
    before = {p.name: digest(p) for p in bundle.iterdir() if p.is_file()}
    kept = digest(content)
    render = ["render", str(bundle), "--quiet"]
    one_line(capsys, main([*render, "--out", str(content.with_suffix(".png")), "--content", str(content)]),
             "--out", "also an input")
    one_line(capsys, main([*render, "--out", str(bundle / "content.png")]), "inside the bundle")
    out = tmp_path / "o.tif"
    one_line(capsys, main([*render, "--out", str(out), "--preview", str(out)]), "--preview", "also an input")
    assert not out.exists()
    assert main([*render, "--out", str(out)]) == 0
    made = digest(out)
    capsys.readouterr()
    one_line(capsys, main([*render, "--out", str(out), "--seed", "1"]), "exists", "--overwrite")
    assert digest(out) == made
    assert main([*render, "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    assert digest(content) == kept
    assert {p.name: digest(p) for p in bundle.iterdir() if p.is_file()} == before


def test_client_checks_its_output_before_it_calls_the_server(models, tmp_path, capsys):
    """No server listens at port 1: the refusal comes first, and nothing is replaced."""
    graph = models / SERVER_MODEL / "model.onnx"
    kept = digest(graph)
    client = ["client", "--server", "127.0.0.1:1"]
    one_line(capsys, main([*client, "download", "0" * 32, "--out", str(graph)]), "inside the bundle")
    existing = tmp_path / "mine.tif"
    existing.write_bytes(b"a file of the user's")
    one_line(capsys, main([*client, "download", "0" * 32, "--out", str(existing)]), "exists")
    one_line(capsys, main([*client, "render", SERVER_MODEL, "--out", str(existing)]), "exists")
    assert digest(graph) == kept and existing.read_bytes() == b"a file of the user's"


def test_a_batch_row_never_writes_over_its_content_or_a_file_it_did_not_make(models, content, tmp_path, capsys):
    out = tmp_path / "prints"
    out.mkdir()
    own = out / "content.tif"  # the row's content lies in --out under the row's output name
    Image.open(content).save(own)
    kept = own.read_bytes()
    stranger = out / "poster.tif"
    stranger.write_bytes(b"someone else's print")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("model,output,content,dpi\n"
                    f"{SERVER_MODEL},content.tif,{own},100\n"
                    f"{SERVER_MODEL},poster.tif,,100\n"
                    f"{SERVER_MODEL},fresh.tif,,100\n")
    code = main(["batch", str(jobs), "--out", str(out), "--bundles", str(models), "--quiet"])
    assert code != 0
    assert own.read_bytes() == kept and stranger.read_bytes() == b"someone else's print"
    assert (out / "fresh.tif").is_file()
    capsys.readouterr()
    assert main(["batch", str(jobs), "--out", str(out), "--bundles", str(models), "--quiet", "--overwrite"]) != 0
    assert own.read_bytes() == kept  # an input stays an input, --overwrite or not
    assert stranger.read_bytes() != b"someone else's print"
