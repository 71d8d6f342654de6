"""Print-shop batch, end to end on a tiny exported bundle: files, tags, resume, failures, panels."""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
tifffile = pytest.importorskip("tifffile")

from conftest import tiny_model, write_checkpoint  # noqa: E402
from famos.config import CanvasConfig, GeneratorConfig, NoiseConfig  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
# The canvas of `famos train --preset tiny` (chelsea.png at scale 0.5), so the example jobs file's
# print sizes fit it; a random-weight model of a smaller architecture keeps the tests fast.
CANVAS = CanvasConfig(150, 226, template_seed=3)
CONFIG = GeneratorConfig(depth=3, width=8, n_templates=4, noise=NoiseConfig(n_local=2))
HEADER = "model,output,content,dpi,print_size,seed,compression,panels,panel_overlap\n"
ICC_TAG = 34675


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> pathlib.Path:
    """A folder holding one exported model as ``tiny`` and ``mosaic`` (the examples' name), as a server's models."""
    from famos.canvas import load_rgb
    from famos.cli import main as famos

    work = tmp_path_factory.mktemp("checkpoint")
    checkpoint = work / "tiny.safetensors"
    write_checkpoint(checkpoint, tiny_model(CONFIG, CANVAS, seed=5), content=load_rgb(EXAMPLES / "content" / "chelsea.png"))
    root = tmp_path_factory.mktemp("bundles")
    assert famos(["export", str(checkpoint), "--out", str(root / "tiny")]) == 0
    shutil.copytree(root / "tiny", root / "mosaic")  # the examples' model name
    return root


def batch(*args: object) -> int:
    from famos.cli import main as famos

    return famos(["batch", *map(str, args), "--chunk", "64", "--quiet"])


def report(out: pathlib.Path) -> dict[str, dict]:
    with open(out / "batch-report.csv", newline="") as f:
        return {row["output"]: row for row in csv.DictReader(f)}


def read(path: pathlib.Path) -> np.ndarray:
    return tifffile.imread(path)


def test_example_jobs_file_plans_real_print_sizes_from_one_model(bundles, capsys):
    """examples/jobs.csv: what print shops sell, all from one model (a 226x150 canvas here)."""
    assert batch(EXAMPLES / "jobs.csv", "--out", "unused", "--bundles", bundles, "--check") == 0
    plan = capsys.readouterr().out
    for expected in (
        "mosaic 3543x2362 px at 300.0 dpi = 30.0x20.0 cm",   # poster
        "mosaic 3543x2362 px at 150.0 dpi = 60.0x40.0 cm",   # print
        "mosaic 5906x3937 px at 100.0 dpi = 150.0x100.0 cm",  # 2-panel mural
        "mosaic 1772x1181 px at 300.0 dpi = 15.0x10.0 cm",   # card with its own content
    ):
        assert expected in plan
    assert "mural-150x100cm_r1c1.tif, mural-150x100cm_r1c2.tif" in plan


def test_example_jobs_render_with_print_conventions(bundles, tmp_path, capsys):
    """The example rows at a tenth of their DPI (the same structure, 0.5 MP in all): files, tags,
    panels and the report's pixels, DPI, print size, bytes and time."""
    rows = (EXAMPLES / "jobs.csv").read_text().splitlines()
    header = rows[0].split(",")
    dpi_column = header.index("dpi")
    small = [rows[0]]
    for row in rows[1:]:
        cells = row.split(",")
        cells[dpi_column] = str(int(cells[dpi_column]) // 10)
        small.append(",".join(cells))
    (tmp_path / "examples").mkdir()
    jobs = tmp_path / "examples" / "jobs.csv"
    jobs.write_text("\n".join(small) + "\n")
    shutil.copytree(EXAMPLES / "style", tmp_path / "examples" / "style")
    out = tmp_path / "prints"
    assert batch(jobs, "--out", out, "--bundles", bundles, "--min-dpi", "10") == 0
    summary = capsys.readouterr().out
    assert "4 jobs: 4 done, 0 skipped, 0 failed" in summary and "30.0x20.0" in summary, summary
    files = sorted(p.name for p in out.glob("*.tif"))
    assert files == ["card-gravel-15x10cm.tif", "mural-150x100cm_r1c1.tif", "mural-150x100cm_r1c2.tif",
                     "poster-30x20cm-300dpi.tif", "print-60x40cm-150dpi.tif"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial files left
    rows = report(out)
    assert {r["status"] for r in rows.values()} == {"done"}
    poster = rows["poster-30x20cm-300dpi.tif"]
    # the DPI that prints exactly 30 x 20 cm with whole pixels (30 asked for)
    assert (poster["width"], poster["height"], poster["dpi"]) == ("354", "236", "29.97")
    assert (poster["print_width_cm"], poster["print_height_cm"]) == ("30.0", "20.0")
    assert int(poster["bytes"]) == (out / "poster-30x20cm-300dpi.tif").stat().st_size
    assert float(poster["seconds"]) > 0
    data = json.loads((out / "batch-report.json").read_text())
    assert data["summary"]["ok"] and data["summary"]["done"] == 4

    with tifffile.TiffFile(out / "poster-30x20cm-300dpi.tif") as tif:
        page = tif.pages[0]
        assert not tif.is_bigtiff  # classic TIFF under 4 GB
        assert page.shape == (236, 354, 3) and page.dtype == np.uint8 and page.photometric == tifffile.PHOTOMETRIC.RGB
        # a print size in cm: tags in cm, 354 px over exactly 30 cm
        assert page.tags["XResolution"].value == (59, 5) and page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        icc = page.tags[ICC_TAG].value
        assert b"sRGB" in icc or b"s\x00R\x00G\x00B" in icc
    with tifffile.TiffFile(out / "card-gravel-15x10cm.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
        assert tif.pages[0].shape == (118, 177, 3)  # 15x10 cm at 30 dpi
    left, right = (read(out / f"mural-150x100cm_r1c{c}.tif") for c in (1, 2))
    assert left.shape == right.shape and left.shape[0] == 394  # equal panels, 150x100 cm at 30 dpi


def test_resume_skips_verified_outputs_and_rerenders_a_corrupted_one(bundles, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(HEADER + "x/tiny,a.tif,,150,,1,,,\nx/tiny,b.tif,,150,,2,,,\nx/tiny,c.tif,,150,,3,,,\n")
    out = tmp_path / "out"
    assert batch(jobs, "--out", out, "--bundles", bundles) == 0
    first = {name: (out / name).read_bytes() for name in ("a.tif", "b.tif", "c.tif")}
    manifest = json.loads((out / "batch-manifest.json").read_text())["outputs"]
    assert set(manifest) == set(first) and manifest["a.tif"]["bytes"] == len(first["a.tif"])

    assert batch(jobs, "--out", out, "--bundles", bundles) == 0
    assert {r["status"] for r in report(out).values()} == {"skipped"}

    damaged = bytearray(first["b.tif"])
    damaged[-100] ^= 0xFF  # same size, different checksum
    (out / "b.tif").write_bytes(bytes(damaged))
    (out / "c.tif").unlink()
    assert batch(jobs, "--out", out, "--bundles", bundles) == 0
    statuses = {name: r["status"] for name, r in report(out).items()}
    assert statuses == {"a.tif": "skipped", "b.tif": "done", "c.tif": "done"}
    # rendering is deterministic: the repaired files equal the first run's
    assert all((out / name).read_bytes() == data for name, data in first.items())

    # a changed row (new seed) is not vouched for by the old manifest entry
    jobs.write_text(HEADER + "x/tiny,a.tif,,150,,9,,,\nx/tiny,b.tif,,150,,2,,,\nx/tiny,c.tif,,150,,3,,,\n")
    assert batch(jobs, "--out", out, "--bundles", bundles) == 0
    assert report(out)["a.tif"]["status"] == "done"


def test_an_interrupted_job_leaves_no_file_and_the_rerun_finishes(bundles, tmp_path):
    from famos.clients.batch.engines import LocalEngine
    from famos.clients.batch.jobs_file import BatchSettings, load_jobs
    from famos.clients.batch.run import run_batch
    from famos.chunk_loop import RenderSettings

    jobs_file = tmp_path / "jobs.csv"
    jobs_file.write_text(HEADER + "x/tiny,first.tif,,150,,0,,,\nx/tiny,second.tif,,150,,1,,,\n")
    out = tmp_path / "out"
    settings = BatchSettings(out=out, bundles=bundles)
    engine = LocalEngine(chunk=64)
    jobs = load_jobs(jobs_file, engine=engine, settings=settings)
    renderer = engine.renderer(jobs[0].model)
    n_chunks = len(renderer.task(RenderSettings(chunk=64)).plan.chunks)
    run, calls = renderer.run, 0

    def ctrl_c_during_the_second_job(*inputs):
        nonlocal calls
        calls += 1
        if calls == n_chunks + 3:
            raise KeyboardInterrupt
        return run(*inputs)

    renderer.run = ctrl_c_during_the_second_job
    with pytest.raises(KeyboardInterrupt):
        run_batch(jobs, engine=engine, settings=settings)
    assert (out / "first.tif").is_file()
    assert not (out / "second.tif").exists()
    assert sorted(p.name for p in out.iterdir()) == ["batch-manifest.json", "first.tif"]  # no partial file
    assert set(json.loads((out / "batch-manifest.json").read_text())["outputs"]) == {"first.tif"}

    renderer.run = run
    report = run_batch(jobs, engine=engine, settings=settings)
    assert [r.status.value for r in report.results] == ["skipped", "done"]
    assert read(out / "second.tif").shape == (150, 226, 3)


def test_one_failing_job_does_not_stop_the_others(bundles, tmp_path, capsys):
    chelsea = (EXAMPLES / "content" / "chelsea.png").read_bytes()
    # a valid PNG header with the image data cut off: passes validation, fails when decoded
    (tmp_path / "truncated.png").write_bytes(chelsea[: len(chelsea) // 3])
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(HEADER + "x/tiny,a.tif,,150,,,,,\nx/tiny,broken.tif,truncated.png,150,,,,,\nx/tiny,c.tif,,150,,,,,\n")
    out = tmp_path / "out"
    assert batch(jobs, "--out", out, "--bundles", bundles) == 1
    rows = report(out)
    assert [rows[n]["status"] for n in ("a.tif", "broken.tif", "c.tif")] == ["done", "failed", "done"]
    assert "truncated.png" in rows["broken.tif"]["error"]
    assert not (out / "broken.tif").exists()
    assert "1 failed" in capsys.readouterr().out


def test_bad_jobs_file_renders_nothing(bundles, tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(HEADER + "x/tiny,a.tif,,150,,,,,\nx/tiny,b.tif,,50,,,,,\nx/missing,c.tif,,150,,,,,\n")
    out = tmp_path / "out"
    assert batch(jobs, "--out", out, "--bundles", bundles) == 2
    err = capsys.readouterr().err
    assert "row 3, dpi" in err and "row 4, model" in err
    assert not out.exists()


def test_panels_equal_crops_of_the_full_render(bundles, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(HEADER + "x/tiny,full.tif,,100,,4,,,\nx/tiny,mural.tif,,100,,4,,3x2,10px\n")
    out = tmp_path / "out"
    assert batch(jobs, "--out", out, "--bundles", bundles) == 0
    full = read(out / "full.tif")
    from famos.units import panel_grid

    panels = panel_grid(height=150, width=226, cols=3, rows=2, overlap=10)
    for panel in panels:
        image = read(out / f"mural_r{panel.row}c{panel.col}.tif")
        r = panel.rect
        assert np.array_equal(image, full[r.y : r.bottom, r.x : r.right]), (panel.row, panel.col)
    # neighbours really share 10 px of the print
    assert panels[1].rect.x == panels[0].rect.right - 10


def test_a_murals_panels_decode_their_content_image_once(bundles, tmp_path, monkeypatch):
    """Six panels of one content image: one decode, not six (a large content image once took six
    times its decode time and peak memory per mural)."""
    import famos.request
    from PIL import Image

    Image.fromarray(np.full((60, 90, 3), 120, np.uint8)).save(tmp_path / "content.png")
    decoded = []
    decode = famos.request.decode_rgb
    monkeypatch.setattr(famos.request, "decode_rgb", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(HEADER + f"x/tiny,mural.tif,{tmp_path / 'content.png'},100,,4,,3x2,10px\n")
    assert batch(jobs, "--out", tmp_path / "out", "--bundles", bundles) == 0
    assert len(list((tmp_path / "out").glob("mural_r*c*.tif"))) == 6
    assert len(decoded) == 1


def test_toml_example_matches_the_csv_example(bundles, tmp_path):
    from famos.clients.batch.engines import LocalEngine
    from famos.clients.batch.jobs_file import BatchSettings, load_jobs

    engine = LocalEngine()
    settings = BatchSettings(out=tmp_path, bundles=bundles)
    from_csv = load_jobs(EXAMPLES / "jobs.csv", engine=engine, settings=settings)
    from_toml = load_jobs(EXAMPLES / "jobs.toml", engine=engine, settings=settings)
    assert [dataclasses.replace(j, row=0) for j in from_csv] == [dataclasses.replace(j, row=0) for j in from_toml]


def test_bundle_copied_next_to_the_jobs_file_resolves_by_relative_path(bundles, tmp_path):
    shutil.copytree(bundles / "tiny", tmp_path / "bundles" / "tiny")
    (tmp_path / "examples").mkdir()
    jobs = tmp_path / "examples" / "jobs.csv"
    jobs.write_text(HEADER + "../bundles/tiny,a.tif,,150,,,,,\n")
    assert batch(jobs, "--out", tmp_path / "out", "--check") == 0
    assert not (tmp_path / "out").exists()  # --check renders nothing


def test_server_mode_writes_the_same_prints(bundles, tmp_path):
    pytest.importorskip("grpc")
    from famos.render_server.server import RenderServer, ServerConfig

    (tmp_path / "jobs").mkdir()
    jobs = tmp_path / "jobs" / "jobs.csv"
    jobs.write_text(HEADER + "models/tiny,plain.tif,,150,,2,lzw,,\nmodels/tiny,mural.tif,../chelsea.png,100,,5,,2x2,3mm\n")
    shutil.copy(EXAMPLES / "content" / "chelsea.png", tmp_path / "chelsea.png")
    (tmp_path / "store").mkdir()
    server = RenderServer(ServerConfig(models=bundles, output=tmp_path / "store", port=0, chunk=64))
    server.start()
    try:
        assert batch(jobs, "--out", tmp_path / "remote", "--server", f"127.0.0.1:{server.port}") == 0
        # a re-run verifies against the same manifest, through the server too
        assert batch(jobs, "--out", tmp_path / "remote", "--server", f"127.0.0.1:{server.port}") == 0
        assert {r["status"] for r in report(tmp_path / "remote").values()} == {"skipped"}
        assert batch(jobs, "--out", tmp_path / "remote", "--server", f"127.0.0.1:{server.port}",
                     "--bundles", bundles) == 2  # --bundles is for local bundle folders
    finally:
        server.stop(0)
    assert batch(jobs, "--out", tmp_path / "local", "--bundles", bundles) == 0
    names = sorted(p.name for p in (tmp_path / "remote").glob("*.tif"))
    assert names == ["mural_r1c1.tif", "mural_r1c2.tif", "mural_r2c1.tif", "mural_r2c2.tif", "plain.tif"]
    for name in names:
        assert np.array_equal(read(tmp_path / "remote" / name), read(tmp_path / "local" / name)), name
        with tifffile.TiffFile(tmp_path / "remote" / name) as tif:
            page = tif.pages[0]
            dpi = 150 if name == "plain.tif" else 100  # the rows' dpi column
            assert page.tags["XResolution"].value == (dpi, 1) == page.tags["YResolution"].value, name
            assert page.resolutionunit == tifffile.RESUNIT.INCH and ICC_TAG in page.tags
