"""`python -m protos.generate`: regenerate the Python code of every .proto under protos/.

protoc runs with the repository root as include path, so a file's import path is its path in the
repository and the generated ``import`` lines resolve to the ``protos.*`` packages. The output is a
pure function of the .proto files and the grpcio-tools version; tests/test_protos.py regenerates
into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

PROTOS = pathlib.Path(__file__).resolve().parent
ROOT = PROTOS.parent


def proto_files() -> list[pathlib.Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generated_names(proto: pathlib.Path) -> list[str]:
    """Files protoc writes for one .proto, relative to the output root."""
    stem = proto.relative_to(ROOT).with_suffix("")
    return [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]


def generate(out: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Run protoc over all .proto files, writing under ``out``; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    # google/protobuf/*.proto ship inside grpc_tools
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = [str(p.relative_to(ROOT)) for p in proto_files()]
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed (see the messages above)")
    return [out / name for proto in proto_files() for name in generated_names(proto)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.generate", description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
