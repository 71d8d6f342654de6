"""The argument parser of every `famos` command.

A mistaken option is a user error like any other: one line on stderr through
``famos.cli.run_reporting_errors`` (exit 2, argparse's own status for usage errors), not argparse's
usage block, which for commands with dozens of options buries the one line that matters. Imports
only argparse: `famos client` and the other torch-free commands use it too.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from famos.errors import UserError


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose parse errors raise ``UserError("MESSAGE (see PROG --help)")``.

    --help and --version still print and exit as argparse does. Subcommands made with
    ``add_subparsers`` are Parsers too (argparse builds them with the parent's class), so their
    errors point at their own help: ``(see famos client render --help)``.
    """

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")
