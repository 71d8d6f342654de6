"""FAMOS core: configuration, the generator, canvas geometry and chunk planning.

Everything famos installs lives under this one import name: the core here, and ``famos.training``,
``famos.export``, ``famos.render_server``, ``famos.clients``, ``famos.protos`` and ``famos.viewer``,
which the repository keeps as top-level folders beside this one (pyproject.toml maps them; a wheel
puts them inside famos/). Importing this package imports nothing else and writes nothing.
"""

import os as _os

__version__ = "0.1.0"

# A source checkout run without installing it (``PYTHONPATH=.``, as the GPU check runs on a bare
# machine) finds the parts beside this folder; an installed famos has them inside it.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and _os.path.isdir(_os.path.join(_checkout, "render_server")):
    __path__.append(_checkout)
