"""The batch loop: every job rendered (verified outputs skipped), one failure stopping nothing."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from famos.clients.batch.engines import Engine
from famos.clients.batch.jobs_file import BatchSettings
from famos.clients.batch.ledger import LEDGER_NAME, Ledger, LedgerEntry, output_fingerprint
from famos.clients.batch.planning import PrintJob
from famos.clients.batch.report import BatchReport, JobResult, JobStatus, write_reports
from famos.files import file_sha256
from famos.outputs import check_output


def run_batch(
    jobs: Sequence[PrintJob],
    *,
    engine: Engine,
    settings: BatchSettings,
    log: Callable[[str], None] = lambda line: None,
) -> BatchReport:
    """Render every job (skipping verified outputs) and write the reports; one failure stops nothing.

    KeyboardInterrupt stops the batch: the output being written is removed by the writer, the
    ledger keeps everything finished before it.
    """
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / LEDGER_NAME, log=log)
    start = time.perf_counter()
    results = []
    for index, job in enumerate(jobs, start=1):
        log(f"[{index}/{len(jobs)}] row {job.row}: {job.name} ({job.width}x{job.height} px at {job.dpi:.1f} dpi, "
            f"{len(job.outputs)} file{'s' if len(job.outputs) > 1 else ''})")
        results.append(_run_job(job, engine=engine, settings=settings, ledger=ledger, log=log))
    report = BatchReport(tuple(results), time.perf_counter() - start)
    write_reports(report, out)
    return report


def _run_job(job: PrintJob, *, engine: Engine, settings: BatchSettings, ledger: Ledger, log) -> JobResult:
    options = dataclasses.replace(
        settings.tiff, compression=job.compression, dpi=job.dpi,
        artist=settings.tiff.artist if job.artist is None else job.artist,
        copyright=settings.tiff.copyright if job.copyright is None else job.copyright,
        output_profile=settings.tiff.output_profile if job.output_profile is None else str(job.output_profile),
        intent=settings.tiff.intent if job.intent is None else job.intent,
        unit=job.unit,
    )
    start = time.perf_counter()
    rendered_pixels = size = 0
    rendered_files = 0

    def result(status: JobStatus, error: str = "") -> JobResult:
        return JobResult(
            row=job.row, output=job.name, model=job.model.name, status=status, width=job.width,
            height=job.height, dpi=job.dpi, files=len(job.outputs), bytes=size,
            rendered_pixels=rendered_pixels, seconds=time.perf_counter() - start, error=error,
        )

    try:
        model = engine.fingerprint(job.model)
        for output in job.outputs:
            path = settings.out / output.name
            fingerprint = output_fingerprint(job, output, model=model, options=options)
            if ledger.verified(output.name, fingerprint):
                size += ledger.entries[output.name].bytes
                log(f"    {output.name}: verified, skipped")
                continue
            # the batch replaces its own outputs (stale ones); never an input, nor a file it did not write
            check_output(path, option=f"row {job.row} output", inputs=(job.content, job.output_profile),
                         overwrite=settings.overwrite or output.name in ledger.entries)
            ledger.forget(output.name)  # a stale entry must not vouch for the file being replaced
            began = time.perf_counter()
            engine.render(job, output, path, options=options)
            entry = LedgerEntry(bytes=path.stat().st_size, sha256=file_sha256(path), fingerprint=fingerprint, row=job.row)
            ledger.record(output.name, entry)
            rendered_pixels += output.pixels(job)
            rendered_files += 1
            size += entry.bytes
            log(f"    {output.name}: {output.pixels(job) / 1e6:.2f} MP, {entry.bytes / 1e6:.2f} MB, "
                f"{time.perf_counter() - began:.2f} s")
    except Exception as err:  # noqa: BLE001 - one bad job must not stop the others; reported per job
        log(f"    failed: {err}")
        return result(JobStatus.FAILED, f"{type(err).__name__}: {err}")
    return result(JobStatus.DONE if rendered_files else JobStatus.SKIPPED)
