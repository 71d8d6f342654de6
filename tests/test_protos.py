"""The generated gRPC code is current: regenerating it from the .proto changes nothing."""

from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("grpc_tools")

from famos.protos import generate  # noqa: E402


def test_generated_code_is_current(tmp_path):
    written = generate.generate(tmp_path)
    assert written, "no .proto files found"
    for fresh in written:
        committed = generate.ROOT / fresh.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `python -m famos.protos.generate`"
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"{committed.relative_to(generate.ROOT)} is stale: run `python -m famos.protos.generate`"
        )


def test_proto_folder_mirrors_the_python_package():
    from famos.protos.famos.render.v1 import render_pb2

    proto = pathlib.Path(render_pb2.DESCRIPTOR.name)
    assert proto == pathlib.Path(*render_pb2.__name__.removesuffix("_pb2").split(".")).with_suffix(".proto")
    assert render_pb2.DESCRIPTOR.package == "famos.render.v1"
