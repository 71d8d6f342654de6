"""Checkpoint -> artifact bundle (manifest, ONNX, TorchScript, weights, content, preview).

``export.bundle`` loads and runs bundles without torch; ``export.writer`` (torch) writes them.
Importing this package does nothing.
"""
