"""What a command may write: never over one of its inputs, into a bundle, or over an existing
file it was not told to replace. Every writer asks before any work (``check_output``), so a
refusal costs nothing and loses nothing."""

from __future__ import annotations

import os
import pathlib

from famos.bundle import MANIFEST  # what makes a folder a bundle
from famos.errors import UserError


def check_output(
    path: str | os.PathLike[str], *, option: str, inputs: tuple[os.PathLike[str] | str | None, ...] = (),
    overwrite: bool = False,
) -> pathlib.Path:
    """Refuse, before any work, an output that would destroy something: one of the command's
    ``inputs`` (the same file after links are resolved), a file inside a bundle folder, or an
    existing file unless ``overwrite``. ``option`` names the flag in the one-line error."""
    path = pathlib.Path(path)
    target = path.resolve()
    for given in inputs:
        if given is not None and pathlib.Path(given).resolve() == target:
            raise UserError(f"{option} {path}: is also an input of this command ({given}); write the output elsewhere")
    if (target.parent / MANIFEST).is_file():
        raise UserError(f"{option} {path}: is inside the bundle {target.parent}; write the output elsewhere")
    if target.is_dir():
        raise UserError(f"{option} {path}: is a folder")
    if target.exists() and not overwrite:
        raise UserError(f"{option} {path}: exists (--overwrite replaces it)")
    return path
