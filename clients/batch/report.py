"""The batch report: what happened to each job, as a table, ``batch-report.csv`` and ``.json``."""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
import pathlib
from typing import Any

from famos.files import write_atomically

REPORT_NAME = "batch-report"  # .csv and .json


class JobStatus(enum.Enum):
    DONE = "done"  # rendered now (some outputs may have been verified and kept)
    SKIPPED = "skipped"  # every output verified from an earlier run
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class JobResult:
    row: int
    output: str
    model: str
    status: JobStatus
    width: int
    height: int
    dpi: float
    files: int
    bytes: int  # all of the job's files
    rendered_pixels: int  # pixels rendered in this run (panels count their overlap)
    seconds: float
    error: str = ""

    @property
    def print_size_cm(self) -> tuple[float, float]:
        return self.width / self.dpi * 2.54, self.height / self.dpi * 2.54


@dataclasses.dataclass(frozen=True)
class BatchReport:
    results: tuple[JobResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.status is not JobStatus.FAILED for r in self.results)

    @property
    def rendered_pixels(self) -> int:
        return sum(r.rendered_pixels for r in self.results)

    @property
    def megapixels_per_second(self) -> float:
        return self.rendered_pixels / 1e6 / self.seconds if self.seconds > 0 else 0.0


_REPORT_COLUMNS = ("row", "output", "model", "status", "width", "height", "dpi", "print_width_cm",
                   "print_height_cm", "files", "bytes", "rendered_pixels", "seconds", "error")


def _report_record(result: JobResult) -> dict[str, Any]:
    record = dataclasses.asdict(result)
    record["status"] = result.status.value
    record["dpi"] = round(result.dpi, 2)
    record["print_width_cm"], record["print_height_cm"] = (round(v, 1) for v in result.print_size_cm)
    record["seconds"] = round(result.seconds, 3)
    return record


def _inert(value):
    """A cell a spreadsheet shows as text: names and error messages come from the jobs file, and a
    leading = + - @ (or tab, CR) would make Excel or LibreOffice run it as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_reports(report: BatchReport, out: pathlib.Path) -> None:
    """``batch-report.csv`` (one row per job) and ``batch-report.json`` (jobs and totals)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_REPORT_COLUMNS)
    writer.writeheader()
    for result in report.results:
        writer.writerow({k: _inert(v) for k, v in _report_record(result).items()})
    write_atomically(out / f"{REPORT_NAME}.csv", buffer.getvalue().encode())
    summary = {
        "ok": report.ok,
        "jobs": len(report.results),
        **{status.value: sum(r.status is status for r in report.results) for status in JobStatus},
        "rendered_megapixels": round(report.rendered_pixels / 1e6, 3),
        "seconds": round(report.seconds, 3),
        "megapixels_per_second": round(report.megapixels_per_second, 3),
    }
    data = {"summary": summary, "jobs": [_report_record(r) for r in report.results]}
    write_atomically(out / f"{REPORT_NAME}.json", json.dumps(data, indent=1).encode())


def format_summary(report: BatchReport) -> str:
    """The table printed at the end of a batch."""
    header = ("row", "output", "status", "pixels", "dpi", "print (cm)", "files", "MB", "seconds", "error")
    lines = [header]
    for r in report.results:
        width_cm, height_cm = r.print_size_cm
        lines.append((
            str(r.row), r.output, r.status.value, f"{r.width}x{r.height}", f"{r.dpi:.1f}",
            f"{width_cm:.1f}x{height_cm:.1f}", str(r.files),
            f"{r.bytes / 1e6:.2f}", f"{r.seconds:.2f}", r.error,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + ("  " + line[-1] if line[-1] else "")
             for line in lines]
    counts = ", ".join(f"{sum(r.status is s for r in report.results)} {s.value}" for s in JobStatus)
    table.append(
        f"{len(report.results)} jobs: {counts}; rendered {report.rendered_pixels / 1e6:.2f} MP in "
        f"{report.seconds:.2f} s ({report.megapixels_per_second:.2f} MP/s)"
    )
    return "\n".join(line.rstrip() for line in table)
