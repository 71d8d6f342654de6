"""Checkpoint -> artifact bundle (manifest, ONNX, TorchScript, weights, content, preview).

It only *writes* bundles: their format and loading live in ``famos.bundle``, the runners in
``famos.runners``. ``famos.export.writer`` (torch) is the entry point.
Importing this package does nothing.
"""
