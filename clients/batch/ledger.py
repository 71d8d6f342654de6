"""The ledger: ``OUT/batch-manifest.json``, every finished output with its size, checksum and a
fingerprint of what produced it, so a re-run verifies and skips what is done."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Callable

from famos.clients.batch.planning import Output, PrintJob
from famos.files import file_sha256, write_atomically
from famos.tiff_options import TiffOptions

LEDGER_NAME = "batch-manifest.json"
LEDGER_FORMAT = "famos-batch-manifest/1"


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    bytes: int
    sha256: str
    fingerprint: str  # what produced the file: model weights, content, seed, DPI, codec, region
    row: int


class Ledger:
    """``OUT/batch-manifest.json``, rewritten atomically after each finished output."""

    def __init__(self, path: pathlib.Path, *, log: Callable[[str], None]):
        self.path = path
        self.entries: dict[str, LedgerEntry] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("format") != LEDGER_FORMAT:
                    raise ValueError(f"format {data.get('format')!r}")
                self.entries = {k: LedgerEntry(**v) for k, v in data["outputs"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
                # a manifest we cannot trust only costs re-rendering; it never blocks the batch
                log(f"ignoring unreadable {path} ({err}): every output is re-rendered")

    def verified(self, name: str, fingerprint: str) -> bool:
        """Whether the file exists with the recorded size and checksum, made from the same inputs."""
        entry = self.entries.get(name)
        file = self.path.parent / name
        if entry is None or entry.fingerprint != fingerprint or not file.is_file():
            return False
        return file.stat().st_size == entry.bytes and file_sha256(file) == entry.sha256

    def record(self, name: str, entry: LedgerEntry) -> None:
        self.entries[name] = entry
        self._save()

    def forget(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self._save()

    def _save(self) -> None:
        outputs = {k: dataclasses.asdict(v) for k, v in sorted(self.entries.items())}
        write_atomically(self.path, json.dumps({"format": LEDGER_FORMAT, "outputs": outputs}, indent=1).encode())


def output_fingerprint(job: PrintJob, output: Output, *, model: str, options: TiffOptions) -> str:
    """Everything that determines an output's bytes; a change re-renders instead of skipping."""
    content = file_sha256(job.content) if job.content is not None else "default"
    recipe = {
        "model": model,
        "content": content,
        "seed": job.seed,
        "size": [job.height, job.width],
        "region": dataclasses.asdict(output.region) if output.region else None,
        "tiff": options.to_json(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
