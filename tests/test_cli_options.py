"""Command-line options that had no test of their own, driven only through `famos ...`:

render  --precision fp16 --workers --tiff-workers --quality --no-icc
export  --content --no-diagnostics --onnx-exporter dynamo
client  submit [--watch], watch, cancel, jobs, download (against `famos serve` in a subprocess)
serve   --tls-cert/--tls-key
batch   --server

Every check reads the results back with independent readers (tifffile, PIL, onnx, json, hashlib)
and compares them with other runs of the command line, so the tests survive moves of the modules
behind `famos.cli`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import pathlib
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
tifffile = pytest.importorskip("tifffile")

from conftest import SERVER_MODEL, tiny_model, write_checkpoint  # noqa: E402
from PIL import Image  # noqa: E402

from famos.cli import main  # noqa: E402
from famos.config import CanvasConfig, Fold, GeneratorConfig, NoiseConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
ICC_TAG = 34675
# The architecture and canvas of the session `models` bundle (conftest), for this file's own exports.
CONFIG = GeneratorConfig(depth=2, width=4, n_templates=2, noise=NoiseConfig(n_local=1, n_periodic=1))
CANVAS = CanvasConfig(96, 160, fold=Fold.MIRROR, template_seed=2)


def famos(capsys, *args) -> tuple[int, str, str]:
    """`famos ARGS` in this process: exit status, stdout, stderr."""
    capsys.readouterr()  # drop whatever came before
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def one_line_error(err: str, *fragments: str) -> None:
    err = err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "error:" in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def render(bundle, out, *args) -> np.ndarray:
    assert main(["render", str(bundle), "--out", str(out), "--quiet", *map(str, args)]) == 0
    return tifffile.imread(out)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(source, out, *args) -> pathlib.Path:
    assert main(["export", str(source), "--out", str(out), *map(str, args)]) == 0
    return pathlib.Path(out)


# --- famos render ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(models) -> pathlib.Path:
    return models / SERVER_MODEL


@pytest.fixture(scope="module")
def lossless(bundle, tmp_path_factory) -> np.ndarray:
    """The reference render (seed 3, default options): what every lossless variant must equal."""
    return render(bundle, tmp_path_factory.mktemp("reference") / "reference.tif", "--seed", 3)


def test_render_quality_trades_jpeg_size_for_error(bundle, lossless, tmp_path, capsys):
    sizes, errors, data = {}, {}, {}
    for quality in (10, 50, 95):
        out = tmp_path / f"q{quality}.tif"
        image = render(bundle, out, "--seed", 3, "--compression", "jpeg", "--quality", quality, "--tile", 32)
        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
        assert image.shape == lossless.shape
        sizes[quality], data[quality] = out.stat().st_size, out.read_bytes()
        errors[quality] = float(np.abs(image.astype(np.int16) - lossless).mean())
    assert sizes[10] < sizes[50] < sizes[95], sizes
    assert errors[10] > errors[50] > errors[95] > 0, errors  # lossy, less so at higher quality
    assert len(set(data.values())) == 3
    # --quality is for JPEG only: other compressions are not affected by it
    plain, ignored = tmp_path / "plain.tif", tmp_path / "ignored.tif"
    render(bundle, plain, "--seed", 3)
    render(bundle, ignored, "--seed", 3, "--quality", 10)
    assert plain.read_bytes() == ignored.read_bytes()
    for bad in (0, 101):
        rc, _, err = famos(capsys, "render", bundle, "--out", tmp_path / "bad.tif", "--quiet",
                           "--compression", "jpeg", "--quality", bad)
        assert rc == 2
        one_line_error(err, "quality")
    assert not (tmp_path / "bad.tif").exists()


def test_render_no_icc_drops_the_profile_and_nothing_else(bundle, lossless, tmp_path):
    with_icc, without = tmp_path / "icc.tif", tmp_path / "no-icc.tif"
    render(bundle, with_icc, "--seed", 3)
    render(bundle, without, "--seed", 3, "--no-icc")
    with tifffile.TiffFile(with_icc) as tif:
        profile = tif.pages[0].tags[ICC_TAG].value
        assert b"sRGB" in profile or b"s\x00R\x00G\x00B" in profile
    with tifffile.TiffFile(without) as tif:
        page = tif.pages[0]
        assert ICC_TAG not in page.tags
        assert np.array_equal(page.asarray(), lossless)
    assert without.stat().st_size < with_icc.stat().st_size - len(profile) // 2


def test_render_tiff_workers_give_byte_identical_files(bundle, lossless, tmp_path, capsys):
    for compression in ("zstd", "jpeg"):
        files = []
        for workers in (1, 3):
            out = tmp_path / f"{compression}-{workers}.tif"
            render(bundle, out, "--seed", 3, "--tile", 16, "--compression", compression, "--tiff-workers", workers)
            files.append(out.read_bytes())
        assert files[0] == files[1], compression
    assert np.array_equal(tifffile.imread(tmp_path / "zstd-3.tif"), lossless)
    rc, _, err = famos(capsys, "render", bundle, "--out", tmp_path / "bad.tif", "--quiet", "--tiff-workers", -1)
    assert rc == 2
    one_line_error(err, "tiff-workers")


def test_render_workers_give_identical_pixels(bundle, lossless, tmp_path):
    one = render(bundle, tmp_path / "w1.tif", "--seed", 3, "--chunk", 32, "--workers", 1)
    three = render(bundle, tmp_path / "w3.tif", "--seed", 3, "--chunk", 32, "--workers", 3)
    assert np.array_equal(one, three) and np.array_equal(one, lossless)  # 15 chunks, any order of preparation
    assert (tmp_path / "w1.tif").read_bytes() == (tmp_path / "w3.tif").read_bytes()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    """A training checkpoint of a tiny random-weight generator (the `models` architecture)."""
    path = tmp_path_factory.mktemp("checkpoint") / "model.safetensors"
    write_checkpoint(path, tiny_model(CONFIG, CANVAS, seed=4))
    return path


@pytest.fixture(scope="module")
def plain_bundle(checkpoint, tmp_path_factory) -> pathlib.Path:
    return export(checkpoint, tmp_path_factory.mktemp("plain") / "bundle")


@pytest.fixture(scope="module")
def fp16_bundle(checkpoint, tmp_path_factory) -> pathlib.Path:
    return export(checkpoint, tmp_path_factory.mktemp("fp16") / "bundle", "--fp16")


def test_render_fp16_is_within_the_manifest_tolerance(fp16_bundle, plain_bundle, tmp_path, capsys):
    manifest = json.loads((fp16_bundle / "manifest.json").read_text())
    assert manifest["fp16_file"] == "model_fp16.onnx" and (fp16_bundle / "model_fp16.onnx").is_file()
    tolerance = manifest["fp16_tolerance"]
    assert 0 < tolerance < 0.1
    full = render(fp16_bundle, tmp_path / "fp32.tif", "--seed", 1)
    # exporting the extra graph leaves the float32 one as it was
    assert np.array_equal(full, render(plain_bundle, tmp_path / "plain.tif", "--seed", 1))
    half = render(fp16_bundle, tmp_path / "fp16.tif", "--seed", 1, "--precision", "fp16")
    assert half.shape == full.shape
    diff = np.abs(half.astype(np.int16) - full)
    # the graph's stated tolerance is on [-1, 1] values: 127.5 levels per unit, plus rounding
    assert diff.max() <= math.ceil(tolerance * 127.5) + 1, diff.max()
    assert diff.max() >= 1, "--precision fp16 rendered exactly the float32 pixels: the half graph did not run"
    assert diff.mean() < 0.5
    # a bundle exported without --fp16 has no half graph: one line, no file
    out = tmp_path / "none.tif"
    rc, _, err = famos(capsys, "render", plain_bundle, "--out", out, "--quiet", "--precision", "fp16")
    assert rc == 2 and not out.exists()
    one_line_error(err, "fp16")


# --- famos export ---------------------------------------------------------------------------------


def test_export_content_becomes_the_default_content(checkpoint, plain_bundle, tmp_path):
    image = np.random.default_rng(11).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "content.png")
    bundle = export(checkpoint, tmp_path / "bundle", "--content", tmp_path / "content.png")
    assert np.array_equal(np.asarray(Image.open(bundle / "content.png").convert("RGB")), image)
    default_content = np.asarray(Image.open(plain_bundle / "content.png").convert("RGB"))
    assert default_content.shape != image.shape or not np.array_equal(default_content, image)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files"]["content.png"]["sha256"] == sha256(bundle / "content.png")
    new_default = render(bundle, tmp_path / "new-default.tif", "--seed", 2)
    assert not np.array_equal(new_default, render(plain_bundle, tmp_path / "old-default.tif", "--seed", 2))
    # the same as giving the image to `famos render --content`
    assert np.array_equal(
        new_default, render(plain_bundle, tmp_path / "explicit.tif", "--seed", 2, "--content", tmp_path / "content.png")
    )


def test_export_no_diagnostics_outputs_only_the_image(checkpoint, plain_bundle, tmp_path):
    onnx = pytest.importorskip("onnx")
    bundle = export(checkpoint, tmp_path / "bundle", "--no-diagnostics")
    assert [o.name for o in onnx.load(str(bundle / "model.onnx")).graph.output] == ["image"]
    assert [o.name for o in onnx.load(str(plain_bundle / "model.onnx")).graph.output] == ["image", "alpha", "mix_argmax"]
    assert [o["name"] for o in json.loads((bundle / "manifest.json").read_text())["outputs"]] == ["image"]
    # the image itself is unchanged, on the ONNX and the TorchScript graph
    # onnxruntime's float32: the backends below compute it to the byte (the CPU's default, OpenVINO, may not)
    reference = render(plain_bundle, tmp_path / "reference.tif", "--seed", 5, "--backend", "onnx", "--precision", "fp32")
    for backend in ("onnx", "torchscript"):
        image = render(bundle, tmp_path / f"{backend}.tif", "--seed", 5, "--backend", backend)
        assert np.array_equal(image, reference), backend


def test_export_with_the_dynamo_exporter_renders_like_the_tracer(tmp_path):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    # the smallest model there is: torch.export's cost does not depend on it much, but keep it low
    config = GeneratorConfig(depth=1, width=2, kernel=3, n_templates=1, noise=NoiseConfig(n_local=1))
    canvas = CanvasConfig(24, 40, template_seed=1)
    write_checkpoint(tmp_path / "model.safetensors", tiny_model(config, canvas, seed=2))
    tracer = export(tmp_path / "model.safetensors", tmp_path / "tracer")
    dynamo = export(tmp_path / "model.safetensors", tmp_path / "dynamo", "--onnx-exporter", "dynamo")
    exporters = {name: json.loads((b / "manifest.json").read_text())["export"]["onnx_exporter"]
                 for name, b in (("tracer", tracer), ("dynamo", dynamo))}
    assert "dynamo=True" in exporters["dynamo"] and "dynamo=False" in exporters["tracer"], exporters
    graph = onnx.load(str(dynamo / "model.onnx"))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["content", "origin", "canvas", "noise"]
    assert (dynamo / "model.onnx").read_bytes() != (tracer / "model.onnx").read_bytes()
    for seed in (0, 7):
        assert np.array_equal(render(dynamo, tmp_path / f"d{seed}.tif", "--seed", seed, "--chunk", 16),
                              render(tracer, tmp_path / f"t{seed}.tif", "--seed", seed, "--chunk", 16)), seed


# --- famos serve / famos client -------------------------------------------------------------------


@contextlib.contextmanager
def serve(models: pathlib.Path, store: pathlib.Path, *extra):
    """`famos serve --port 0` in a subprocess; yields its port; SIGTERM (then kill) on the way out."""
    log = store.parent / f"{store.name}-serve.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "famos.cli", "serve", "--models", str(models), "--output", str(store),
             "--host", "127.0.0.1", "--port", "0", "--grace", "1", *map(str, extra)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO,
        )
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = ""
        if "listening on" not in line:
            pytest.fail(f"famos serve did not start: {line!r}\n{log.read_text()}")
        host_port = line.rsplit("listening on", 1)[1].strip()
        assert host_port.startswith("127.0.0.1:"), line
        yield int(host_port.rsplit(":", 1)[1])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """One plaintext `famos serve` for the module: (HOST:PORT, its output store)."""
    pytest.importorskip("grpc")
    store = tmp_path_factory.mktemp("store")
    with serve(models, store, "--job-workers", 1) as port:
        yield f"127.0.0.1:{port}", store


def client(capsys, address: str, *args) -> tuple[int, str, str]:
    return famos(capsys, "client", "--server", address, *args)


def test_client_submit_watch_jobs_download(server, bundle, tmp_path, capsys):
    address, store = server
    rc, out, _ = client(capsys, address, "models")
    assert rc == 0 and [m["name"] for m in json_lines(out)] == [SERVER_MODEL]

    options = ["--seed", "6", "--chunk", "32", "--compression", "lzw", "--dpi", "240"]
    rc, out, _ = client(capsys, address, "submit", SERVER_MODEL, "--name", "watched.tif", "--watch", *options)
    assert rc == 0
    states = json_lines(out)
    job_id = states[0]["id"]
    assert len(states) >= 2 and {s["id"] for s in states} == {job_id}
    assert states[0]["state"] in ("queued", "running") and states[-1]["state"] == "succeeded"
    assert [s["strips_done"] for s in states] == sorted(s["strips_done"] for s in states)
    final = states[-1]
    assert final["output_name"] == "watched.tif" and final["strips_done"] == final["strips_total"] == 3
    assert final["sha256"] == sha256(store / "watched.tif")

    rc, out, _ = client(capsys, address, "jobs", "--json")
    listed = {j["id"]: j for j in json_lines(out)}
    assert rc == 0 and listed[job_id]["state"] == "succeeded" and listed[job_id]["output_name"] == "watched.tif"

    downloaded = tmp_path / "downloaded.tif"
    rc, out, _ = client(capsys, address, "download", job_id, "--out", downloaded)
    (report,) = json_lines(out)
    assert rc == 0 and report["path"] == str(downloaded)
    assert report["sha256"] == final["sha256"] == sha256(downloaded)
    assert report["bytes"] == final["size_bytes"] == downloaded.stat().st_size
    # the submitted options reached the file: the same TIFF as `famos render` with them, byte for byte
    local = tmp_path / "local.tif"
    render(bundle, local, *options)
    assert downloaded.read_bytes() == local.read_bytes()
    with tifffile.TiffFile(downloaded) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
        assert tif.pages[0].tags["XResolution"].value == (240, 1)


def test_client_watch_follows_a_submitted_job(server, capsys):
    address, store = server
    rc, out, _ = client(capsys, address, "submit", SERVER_MODEL, "--seed", "8", "--chunk", "16")
    (job,) = json_lines(out)  # without --watch: the job as queued, and back
    assert rc == 0 and job["state"] in ("queued", "running", "succeeded") and job["strips_total"] == 6
    assert job["output_name"] == f"{job['id']}.tif"  # the default name
    rc, out, _ = client(capsys, address, "watch", job["id"])
    states = json_lines(out)
    assert rc == 0 and states[-1]["state"] == "succeeded" and states[-1]["strips_done"] == 6
    assert sha256(store / job["output_name"]) == states[-1]["sha256"]
    # watching a final job prints it once and returns at once
    rc, out, _ = client(capsys, address, "watch", job["id"])
    assert rc == 0 and [s["state"] for s in json_lines(out)] == ["succeeded"]
    rc, _, err = client(capsys, address, "watch", "f" * 32)
    assert rc == 2
    one_line_error(err, "NOT_FOUND")


def test_client_cancel_of_an_unfinished_job(server, tmp_path, capsys):
    """Jobs run one at a time on this server: the last of a few just submitted is still waiting."""
    address, store = server
    for attempt in range(5):
        ids = []
        for i in range(4):
            rc, out, _ = client(capsys, address, "submit", SERVER_MODEL, "--seed", str(i), "--chunk", "16",
                                "--pyramid", "--tile", "16")
            assert rc == 0
            ids.append(json_lines(out)[0]["id"])
        rc, out, err = client(capsys, address, "cancel", ids[-1])
        if rc == 0:
            break
        one_line_error(err, "already succeeded")  # the server was quicker than us: try again
    else:
        pytest.fail("could not catch a job before it finished in 5 attempts")
    (cancelled,) = json_lines(out)
    assert cancelled["id"] == ids[-1] and cancelled["state"] == "cancelled"
    assert cancelled["strips_rendered"] < cancelled["strips_total"] and cancelled["size_bytes"] == 0
    # final: watch says so and exits 1, there is nothing to download, and no file in the store
    rc, out, _ = client(capsys, address, "watch", ids[-1])
    assert rc == 1 and json_lines(out)[-1]["state"] == "cancelled"
    rc, _, err = client(capsys, address, "download", ids[-1], "--out", tmp_path / "x.tif")
    assert rc == 2 and not (tmp_path / "x.tif").exists()
    one_line_error(err, "FAILED_PRECONDITION")
    assert not (store / cancelled["output_name"]).exists()
    rc, out, _ = client(capsys, address, "jobs", "--json")
    assert {j["id"]: j["state"] for j in json_lines(out)}[ids[-1]] == "cancelled"
    # the others were not affected
    for job_id in ids[:-1]:
        rc, out, _ = client(capsys, address, "watch", job_id)
        assert rc == 0 and json_lines(out)[-1]["state"] == "succeeded"


def test_client_cancel_of_a_succeeded_job_is_refused(server, capsys):
    address, store = server
    rc, out, _ = client(capsys, address, "submit", SERVER_MODEL, "--name", "kept.tif", "--watch")
    assert rc == 0
    job = json_lines(out)[-1]
    assert job["state"] == "succeeded"
    rc, out, err = client(capsys, address, "cancel", job["id"])
    assert rc == 2 and out == ""
    one_line_error(err, "FAILED_PRECONDITION", "already succeeded")
    rc, out, _ = client(capsys, address, "jobs", "--json")
    assert {j["id"]: j["state"] for j in json_lines(out)}[job["id"]] == "succeeded"
    assert sha256(store / "kept.tif") == job["sha256"]  # the file is still there


# --- famos serve --tls-cert/--tls-key -------------------------------------------------------------


def test_serve_with_tls(models, bundle, certificate, tmp_path, capsys):
    pytest.importorskip("grpc")
    cert, key = certificate
    store = tmp_path / "store"
    store.mkdir()
    rc, _, err = famos(capsys, "serve", "--models", models, "--output", store, "--port", 0, "--tls-cert", cert)
    assert rc == 2
    one_line_error(err, "--tls-key")
    with serve(models, store, "--tls-cert", cert, "--tls-key", key) as port:
        rc, out, _ = client(capsys, f"localhost:{port}", "--tls-ca", cert, "models")
        assert rc == 0 and [m["name"] for m in json_lines(out)] == [SERVER_MODEL]
        out_file = tmp_path / "tls.tif"
        rc, _, _ = client(capsys, f"localhost:{port}", "--tls-ca", cert, "render", SERVER_MODEL,
                          "--out", out_file, "--seed", "3", "--quiet")
        assert rc == 0
        render(bundle, tmp_path / "local.tif", "--seed", 3)
        assert out_file.read_bytes() == (tmp_path / "local.tif").read_bytes()  # TLS carried it intact
        # a plaintext client cannot talk to it: a non-zero exit and one line, in its own process
        result = subprocess.run(
            [sys.executable, "-m", "famos.cli", "client", "--server", f"localhost:{port}", "models"],
            check=False, capture_output=True, text=True, cwd=REPO, timeout=60,
        )
        assert result.returncode != 0 and result.stdout == ""
        assert result.stderr.startswith("famos client: error:"), result.stderr
        one_line_error(result.stderr, "UNAVAILABLE")


# --- famos batch --server -------------------------------------------------------------------------

HEADER = "model,output,content,dpi,print_size,seed,compression,panels,panel_overlap\n"


def test_batch_through_the_server_equals_a_local_batch(server, models, tmp_path, capsys):
    address, _ = server
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(HEADER + f"{SERVER_MODEL},plain.tif,,150,,2,lzw,,\n"
                             f"{SERVER_MODEL},mural.tif,c.png,300,,5,,2x1,4px\n")
    rc, out, _ = famos(capsys, "batch", jobs, "--out", tmp_path / "remote", "--server", address, "--quiet")
    assert rc == 0, out
    rc, out, _ = famos(capsys, "batch", jobs, "--out", tmp_path / "local", "--bundles", models, "--quiet")
    assert rc == 0, out
    names = sorted(p.name for p in (tmp_path / "remote").glob("*.tif"))
    assert names == ["mural_r1c1.tif", "mural_r1c2.tif", "plain.tif"]
    assert sorted(p.name for p in (tmp_path / "local").glob("*.tif")) == names
    for name in names:
        remote, local = tmp_path / "remote" / name, tmp_path / "local" / name
        assert np.array_equal(tifffile.imread(remote), tifffile.imread(local)), name
        with tifffile.TiffFile(remote) as r, tifffile.TiffFile(local) as l:
            for tag in ("XResolution", "Compression", "ImageWidth", "ImageLength", ICC_TAG):
                assert r.pages[0].tags[tag].value == l.pages[0].tags[tag].value, (name, tag)
    with tifffile.TiffFile(tmp_path / "remote" / "plain.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
        assert tif.pages[0].tags["XResolution"].value == (150, 1)
    with open(tmp_path / "remote" / "batch-report.csv", newline="") as f:
        assert {row["status"] for row in csv.DictReader(f)} == {"done"}
    # the model column names the server's models: one it does not have fails before rendering
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "missing,x.tif,,150,,,,,\n")
    rc, _, err = famos(capsys, "batch", bad, "--out", tmp_path / "bad", "--server", address, "--quiet")
    assert rc == 2 and "missing" in err and not (tmp_path / "bad").exists()


def test_cluster_options_are_one_line_errors(bundle, tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.tif"
    rc, _, err = famos(capsys, "render", bundle, "--out", out, "--ray", "auto", "--ray-workers", -1)
    assert rc == 2
    one_line_error(err, "ray-workers")
    rc, _, err = famos(capsys, "render", bundle, "--out", out, "--ray", "auto", "--ray-cpus-per-worker", 0)
    assert rc == 2
    one_line_error(err, "ray-cpus-per-worker")
    monkeypatch.setitem(sys.modules, "ray", None)  # a machine without the cluster extra
    rc, _, err = famos(capsys, "render", bundle, "--out", out, "--ray", "auto", "--quiet")
    assert rc == 2
    one_line_error(err, "Ray is not installed", "famos[cluster]")
    assert not out.exists()


# --- every command: a mistaken option -------------------------------------------------------------

# What each command requires before argparse gets to the options (never read: parsing fails first).
REQUIRED = {
    "train": ["--out", "run"], "evaluate": ["checkpoint.safetensors"], "export": ["run", "--out", "bundle"],
    "inspect": ["bundle"], "render": ["bundle", "--out", "x.tif"], "batch": ["jobs.csv", "--out", "prints"],
    "serve": ["--models", "models", "--output", "store"], "view": ["x.tif"], "client": ["--server", "h:1", "models"],
}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_a_mistaken_option_is_one_line_pointing_at_help(command, capsys):
    from famos.cli import COMMANDS

    assert set(REQUIRED) == set(COMMANDS)  # a new command gets its line here
    rc, out, err = famos(capsys, command, *REQUIRED[command], "--no-such-option")
    assert rc == 2 and out == ""
    one_line_error(err, f"famos {command}: error: unrecognized arguments: --no-such-option")
    assert err.strip().endswith(f"(see famos {command} --help)"), err


def test_a_subcommand_error_points_at_the_subcommand_help(capsys):
    rc, _, err = famos(capsys, "client", "--server", "h:1", "render", "model", "--out", "x.tif", "--seed", "many")
    assert rc == 2
    one_line_error(err, "argument --seed: invalid int value: 'many'")
    assert err.strip().endswith("(see famos client render --help)"), err
    with pytest.raises(SystemExit) as done:  # --help still prints the full help and exits 0
        main(["client", "--server", "h:1", "render", "--help"])
    assert done.value.code == 0 and "--seed" in capsys.readouterr().out


def test_every_option_of_every_command_has_a_help_line(monkeypatch):
    """`famos X --help` explains each option it lists (subcommands included)."""
    import argparse
    import contextlib
    import importlib
    import io

    from famos.cli import COMMANDS

    parsers = {}

    def keep(self, file=None):
        parsers.setdefault(self.prog, self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", keep)
    for module, _ in COMMANDS.values():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            importlib.import_module(module).main(["--help"])
    assert len(parsers) == len(COMMANDS)

    def unexplained(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from unexplained(sub)
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                yield f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"

    missing = [name for parser in parsers.values() for name in unexplained(parser)]
    assert not missing, missing


def test_a_busy_port_is_named_on_one_line(tmp_path, capsys, models):
    """`famos serve` and `famos view` say which port is taken instead of grpcio's C-core log or a
    traceback from the HTTP server."""
    import socket

    import numpy as np
    import tifffile

    from famos.cli import main

    image = tmp_path / "tiled.tif"
    tifffile.imwrite(image, np.zeros((64, 64, 3), np.uint8), tile=(32, 32), photometric="rgb")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for argv in (["serve", "--models", str(models), "--output", str(tmp_path / "store"), "--port", port],
                     ["view", str(image), "--port", port, "--no-browser"]):
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if "error" in line]
            assert len(lines) == 1 and f"--port {port}" in lines[0] and "Traceback" not in err, err


def test_serve_creates_its_output_store(tmp_path, models):
    from famos.render_server.server import RenderServer, ServerConfig

    store = tmp_path / "new" / "store"
    server = RenderServer(ServerConfig(models=models, output=store, port=0))
    try:
        assert store.is_dir()
    finally:
        server.stop(0)
