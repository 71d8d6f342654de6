"""FAMOS training: window data, the patch discriminator, losses, the training loop and previews.

Importing this package does nothing; `famos train` and `famos evaluate` are the entry points.
"""
