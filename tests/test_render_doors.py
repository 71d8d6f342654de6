"""Every door renders the same request to the same bytes, and a refactor changes none of them.

`tests/golden/render_doors.py` drives the command lines (render, client render, client submit,
batch local and through a server, Ray) on one tiny model. `golden/before.json` holds what the code
before the one-request redesign made; where its fingerprint (libraries, CPU) matches this machine
every output must still be byte-identical to it, except the two the redesign fixed on purpose
(FIXED) and the pyramid a later change rewrote on purpose (CHANGED).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

GOLDEN = pathlib.Path(__file__).parent / "golden"

# Requests rendered by `famos render`, streamed (`client render`) and as jobs (`client submit`).
STREAMED = ("default", "region", "size", "scale", "print-size", "zstd-pyramid", "jpeg", "content")
JOBS = ("default", "size", "zstd-pyramid", "content")
# Bytes the redesign changed on purpose, each now equal to `famos render`'s: the stream applied
# the print-size DPI policy its own way, and a job dropped `--level` (the proto had no field).
FIXED = {"stream/print-size": "render/print-size", "job/zstd-pyramid": "render/zstd-pyramid"}
# Bytes a later change rewrote on purpose, and their sha256 since (the job's follows through FIXED):
# the pyramid's levels are reached from the SubIFDs tag alone, typed LONG (issue 26: tifffile also
# chained each level to the next, so exiftool met every level twice and warned "ICC_Profile pointer
# references previous ICC_Profile directory"). The tag's type and the levels' next-IFD offsets
# changed; no pixel, no other byte. Made on a machine of before.json's fingerprint but for Pillow 12.0.0, where every other
# output has before.json's bytes.
CHANGED = {
    "render/zstd-pyramid": "0b47eab1b74b77e9d8c4541d0a8bd68ae8ecf8fc29c60eb2444300b6d6b7ce78",
    "stream/zstd-pyramid": "0b47eab1b74b77e9d8c4541d0a8bd68ae8ecf8fc29c60eb2444300b6d6b7ce78",
}


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("doors")
    ray = ["--ray"] if importlib.util.find_spec("ray") else []
    done = subprocess.run([sys.executable, GOLDEN / "render_doors.py", out / "run", *ray],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_door_gives_the_same_bytes(golden_run):
    hashes = golden_run["hashes"]
    for name in STREAMED:
        assert hashes[f"stream/{name}"] == hashes[f"render/{name}"], name
    for name in JOBS:
        assert hashes[f"job/{name}"] == hashes[f"render/{name}"], name
    if "ray/default" in hashes:
        assert hashes["ray/default"] == hashes["render/default"]
    batch = {key.split("/", 1)[1]: value for key, value in hashes.items() if key.startswith("batch/")}
    served = {key.split("/", 1)[1]: value for key, value in hashes.items() if key.startswith("batch-server/")}
    assert batch and batch == served


def test_the_bytes_before_the_redesign(golden_run):
    before = json.loads((GOLDEN / "before.json").read_text())
    if before["fingerprint"] != golden_run["fingerprint"]:
        pytest.skip(f"golden bytes were made with {before['fingerprint']}, this machine is {golden_run['fingerprint']}")
    now = golden_run["hashes"]
    for key, old in before["hashes"].items():
        if key not in now:
            continue  # ray/default where Ray is not installed
        expected = now[FIXED[key]] if key in FIXED else CHANGED.get(key, old)
        assert now[key] == expected, key
    assert all(before["hashes"][key] != now[key] for key in FIXED), "the fixed doors were already equal"
