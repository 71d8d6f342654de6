"""Hostile or careless inputs of the render side: one line each, never a hang, a traceback or an
exhausted machine (issue 24, items 5, 12, 13, 15)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import SERVER_MODEL
from famos.cli import main


def one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    return err


def test_an_output_profile_that_is_not_a_file_is_refused_before_reading(models, tmp_path, capsys):
    """--output-profile /dev/zero once read until the machine ran out of memory."""
    render = ["render", str(models / SERVER_MODEL), "--out", str(tmp_path / "o.tif"), "--quiet"]
    one_line(capsys, main([*render, "--output-profile", "/dev/zero"]), "output-profile", "not a regular file")
    huge = tmp_path / "huge.icc"
    with open(huge, "wb") as fh:
        fh.truncate(65 * 2**20)  # sparse: no disk used
    one_line(capsys, main([*render, "--output-profile", str(huge)]), "over the 64 MB")


def test_seeds_past_64_bits_are_one_line_at_every_door(models, tmp_path, capsys):
    seed = str(2**64 * 10)
    one_line(capsys, main(["render", str(models / SERVER_MODEL), "--out", str(tmp_path / "o.tif"), "--seed", seed]),
             "seed", "64 bits")
    # the client refuses before it sends (no server listens at port 1)
    one_line(capsys, main(["client", "--server", "127.0.0.1:1", "render", SERVER_MODEL, "--out",
                           str(tmp_path / "c.tif"), "--seed", seed]), "seed", "64 bits")


def test_ray_addresses_are_checked_and_an_absent_head_is_named_quickly(models, tmp_path, capsys):
    pytest.importorskip("ray")
    render = ["render", str(models / SERVER_MODEL), "--out", str(tmp_path / "o.tif"), "--quiet"]
    one_line(capsys, main([*render, "--ray", "http:/x::"]), "ray:", "HOST:PORT")
    start = time.monotonic()
    one_line(capsys, main([*render, "--ray", "127.0.0.1:1"]), "no Ray head answers")
    assert time.monotonic() - start < 30  # it once waited for Ray's own GCS timeout, minutes


def test_serve_refuses_a_grace_that_is_not_a_duration(capsys):
    one_line(capsys, main(["serve", "--models", ".", "--output", ".", "--grace", "nan"]), "--grace")


@pytest.mark.parametrize("name, text, needle", [
    ("long.csv", "model,output\n" + "m," + "x" * 200_000 + ".tif\n", "not a readable CSV"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_jobs_files_that_break_parsers_are_one_line(tmp_path, capsys, name, text, needle):
    jobs = tmp_path / name
    jobs.write_text(text)
    one_line(capsys, main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--check"]), needle)


def test_a_malformed_ledger_costs_a_re_render_not_a_traceback(models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "batch-manifest.json").write_text(json.dumps([1, 2, 3]))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"model,output,dpi\n{SERVER_MODEL},a.tif,100\n")
    assert main(["batch", str(jobs), "--out", str(out), "--bundles", str(models)]) == 0
    assert "ignoring unreadable" in capsys.readouterr().err


def test_the_batch_report_never_holds_a_formula(models, tmp_path):
    """A jobs file's names and messages reach batch-report.csv; a spreadsheet must show them as text."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"model,output,dpi,artist\n{SERVER_MODEL},=cmd.tif,100,x\n")
    out = tmp_path / "out"
    main(["batch", str(jobs), "--out", str(out), "--bundles", str(models), "--quiet"])
    report = (out / "batch-report.csv").read_text()
    assert "\n=" not in report and ",=" not in report and "'=cmd.tif" in report


def test_famos_serve_names_its_viewer_by_the_public_url(models, tmp_path):
    """Behind a proxy (or bound to 0.0.0.0) IIIF ids carry the address clients use, never a Host header."""
    from famos.render_server.server import RenderServer, ServerConfig

    server = RenderServer(ServerConfig(models=models, output=tmp_path, port=0, http_port=0,
                                       public_url="https://prints.example/viewer/"))
    server.start()
    try:
        assert server.viewer.url == "https://prints.example/viewer/"
    finally:
        server.stop(0)


def test_a_server_for_a_device_this_machine_lacks_does_not_start(models, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for backend in ("onnx", "torch"):
        code = main(["serve", "--models", str(models), "--output", str(tmp_path), "--port", "0",
                     "--device", "cuda", "--backend", backend])
        one_line(capsys, code, "device 'cuda'")


def test_export_refuses_a_preview_seed_past_64_bits(tmp_path, capsys):
    one_line(capsys, main(["export", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "b"),
                           "--preview-seed", str(2**70)]), "preview-seed")


def test_a_garbage_tls_pair_is_named_not_a_failure_to_listen(models, tmp_path, capsys):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("garbage\n")
    key.write_text("garbage\n")
    code = main(["serve", "--models", str(models), "--output", str(tmp_path), "--port", "0",
                 "--tls-cert", str(cert), "--tls-key", str(key)])
    one_line(capsys, code, "not a PEM certificate chain")


@pytest.mark.parametrize("chunk_type, prefix", [(b"iCCP", b"profile\0\0"), (b"zTXt", b"Comment\0\0")])
def test_png_chunk_bombs_are_one_line_as_content_and_as_style(models, tmp_path, capsys, chunk_type, prefix):
    """A 200 MB text or profile chunk compressed into 200 KB: Pillow refuses it, famos says so."""
    import io
    import struct
    import zlib

    from PIL import Image

    from famos.canvas import ImageError, load_rgb

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    body = prefix + zlib.compress(b"\0" * (200 * 2**20), 9)
    chunk = struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", zlib.crc32(chunk_type + body))
    at = data.index(b"IDAT") - 4
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(data[:at] + chunk + data[at:])
    code = main(["render", str(models / SERVER_MODEL), "--out", str(tmp_path / "o.tif"), "--content", str(bomb)])
    one_line(capsys, code, "bomb.png", "not a readable")
    with pytest.raises(ImageError, match="bomb.png"):
        load_rgb(bomb)  # how style images are read
