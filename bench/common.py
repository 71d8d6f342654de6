"""Helpers the bench scripts share: run `famos` in a subprocess or read the JSON line it prints in
this process, and measure one run's wall time and peak RSS (from wait4, so the figure is the
child's own)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time


def famos(*args: object, capture: bool = False) -> str:
    """Run `famos ARGS...` to completion (an error stops the bench); its stdout when ``capture``."""
    result = subprocess.run([sys.executable, "-m", "famos.cli", *map(str, args)], check=True,
                            capture_output=capture, text=True)
    return result.stdout


def famos_json(argv: list[str]) -> tuple[int, dict]:
    """`famos ARGV` in this process: its exit status and the JSON object it printed last ({} if none)."""
    from famos.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    lines = printed.getvalue().strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 and lines else {}


def measured(command: list[str]) -> tuple[float, float]:
    """Run ``command``; (seconds, peak RSS in MiB). SystemExit when it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux
