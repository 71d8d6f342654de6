"""Folder rendering: `famos render BUNDLE --content DIR --out OUTDIR` and a jobs-file row over a
content folder. One output per image, equal to the single-image render; resumable (done files
verified and skipped, stale or cut-short ones rendered again, strangers' files refused); the bundle
loaded and the renderer built once, one image held at a time."""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import os
import pathlib
import shutil
import weakref

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
tifffile = pytest.importorskip("tifffile")

from conftest import SERVER_MODEL  # noqa: E402
from PIL import Image  # noqa: E402

from famos.cli import main  # noqa: E402

OPTIONS = ["--seed", "3", "--chunk", "32", "--quiet"]
FRAMES = ["0001.png", "0002.png", "0003.jpg", "0004.bmp"]


@pytest.fixture(scope="module")
def bundle(models) -> pathlib.Path:
    return models / SERVER_MODEL


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> pathlib.Path:
    """Four content images of other sizes and formats, and what a folder render leaves out: a
    hidden file, a subfolder (with an image) and a file that is no image."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(7)
    for k, name in enumerate(FRAMES):
        Image.fromarray(rng.integers(0, 256, (40 + 7 * k, 64 - 5 * k, 3), dtype=np.uint8)).save(folder / name)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / ".hidden.png")
    (folder / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "sub" / "0005.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def singles(bundle, frames, tmp_path_factory) -> dict[str, pathlib.Path]:
    """Each frame rendered alone (`famos render --content IMAGE`): what the folder's outputs must equal."""
    out = tmp_path_factory.mktemp("singles")
    files = {}
    for name in FRAMES:
        stem = pathlib.Path(name).stem
        files[stem] = out / f"{stem}.tif"
        assert main(["render", str(bundle), "--content", str(frames / name), "--out", str(files[stem]),
                     "--preview", str(out / f"{stem}.png"), *OPTIONS]) == 0
    return files


def render_folder(capsys, bundle, content, out, *extra) -> tuple[int, list[str], str]:
    """`famos render BUNDLE --content CONTENT --out OUT`: exit status, stdout lines, stderr."""
    capsys.readouterr()
    rc = main(["render", str(bundle), "--content", str(content), "--out", str(out), *OPTIONS, *map(str, extra)])
    out_text, err = capsys.readouterr()
    return rc, out_text.splitlines(), err


def one_line_error(err: str, *fragments: str) -> None:
    err = err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "error:" in err and all(f in err for f in fragments), err


def mtimes(folder: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


@pytest.fixture
def rendered(bundle, frames, tmp_path, capsys) -> pathlib.Path:
    out = tmp_path / "out"
    rc, lines, err = render_folder(capsys, bundle, frames, out, "--preview", tmp_path / "previews")
    assert rc == 0, err
    return out


def test_each_image_renders_to_its_stem_equal_to_a_single_render(bundle, frames, singles, tmp_path, capsys):
    out, previews = tmp_path / "new" / "out", tmp_path / "previews"  # created, parents too
    rc, lines, err = render_folder(capsys, bundle, frames, out, "--preview", previews)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0001.tif", "0002.tif", "0003.tif", "0004.tif"]  # no partials
    assert sorted(p.name for p in previews.iterdir()) == ["0001.png", "0002.png", "0003.png", "0004.png"]
    for stem, single in singles.items():
        assert np.array_equal(tifffile.imread(out / f"{stem}.tif"), tifffile.imread(single)), stem
        assert np.array_equal(np.asarray(Image.open(previews / f"{stem}.png")),
                              np.asarray(Image.open(single.with_suffix(".png")))), stem
    frames_differ = [tifffile.imread(out / f"{s}.tif") for s in ("0001", "0002")]
    assert not np.array_equal(*frames_differ)  # each frame its own content
    # one line per image, in name order, and a summary
    assert len(lines) == 5, lines
    for line, name in zip(lines, FRAMES):
        assert f"{name}: rendered {out / pathlib.Path(name).stem}.tif" in line, line
    assert lines[-1].startswith("4 images: 4 rendered, 0 skipped as done"), lines
    with tifffile.TiffFile(out / "0003.tif") as tif:
        record = json.loads(tif.pages[0].description)["folder_render"]
    assert record["content_file"] == "0003.jpg" and record["request"]["seed"] == 3
    from famos.bundle import load_bundle

    assert record["bundle_sha256"] == load_bundle(bundle).sha256
    assert record["content_sha256"] == hashlib.sha256((frames / "0003.jpg").read_bytes()).hexdigest()


def test_a_rerun_skips_every_done_file_and_renders_nothing(bundle, frames, rendered, tmp_path, capsys, monkeypatch):
    import famos.renderer

    before = mtimes(rendered)
    calls = []
    monkeypatch.setattr(famos.renderer, "render_tiff_task", lambda *a, **k: calls.append(a) or pytest.fail("rendered"))
    rc, lines, err = render_folder(capsys, bundle, frames, rendered, "--preview", tmp_path / "previews")
    assert rc == 0, err
    assert calls == [] and mtimes(rendered) == before
    assert all(": skipped, done: " in line for line in lines[:-1]) and len(lines) == 5, lines
    assert lines[-1].startswith("4 images: 0 rendered, 4 skipped as done"), lines
    # a missing preview of a done file is written from the file, nothing rendered
    (tmp_path / "previews" / "0002.png").unlink()
    rc, _, err = render_folder(capsys, bundle, frames, rendered, "--preview", tmp_path / "previews")
    assert rc == 0 and calls == [] and (tmp_path / "previews" / "0002.png").is_file(), err


def test_a_truncated_or_swapped_output_is_rendered_again(bundle, frames, rendered, tmp_path, capsys):
    kept = {p.name: p.read_bytes() for p in rendered.iterdir()}
    os.truncate(rendered / "0001.tif", len(kept["0001.tif"]) // 2)  # cut short: its tiles run past the end
    shutil.copy(rendered / "0004.tif", rendered / "0002.tif")  # another frame's output under this name
    before = mtimes(rendered)
    rc, lines, err = render_folder(capsys, bundle, frames, rendered)
    assert rc == 0, err
    said = [line.split(": ", 1)[1].split(" ")[0] for line in lines[:-1]]
    assert said == ["rendered", "rendered", "skipped,", "skipped,"], lines
    assert lines[-1].startswith("4 images: 2 rendered, 2 skipped as done"), lines
    after = mtimes(rendered)
    assert after["0003.tif"] == before["0003.tif"] and after["0004.tif"] == before["0004.tif"]
    # the same files as before, byte for byte (SOURCE_DATE_EPOCH fixes their DateTime)
    assert {p.name: p.read_bytes() for p in rendered.iterdir()} == kept


def test_a_pyramid_cut_short_is_not_done(bundle, frames, tmp_path, capsys):
    out = tmp_path / "levels"
    rc, _, err = render_folder(capsys, bundle, frames, out, "--pyramid", "--tile", "16")
    assert rc == 0, err
    with tifffile.TiffFile(out / "0001.tif") as tif:
        page = tif.pages[0]
        assert page.pages  # reduced levels after the full-resolution tiles
        end_of_full = max(o + c for o, c in zip(page.dataoffsets, page.databytecounts))
    os.truncate(out / "0001.tif", end_of_full + 10)  # every full-resolution tile there, the levels not
    rc, lines, err = render_folder(capsys, bundle, frames, out, "--pyramid", "--tile", "16")
    assert rc == 0 and "0001.png: rendered" in lines[0] and lines[-1].startswith("4 images: 1 rendered"), (lines, err)


def test_a_changed_seed_or_option_renders_again(bundle, frames, rendered, capsys):
    first = {p.name: tifffile.imread(p) for p in rendered.iterdir()}
    rc, lines, err = render_folder(capsys, bundle, frames, rendered, "--seed", "4")  # after OPTIONS' seed 3
    assert rc == 0 and lines[-1].startswith("4 images: 4 rendered"), (lines, err)
    assert all(not np.array_equal(tifffile.imread(rendered / name), image) for name, image in first.items())
    rc, lines, _ = render_folder(capsys, bundle, frames, rendered, "--seed", "4")
    assert lines[-1].startswith("4 images: 0 rendered, 4 skipped as done"), lines
    rc, lines, _ = render_folder(capsys, bundle, frames, rendered, "--seed", "4", "--compression", "lzw")
    assert lines[-1].startswith("4 images: 4 rendered"), lines
    with tifffile.TiffFile(rendered / "0001.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW


def test_a_changed_content_image_renders_again(bundle, frames, tmp_path, capsys):
    content = tmp_path / "frames"
    shutil.copytree(frames, content)
    out = tmp_path / "out"
    assert render_folder(capsys, bundle, content, out)[0] == 0
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(content / "0002.png")
    rc, lines, _ = render_folder(capsys, bundle, content, out)
    assert rc == 0 and [i for i, line in enumerate(lines) if ": rendered " in line] == [1], lines


def test_files_famos_did_not_render_for_the_folder_are_refused_without_overwrite(
    bundle, frames, singles, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "0002.tif").write_bytes(b"someone's file")
    shutil.copy(singles["0003"], out / "0003.tif")  # a plain `famos render` file: not this command's
    rc, _, err = render_folder(capsys, bundle, frames, out)
    assert rc == 2
    one_line_error(err, "--out", "2 files", "0002.tif", "0003.tif", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["0002.tif", "0003.tif"]  # nothing rendered
    assert (out / "0002.tif").read_bytes() == b"someone's file"
    rc, lines, err = render_folder(capsys, bundle, frames, out, "--overwrite")
    assert rc == 0, err
    for stem, single in singles.items():
        assert np.array_equal(tifffile.imread(out / f"{stem}.tif"), tifffile.imread(single))
    # a preview whose TIFF is not there is someone else's too
    previews = tmp_path / "previews"
    previews.mkdir()
    (previews / "0001.png").write_bytes(b"a drawing")
    fresh = tmp_path / "fresh"
    rc, _, err = render_folder(capsys, bundle, frames, fresh, "--preview", previews)
    assert rc == 2 and not fresh.exists()
    one_line_error(err, "--preview", "0001.png")


def test_an_interrupted_run_leaves_whole_files_and_resumes(bundle, frames, singles, tmp_path, capsys, monkeypatch):
    import famos.renderer

    opened, calls = famos.renderer.open_runner, 0

    def interrupted(*args, **kwargs):
        run = opened(*args, **kwargs)

        def ctrl_c_in_the_third_image(*inputs):
            nonlocal calls
            calls += 1
            if calls == 2 * 15 + 4:  # 15 chunks of 32 px an image
                raise KeyboardInterrupt
            return run(*inputs)

        return ctrl_c_in_the_third_image

    monkeypatch.setattr(famos.renderer, "open_runner", interrupted)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["render", str(bundle), "--content", str(frames), "--out", str(out), *OPTIONS]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["0001.tif", "0002.tif"]  # no partial file
    monkeypatch.setattr(famos.renderer, "open_runner", opened)
    rc, lines, err = render_folder(capsys, bundle, frames, out)
    assert rc == 0 and lines[-1].startswith("4 images: 2 rendered, 2 skipped as done"), (lines, err)
    for stem, single in singles.items():
        assert np.array_equal(tifffile.imread(out / f"{stem}.tif"), tifffile.imread(single))


def test_one_bundle_load_one_renderer_one_image_at_a_time(bundle, frames, tmp_path, capsys, monkeypatch):
    import famos.bundle
    import famos.renderer

    loads, built, held = [], [], []
    load = famos.bundle.load_bundle
    monkeypatch.setattr(famos.bundle, "load_bundle", lambda *a, **k: loads.append(a) or load(*a, **k))
    init = famos.renderer.Renderer.__init__
    monkeypatch.setattr(famos.renderer.Renderer, "__init__",
                        lambda self, *a, **k: built.append(1) or init(self, *a, **k))
    task, tasks = famos.renderer.Renderer.task, []

    def counted_task(self, settings, content=None):
        gc.collect()
        held.append(sum(ref() is not None for ref in tasks))  # earlier images' tasks (their content) still alive
        made = task(self, settings, content)
        tasks.append(weakref.ref(made))
        return made

    monkeypatch.setattr(famos.renderer.Renderer, "task", counted_task)
    rc, lines, err = render_folder(capsys, bundle, frames, tmp_path / "out")
    assert rc == 0, err
    assert len(loads) == 1 and len(built) == 1
    assert held == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "setup, out, fragments",
    [
        ("clash", "out", ["0001.jpg", "0001.png", "same stem"]),
        ("empty", "out", ["no images"]),
        ("plain", "mosaic.tif", ["--out", "names a folder"]),
        ("plain", "CONTENT", ["--out", "is the --content folder"]),
        ("plain", "BUNDLE", ["--out", "inside the bundle"]),
        ("broken", "out", ["0002.png", "not a readable image"]),
    ],
)
def test_folder_mistakes_are_one_line_and_render_nothing(bundle, tmp_path, capsys, setup, out, fragments):
    content = tmp_path / "content"
    content.mkdir()
    if setup != "empty":
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(content / "0001.png")
    (content / "readme.txt").write_text("no image")
    if setup == "clash":
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(content / "0001.jpg")
    if setup == "broken":
        (content / "0002.png").write_bytes(b"not a png")
    target = {"CONTENT": content, "BUNDLE": bundle}.get(out, tmp_path / out)
    before = sorted(p.name for p in bundle.iterdir())
    rc, lines, err = render_folder(capsys, bundle, content, target)
    assert rc == 2 and lines == []
    one_line_error(err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content"]  # no output folder made
    assert sorted(p.name for p in bundle.iterdir()) == before


# --- the batch: a jobs-file row over a content folder ---------------------------------------------

HEADER = "model,output,content,dpi,seed,compression\n"


def batch(capsys, jobs, out, models, *extra) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["batch", str(jobs), "--out", str(out), "--bundles", str(models), "--chunk", "32", "--quiet",
               *map(str, extra)])
    return rc, capsys.readouterr().err


def statuses(out: pathlib.Path) -> dict[str, str]:
    with open(out / "batch-report.csv", newline="") as f:
        return {row["output"]: row["status"] for row in csv.DictReader(f)}


def test_a_batch_row_over_a_folder_renders_each_image_resumably(models, frames, singles, tmp_path, capsys):
    content = tmp_path / "jobs" / "frames"
    shutil.copytree(frames, content)
    jobs = tmp_path / "jobs" / "jobs.csv"
    jobs.write_text(HEADER + f"{SERVER_MODEL},frame-{{stem}},frames,150,3,\n{SERVER_MODEL},plain.tif,,150,3,\n")
    out = tmp_path / "prints"
    rc, err = batch(capsys, jobs, out, models)
    assert rc == 0, err
    names = [f"frame-{pathlib.Path(n).stem}.tif" for n in FRAMES]
    assert statuses(out) == {**dict.fromkeys(names, "done"), "plain.tif": "done"}
    for stem, single in singles.items():  # the same pixels as `famos render --content IMAGE`
        assert np.array_equal(tifffile.imread(out / f"frame-{stem}.tif"), tifffile.imread(single)), stem
    # resumable through the ledger: nothing again, then only the changed frame
    before = mtimes(out)
    rc, _ = batch(capsys, jobs, out, models)
    assert rc == 0 and set(statuses(out).values()) == {"skipped"}
    assert {k: v for k, v in mtimes(out).items() if k.endswith(".tif")} == {
        k: v for k, v in before.items() if k.endswith(".tif")}
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(content / "0003.jpg")
    rc, _ = batch(capsys, jobs, out, models)
    assert rc == 0 and [k for k, v in statuses(out).items() if v == "done"] == ["frame-0003.tif"]
    # --check plans one job per image
    capsys.readouterr()
    assert main(["batch", str(jobs), "--out", str(out), "--bundles", str(models), "--check"]) == 0
    plan = capsys.readouterr().out
    assert all(name in plan for name in names) and "5 jobs valid" in plan


def test_bad_folder_rows_are_reported_before_anything_renders(models, tmp_path, capsys):
    (tmp_path / "frames").mkdir()
    for name in ("a.png", "a.webp", "b.png"):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "frames" / name)
    (tmp_path / "empty").mkdir()
    jobs = tmp_path / "jobs.csv"
    out = tmp_path / "prints"
    jobs.write_text(HEADER + f"{SERVER_MODEL},frames.tif,frames,150,3,\n"  # no {stem}
                             f"{SERVER_MODEL},x-{{stem}},frames,150,3,\n"  # a.png and a.webp
                             f"{SERVER_MODEL},e-{{stem}},empty,150,3,\n"
                             f"{SERVER_MODEL},n-{{stem}},,150,3,\n"  # {stem} of no content
                             f"{SERVER_MODEL},o-{{stem}},prints,150,3,\n")  # the output folder itself
    out.mkdir()
    rc, err = batch(capsys, jobs, out, models)
    assert rc == 2 and "5 errors, nothing rendered" in err, err
    for row, fragment in ((2, "{stem}"), (3, "same stem"), (4, "no images"), (5, "no content"), (6, "output folder")):
        assert any(line.strip().startswith(f"row {row},") and fragment in line for line in err.splitlines()), (row, err)
    assert list(out.iterdir()) == []
