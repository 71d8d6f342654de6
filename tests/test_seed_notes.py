"""A seed of a model without noise changes nothing: every door says so, and the batch names rows
that will be the same pixels (the quick start's model has no noise channels)."""

from __future__ import annotations

import shutil

import pytest

from conftest import SERVER_MODEL, make_bundle
from famos.cli import main
from famos.config import CanvasConfig, GeneratorConfig, NoiseConfig

NOTE = "has no noise channels"


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory):
    """A models folder holding one bundle without noise, named SERVER_MODEL."""
    folder = tmp_path_factory.mktemp("noiseless")
    bundle = make_bundle(folder / "export", GeneratorConfig(depth=2, width=4, n_templates=2), CanvasConfig(64, 96))
    shutil.move(bundle, folder / SERVER_MODEL)
    return folder


def test_famos_render_says_the_seed_changes_nothing(noiseless, models, tmp_path, capsys):
    assert main(["render", str(noiseless / SERVER_MODEL), "--out", str(tmp_path / "a.tif"), "--seed", "3"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if NOTE in line]
    assert len(notes) == 1 and "seed 3" in notes[0]
    for bundle, seed in ((noiseless / SERVER_MODEL, "0"), (models / SERVER_MODEL, "3")):  # no seed, or noise
        assert main(["render", str(bundle), "--out", str(tmp_path / f"b{seed}.tif"), "--seed", seed]) == 0
        assert NOTE not in capsys.readouterr().err


def test_famos_client_says_it_from_the_servers_model(noiseless, start_render_server, tmp_path, capsys):
    server = start_render_server(noiseless)
    address = f"127.0.0.1:{server.port}"
    assert main(["client", "--server", address, "render", SERVER_MODEL, "--out", str(tmp_path / "c.tif"),
                 "--seed", "5", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert NOTE in err and "seed 5" in err
    from famos.clients.render_client import RenderClient

    with RenderClient(address) as client:
        (model,) = client.models()
    assert model.noise_channels == 0


def test_the_batch_names_rows_that_will_be_the_same_pixels(noiseless, models, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    shutil.copytree(models / SERVER_MODEL, noisy)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "model,output,size,dpi,seed\n"
        f"{noiseless / SERVER_MODEL},a.tif,96x64,100,0\n"
        f"{noiseless / SERVER_MODEL},b.tif,96x64,100,1\n"  # same pixels as row 2: no noise
        f"{noiseless / SERVER_MODEL},c.tif,192x128,100,0\n"  # another size
        f"{noisy},d.tif,96x64,100,0\n"
        f"{noisy},e.tif,96x64,100,1\n"  # noise: another seed, other pixels
        f"{noisy},f.tif,96x64,100,1\n"  # the same seed: the same pixels as row 6
    )
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), "--check"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "famos batch: note:" in line]
    assert notes == [
        f"famos batch: note: row 3: the model {NOTE}, so seed 1 renders the same pixels as any other seed "
        "(train with --noise-local/--noise-global/--noise-periodic for seeds that vary)",
        "famos batch: note: row 3: the same pixels as row 2 (same model, content and size, whatever their seeds)",
        "famos batch: note: row 7: the same pixels as row 6 (same model, content and size)",
    ]
