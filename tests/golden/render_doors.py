"""Render the same requests through every door and print one sha256 per output file, as JSON.

    python tests/golden/render_doors.py OUTDIR [--ray]

Doors: `famos render` (TIFF and PNG), `famos client render` (a gRPC stream), `famos client submit`
+ `download` (a server job), `famos batch` locally and through `--server`, and with `--ray`
`famos render --ray auto`. The script drives the command lines only, so the same script runs on
the code before and after a refactor: equal JSON means the refactor changed no byte. The model is
a tiny random-weight bundle built by the tests' own helpers (`tests/conftest.py`), deterministic
for a given torch and CPU; `tests/test_render_doors.py` runs it and compares the doors.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # conftest's bundle helpers

# A request as command-line options of `famos render` / `famos client render|submit`.
REQUESTS: dict[str, list[str]] = {
    "default": [],
    "region": ["--region", "8,16,100,60"],
    "size": ["--size", "200x120", "--seed", "3"],
    "scale": ["--scale", "1.5"],
    "print-size": ["--print-size", "4x2.4cm", "--dpi", "100"],
    "zstd-pyramid": ["--compression", "zstd", "--level", "9", "--pyramid", "--tile", "32", "--chunk", "48"],
    "jpeg": ["--compression", "jpeg", "--quality", "80", "--artist", "A. Painter"],
    "content": ["--content", "CONTENT", "--seed", "7", "--resolution-unit", "cm", "--dpi", "120"],
}
# Where the process renders itself (not through a server), its runner: see build_model.
ONNX = ["--backend", "onnx"]
LOCAL_ONLY = {"bits16": ["--bits", "16", "--no-predictor"]}
# The batch door: jobs-file rows (its own fields) over the same model.
BATCH_ROWS = [
    "model,output,content,size,scale,dpi,print_size,seed,compression,panels,panel_overlap",
    "MODEL,canvas.tif,,,,,,0,deflate,,",
    "MODEL,sized.tif,,200x120,,150,,3,zstd,,",
    "MODEL,print.tif,,,,100,4x2.4cm,1,lzw,,",
    "MODEL,mural.tif,CONTENT,,2,100,,2,deflate,2x1,8px",
]


def sha(path: pathlib.Path, bundle_digest: str) -> str:
    """The file's sha256 with the bundle's own digest blanked: the TorchScript zip and the manifest's
    `created` stamp differ from export to export, so the digest the outputs record does too."""
    data = path.read_bytes().replace(bundle_digest.encode(), b"0" * len(bundle_digest))
    return hashlib.sha256(data).hexdigest()


def recorded_digest(tiff: pathlib.Path) -> str:
    import tifffile

    with tifffile.TiffFile(tiff) as opened:
        return json.loads(opened.pages[0].description)["bundle_sha256"]


def famos(*argv: str) -> None:
    from famos.cli import main

    code = main([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"famos {' '.join(map(str, argv))}: exit {code}")


def build_model(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The bundle folder (named `tiny`, inside a models folder) and a content image."""
    import shutil

    import numpy as np
    from PIL import Image

    from conftest import make_bundle
    from famos.config import CanvasConfig, Fold, GeneratorConfig, NoiseConfig

    # The architecture and runner of before.json: the full-resolution head (the default until the
    # paper's decoder replaced it) and onnxruntime fp32 (the default until `--backend auto`).
    legacy = {"full_resolution_head": True} if "full_resolution_head" in GeneratorConfig.__dataclass_fields__ else {}
    config = GeneratorConfig(depth=2, width=4, n_templates=2, noise=NoiseConfig(n_local=1, n_periodic=1), **legacy)
    bundle = make_bundle(folder / "export", config, CanvasConfig(96, 160, fold=Fold.MIRROR, template_seed=2))
    models = folder / "models"
    models.mkdir()
    shutil.move(bundle, models / "tiny")
    content = folder / "content.png"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (70, 110, 3), dtype=np.uint8)).save(content)
    return models, content


@contextlib.contextmanager
def server(models: pathlib.Path, store: pathlib.Path):
    from famos.render_server.server import RenderServer, ServerConfig

    store.mkdir()
    from famos.runners import Backend, RunnerOptions

    running = RenderServer(ServerConfig(models=models, output=store, port=0, runner=RunnerOptions(backend=Backend.ONNX)))
    running.start()
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(0)


def render_doors(out: pathlib.Path, *, ray: bool) -> dict[str, str]:
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")
    out.mkdir(parents=True, exist_ok=True)
    models, content = build_model(out)
    bundle = models / "tiny"
    hashes: dict[str, str] = {}
    digest = ""

    def options(args: list[str]) -> list[str]:
        return [str(content) if a == "CONTENT" else a for a in args]

    for name, args in {**REQUESTS, **LOCAL_ONLY}.items():
        path = out / f"render-{name}.tif"
        famos("render", bundle, "--out", path, "--quiet", *ONNX, *options(args))
        digest = digest or recorded_digest(path)
        hashes[f"render/{name}"] = sha(path, digest)
    famos("render", bundle, "--out", out / "render.png", "--quiet", *ONNX)
    hashes["render/png"] = sha(out / "render.png", digest)
    if ray:
        famos("render", bundle, "--out", out / "ray.tif", "--quiet", *ONNX, "--ray", "auto", "--ray-workers", "2")
        hashes["ray/default"] = sha(out / "ray.tif", digest)

    jobs = out / "jobs.csv"
    jobs.write_text("\n".join(BATCH_ROWS).replace("MODEL", "tiny").replace("CONTENT", str(content)) + "\n")
    famos("batch", jobs, "--out", out / "batch-local", "--bundles", models, "--dpi", "100", "--quiet", *ONNX)
    for tif in sorted((out / "batch-local").glob("*.tif")):
        hashes[f"batch/{tif.name}"] = sha(tif, digest)

    with server(models, out / "store") as address:
        for name, args in REQUESTS.items():
            path = out / f"stream-{name}.tif"
            famos("client", "--server", address, "render", "tiny", "--out", path, "--quiet", *options(args))
            hashes[f"stream/{name}"] = sha(path, digest)
        for name in ("default", "size", "zstd-pyramid", "content"):
            famos("client", "--server", address, "submit", "tiny", "--name", f"job-{name}.tif", "--watch",
                  *options(REQUESTS[name]))
            hashes[f"job/{name}"] = sha(out / "store" / f"job-{name}.tif", digest)
        famos("batch", jobs, "--out", out / "batch-server", "--server", address, "--dpi", "100", "--quiet")
        for tif in sorted((out / "batch-server").glob("*.tif")):
            hashes[f"batch-server/{tif.name}"] = sha(tif, digest)
    return hashes


def fingerprint() -> dict[str, str]:
    """What the bytes depend on besides famos: the libraries that compute and encode, and the CPU
    (its model name and vector flags pick onnxruntime's kernels)."""
    import platform
    from importlib import metadata

    flags = ""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                flags += line.split(":", 1)[1].strip() + "\n"
    packages = ("torch", "onnxruntime", "numpy", "tifffile", "imagecodecs", "pillow")
    return {
        **{name: metadata.version(name) for name in packages},
        "machine": platform.machine(),
        "cpu": hashlib.sha256(flags.encode()).hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--ray", action="store_true", help="also render on a local Ray cluster")
    args = parser.parse_args(argv)
    import contextlib as _c
    import io

    with _c.redirect_stdout(io.StringIO()):  # the commands' own JSON lines
        hashes = render_doors(args.out, ray=args.ray)
    print(json.dumps({"fingerprint": fingerprint(), "hashes": hashes}, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
