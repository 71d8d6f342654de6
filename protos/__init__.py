"""The gRPC contract: .proto sources and the Python code generated from them.

The folder path of each .proto mirrors its Python package (protos/famos/render/v1/render.proto
-> ``famos.protos.famos.render.v1.render_pb2``), because the generated modules import each other by that
path. Regenerate with ``python -m famos.protos.generate``; never edit the generated files.
"""
