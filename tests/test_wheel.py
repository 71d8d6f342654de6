"""A built wheel, installed (not editable) into a fresh venv, runs the README's main job and
`famos view` from a folder that holds nothing of the repository.

The wheel is built from the tracked files only (a copy, as a fresh clone has them: no npm
packages, no build leftovers). The venv sees this machine's site-packages for the dependencies
(torch is a 700 MB install), but famos itself comes from the wheel: the test checks where it
imports from.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import urllib.request
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTS = ("training", "export", "render_server", "clients", "protos", "viewer")


def tracked_copy(target: pathlib.Path) -> pathlib.Path:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        source = ROOT / name.decode()
        if source.is_file():  # a file deleted in the work tree but not yet in git
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


def _setuptools_at_least(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to know the tracked files")
    base = tmp_path_factory.mktemp("wheel")
    tree = tracked_copy(base / "tree")
    # this environment's setuptools when it is new enough for pyproject's licence fields (fast, no
    # network); else pip fetches one into an isolated build environment
    isolation = ["--no-build-isolation"] if _setuptools_at_least(77) else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w",
                    str(base / "dist"), str(tree)], check=True, capture_output=True)
    (built,) = (base / "dist").glob("famos-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> pathlib.Path:
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(where)], check=True)
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--force-reinstall", str(wheel)], check=True, capture_output=True)
    return where


def test_the_wheel_installs_one_import_name_with_the_samples_and_the_licence(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"famos", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for part in PARTS:
        assert f"famos/{part}/__init__.py" in names, part
    for sample in ("famos/examples/content/chelsea.png", "famos/examples/style/brick.png",
                   "famos/examples/style/gravel.png", "famos/examples/LICENSES.md",
                   "famos/protos/famos/render/v1/render.proto", "famos/viewer/static/package.json"):
        assert sample in names, sample
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any("node_modules" in name or name.startswith("famos/tests") for name in names)


def test_the_quick_start_runs_from_the_installed_wheel(venv, tmp_path):
    """The README's main job (with the tests' smaller preset) and `famos view`, in a folder outside
    the repository, with the wheel's famos."""
    python, famos = str(venv / "bin" / "python"), str(venv / "bin" / "famos")
    where = subprocess.run([python, "-c", "import famos, famos.training.cli as t; print(famos.__file__); print(t.EXAMPLES)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(pathlib.Path(p).is_relative_to(venv) for p in where), where

    def run(*args: str) -> None:
        done = subprocess.run([famos, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"famos {' '.join(args)}:\n{done.stderr[-2000:]}"

    run("train", "--preset", "tiny", "--steps", "20", "--out", "runs/tiny", "--quiet")
    run("export", "runs/tiny", "--out", "bundles/tiny")
    run("render", "bundles/tiny", "--out", "tiny.tif", "--preview", "tiny.png")
    assert (tmp_path / "tiny.tif").stat().st_size > 0 and (tmp_path / "tiny.png").stat().st_size > 0

    viewer = subprocess.Popen([famos, "view", "tiny.tif", "--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = viewer.stdout.readline()
        assert "serving on" in line, line + viewer.stderr.read()
        url = line.split("serving on ")[1].split()[0].split("#")[0]
        info = json.loads(urllib.request.urlopen(url + "iiif/3/tiny/info.json", timeout=30).read())
        assert (info["width"], info["height"]) == (226, 150)
        page = urllib.request.urlopen(url + "view/tiny", timeout=30).read().decode()
        assert "cdn.jsdelivr.net/npm/openseadragon@" in page and "integrity=" in page  # no npm in a wheel
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)
