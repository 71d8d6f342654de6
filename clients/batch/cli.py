"""`famos batch JOBS --out DIR`: render a jobs file of prints to print-ready TIFFs, resumably.

JOBS is a .csv, .toml or .json file with one print per row (see clients/batch/jobs_file.py for
the fields). Every row is validated before anything renders; a re-run skips outputs verified against
OUT/batch-manifest.json. The TIFF options apply to every job; --dpi and --compression are the
defaults of rows that leave those fields empty. Exit code 0 when every job succeeded, 1 when any failed, 2 for a bad
jobs file (nothing rendered).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys


def main(argv: list[str] | None = None) -> int:
    from famos.clients.batch.jobs_file import DEFAULT_MIN_DPI
    from famos.chunk_loop import MIN_CHUNK
    from famos.cli_parser import Parser
    from famos.memory import DEFAULT_CHUNK_HELP
    from famos.runners import add_runner_arguments
    from famos.tiff_cli import add_tiff_arguments

    parser = Parser(prog="famos batch", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=pathlib.Path, help="jobs file (.csv, .toml or .json)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--bundles", type=pathlib.Path,
                        help="look the model column up by name (its last component) in this folder")
    parser.add_argument("--min-dpi", type=float, default=DEFAULT_MIN_DPI, help="reject jobs printed below this DPI")
    parser.add_argument("--check", action="store_true", help="validate the jobs file and show the plan; render nothing")
    parser.add_argument("--quiet", action="store_true", help="no per-file progress lines")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in --out that are not this batch's own (its ledger's); those it re-renders anyway")
    local = parser.add_argument_group("local rendering")
    local.add_argument("--chunk", type=int, help=f"output chunk side in pixels (default: {DEFAULT_CHUNK_HELP})")
    local.add_argument("--workers", type=int, help="threads preparing chunk inputs (default: 2; on CUDA a quarter "
                       "of the cores, at least 2)")
    remote = parser.add_argument_group("rendering through a render server")
    remote.add_argument("--server", metavar="HOST:PORT", help="render on this server; the model column names its models")
    remote.add_argument("--token", help="bearer token for the server")
    remote.add_argument("--tls-ca", type=pathlib.Path, help="PEM root certificates: connect with TLS")
    add_runner_arguments(parser)
    add_tiff_arguments(parser)
    args = parser.parse_args(argv)

    from famos.clients.batch.engines import LocalEngine, ServerEngine
    from famos.errors import UserError
    from famos.runners import runner_options

    if not (math.isfinite(args.min_dpi) and args.min_dpi > 0):
        raise UserError(f"--min-dpi {args.min_dpi:g}: must be a positive number")
    if args.chunk is not None and args.chunk < MIN_CHUNK:
        raise UserError(f"--chunk {args.chunk}: must be at least {MIN_CHUNK} pixels")
    if args.server:
        if args.bundles:
            raise UserError("--bundles names local bundle folders; with --server the model column names served models")
        root_certificates = args.tls_ca.read_bytes() if args.tls_ca else None
        engine = ServerEngine(args.server, token=args.token, root_certificates=root_certificates)
    else:
        engine = LocalEngine(runner=runner_options(args), chunk=args.chunk, prepare_workers=args.workers)
    try:
        return _run(args, engine)
    finally:
        engine.close()


def _run(args: argparse.Namespace, engine) -> int:
    from famos.clients.batch.jobs_file import BatchSettings, load_jobs
    from famos.clients.batch.planning import unvaried_rows
    from famos.clients.batch.report import format_summary
    from famos.clients.batch.run import run_batch
    from famos.tiff_cli import tiff_options_from_args

    settings = BatchSettings(out=args.out, tiff=tiff_options_from_args(args), min_dpi=args.min_dpi, bundles=args.bundles,
                             overwrite=args.overwrite)
    jobs = load_jobs(args.jobs, engine=engine, settings=settings)
    for note in unvaried_rows(jobs, engine.noise_channels):
        print(f"famos batch: note: {note}", file=sys.stderr)
    if args.check:
        for job in jobs:
            width_cm, height_cm = job.print_size_cm
            names = ", ".join(o.name for o in job.outputs)
            print(f"row {job.row}: {job.model.name} {job.width}x{job.height} px at {job.dpi:.1f} dpi "
                  f"= {width_cm:.1f}x{height_cm:.1f} cm, seed {job.seed}, {job.compression.value} -> {names}")
        print(f"{len(jobs)} jobs valid")
        return 0
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    report = run_batch(jobs, engine=engine, settings=settings, log=log)
    print(format_summary(report))
    print(f"reports: {args.out / 'batch-report.csv'}, {args.out / 'batch-report.json'}")
    return 0 if report.ok else 1
