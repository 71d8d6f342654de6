"""`famos client --server HOST:PORT COMMAND`: use a FAMOS render server from the command line.

    famos client --server host:50051 models
    famos client --server host:50051 render MODEL --out mosaic.tif [--content IMG] [--size WxH | --scale F |
                                            --print-size 60x40cm --dpi 150] [TIFF options]
    famos client --server host:50051 submit MODEL [--name print.tif] [--watch] [same options]
    famos client --server host:50051 watch JOB | cancel JOB | jobs [--json] | download JOB --out FILE

The token comes from --token or $FAMOS_TOKEN; --tls (system roots) or --tls-ca FILE enable TLS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys


def main(argv: list[str] | None = None) -> int:
    from famos.cli_parser import Parser
    from famos.request_args import add_request_arguments

    parser = Parser(prog="famos client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="HOST:PORT of `famos serve`")
    parser.add_argument("--token", default=os.environ.get("FAMOS_TOKEN"), help="bearer token (default: $FAMOS_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    parser.add_argument("--tls-ca", type=pathlib.Path, help="TLS, trusting this PEM CA (or self-signed) certificate")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("models", help="list the server's models")

    def render_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("model", help="model name (see `models`)")
        add_request_arguments(sub, chunk_default="the server's default")

    render = commands.add_parser("render", help="stream a render and write the TIFF here")
    render_arguments(render)
    render.add_argument("--out", type=pathlib.Path, required=True, help=".tif or .tiff file")
    render.add_argument("--quiet", action="store_true", help="no progress lines")
    render.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    submit = commands.add_parser("submit", help="queue a render job on the server; prints the job")
    render_arguments(submit)
    submit.add_argument("--name", default="", help="output file name in the server's store (default: JOB.tif)")
    submit.add_argument("--watch", action="store_true", help="then follow its progress until it is final")

    for name, help_ in (("watch", "follow a job until it is final"), ("cancel", "cancel a job")):
        commands.add_parser(name, help=help_).add_argument("job", help="job id")
    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--limit", type=int, default=0, help="at most this many jobs (default 0: all)")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job and line instead of a table")
    download = commands.add_parser("download", help="download a finished job's TIFF")
    download.add_argument("job", help="job id")
    download.add_argument("--out", type=pathlib.Path, required=True, help="where to write the job's TIFF")
    download.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)

    from famos.clients.render_client import RenderClient
    from famos.errors import UserError
    from famos.request_args import request_from_args

    if args.command in ("render", "download"):  # before any call: an output never replaces what it should not
        from famos.outputs import check_output

        if args.command == "render" and args.out.suffix.lower() not in (".tif", ".tiff"):
            raise UserError(f"--out {args.out}: use a .tif or .tiff file name")
        if not args.out.parent.is_dir():
            raise UserError(f"--out {args.out}: folder {args.out.parent} does not exist")
        check_output(args.out, option="--out", inputs=(getattr(args, "content", None),), overwrite=args.overwrite)
    root = args.tls_ca.read_bytes() if args.tls_ca else None
    with RenderClient(args.server, token=args.token, tls=args.tls, root_certificates=root) as client:
        if args.command == "models":
            for model in client.models():
                print(json.dumps(dataclasses.asdict(model)))
            return 0
        if args.command in ("render", "submit"):
            request = request_from_args(args, args.model)
            if request.seed:
                from famos.values import unseeded

                unchanged = unseeded(request.seed, client.model(request.model).noise_channels)
                if unchanged:
                    print(f"famos client: note: {unchanged}", file=sys.stderr)
            if args.command == "render":
                result = client.render_to_tiff(request, args.out, progress=None if args.quiet else _print_progress)
                print(json.dumps({"path": str(result.tiff.path), "width": result.region.width,
                                  "height": result.region.height, "bytes": result.tiff.bytes_written}))
                return 0
            job = client.submit(request, output_name=args.name)
            _print_job(job)
            if not args.watch:
                return 0
            return _follow(client, job.id)
        if args.command == "watch":
            return _follow(client, args.job)
        if args.command == "cancel":
            _print_job(client.cancel(args.job))
            return 0
        if args.command == "jobs":
            listed = client.jobs(args.limit)
            if args.json:
                for job in listed:
                    _print_job(job)
            else:
                print(jobs_table(listed))
            return 0
        if args.command == "download":
            job = client.download(args.job, args.out)
            print(json.dumps({"path": str(args.out), "bytes": job.size_bytes, "sha256": job.sha256}))
            return 0
    raise AssertionError(args.command)  # argparse allows only the commands above


def _print_progress(progress) -> None:
    print(f"{100.0 * progress.fraction:5.1f}%  {progress.pixels_done / 1e6:.2f}/{progress.pixels_total / 1e6:.2f} MP  "
          f"{progress.seconds:.1f} s", file=sys.stderr)


def _print_job(job) -> None:
    record = dataclasses.asdict(job)
    record["state"] = job.state.value
    print(json.dumps(record))


JOB_COLUMNS = ("id", "name", "state", "done", "pixels", "MB", "submitted", "finished")
_RIGHT_ALIGNED = {"done", "pixels", "MB"}


def jobs_table(jobs) -> str:
    """Jobs as a person reads them: a header and one row each, times local. (The Job record has no
    width and height, only the pixel count, so a job's size is its megapixels.)"""
    rows = [JOB_COLUMNS, *(_job_row(job) for job in jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(JOB_COLUMNS))]
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
                 for name, cell, width in zip(JOB_COLUMNS, row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _job_row(job) -> tuple[str, ...]:
    done = 100.0 * job.strips_done / job.strips_total if job.strips_total else 0.0
    return (
        job.id[:12], job.output_name, job.state.value, f"{done:.0f}%", f"{job.pixels_total / 1e6:,.2f} MP",
        f"{job.size_bytes / 1e6:,.2f}" if job.size_bytes else "-",
        _local_time(job.created_at), _local_time(job.updated_at) if job.state.final else "-",
    )


def _local_time(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _follow(client, job_id: str) -> int:
    """Print the job at every change; exit status 0 only when it succeeded."""
    from famos.values import JobState

    job = None
    for job in client.watch(job_id):
        _print_job(job)
    return 0 if job is not None and job.state is JobState.SUCCEEDED else 1
