"""FAMOS core: configuration, the generator, canvas geometry and chunk planning.

Importing this package does nothing: no torch import, no argv parsing, no files touched.
"""

__version__ = "0.1.0"
