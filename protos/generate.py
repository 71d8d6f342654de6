"""`python -m famos.protos.generate`: regenerate the Python code of every .proto under protos/.

protoc sees this folder as famos/protos/ (a staged include root), so a file's import path is the
Python package it installs as and the generated ``import`` lines resolve to ``famos.protos.*``.
The output is a pure function of the .proto files and the grpcio-tools version;
tests/test_protos.py regenerates into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

PROTOS = pathlib.Path(__file__).resolve().parent
ROOT = PROTOS.parent
PACKAGE = pathlib.Path("famos", "protos")  # where protos/ installs, as protoc must see it


def proto_files() -> list[pathlib.Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generated_names(proto: pathlib.Path) -> list[str]:
    """Files protoc writes for one .proto, relative to the repository root."""
    stem = proto.relative_to(ROOT).with_suffix("")
    return [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]


def generate(out: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Run protoc over all .proto files, writing under ``out`` (as under the repository root);
    returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    # google/protobuf/*.proto ship inside grpc_tools
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="famos-protoc-") as staging:
        include, written = pathlib.Path(staging, "include"), pathlib.Path(staging, "out")
        (include / PACKAGE).parent.mkdir(parents=True)
        (include / PACKAGE).symlink_to(PROTOS, target_is_directory=True)
        written.mkdir()
        args = [
            "grpc_tools.protoc",
            f"-I{include}",
            f"-I{well_known}",
            f"--python_out={written}",
            f"--pyi_out={written}",
            f"--grpc_python_out={written}",
            *(str(PACKAGE / p.relative_to(PROTOS)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed (see the messages above)")
        files = []
        for name in (n for proto in proto_files() for n in generated_names(proto)):
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(written / PACKAGE / pathlib.Path(name).relative_to("protos"), target)
            files.append(target)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m famos.protos.generate", description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
