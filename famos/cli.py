"""The `famos` command: one front door, a subcommand per capability.

Each subcommand lives in its own part of the project and is imported only when used, so
`famos client ...` needs no torch and `famos --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("famos.training.cli", "train a model for a canvas from style and content images"),
    "evaluate": ("famos.training.evaluate", "content error and style distance of a trained checkpoint"),
    "export": ("famos.export.cli", "write a bundle (ONNX, TorchScript, manifest) from a checkpoint or run folder"),
    "inspect": ("famos.export.inspect_bundle", "print a bundle's summary and validate its checksums and graphs"),
    "render": ("famos.render_server.cli", "render a bundle's canvas (or a region) to a tiled TIFF in constant memory"),
    "batch": ("famos.clients.batch.cli", "render a jobs file of prints to print-ready TIFFs (resumable)"),
    "serve": ("famos.render_server.server", "gRPC render server: models, streamed renders, resumable jobs"),
    "view": ("famos.viewer.cli", "look at renders in the browser: deep zoom over IIIF (OpenSeadragon)"),
    "client": ("famos.clients.cli", "talk to a render server: models, render, submit, watch, cancel, jobs, download"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from famos import __version__

        print(f"famos {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"famos: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    _interrupt_on_sigterm()
    return run_reporting_errors(f"famos {name}", lambda: module.main(rest))


def _interrupt_on_sigterm() -> None:
    """SIGTERM (kill, a scheduler's timeout) ends a command as Ctrl-C does: its cleanup runs and no
    partial file stays beside the output. `famos serve` installs its own graceful shutdown."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def run_reporting_errors(prog: str, body) -> int:
    """Run a command body; user mistakes and interrupts become one line on stderr, not a traceback."""
    from famos.errors import UserError

    try:
        return int(body() or 0)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `famos inspect B | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as err:  # disk full, permission denied, ...: the message names the file
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1


def _usage() -> str:
    lines = ["usage: famos <command> [options]   (famos <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
