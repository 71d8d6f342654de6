"""The run's best checkpoint: which measurement is best, RUN/best.safetensors and RUN/best.json.

A GAN's last step is not always its best ("early stopping may be useful", the paper says). The run
measures content error and style distance before training (step 0), at every preview and at the
end (training/metrics.py); after each measurement this module keeps the best step so far:

    RUN/best.safetensors   that step's full checkpoint, the format of checkpoint.safetensors (its
                           header's "step" is the best step; resumable like any checkpoint), with
                           the record below in its header under "best"
    RUN/best.json          the record: step, content_error, style_distance, score, reference, rule

Both are written atomically, the checkpoint first: it is the commit point, and its header's record
wins on resume if a kill between the two writes left best.json one best behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

from famos.checkpoint import BEST_FILE, BEST_KEY, BEST_RECORD_FILE, CheckpointError, read_header, save
from famos.errors import UserError
from famos.files import write_atomically
from famos.training.metrics import Quality
from famos.training.trainer import Trainer

# Below these a reference is as good as zero (content error: blurred grey MSE, 1e-4 is a 1 % grey
# difference; style distance: sliced Wasserstein in [0, 1]): dividing by a smaller one would let an
# invisible difference decide.
CONTENT_FLOOR = 1e-4
STYLE_FLOOR = 1e-3
RULE = ("score = style_distance / reference style_distance + content_error / reference content_error, "
        "the reference being the untrained generator's (step 0); the lowest score of a trained step is "
        "best, a tie keeps the earlier step")


def quality_score(quality: Quality, *, reference: Quality) -> float:
    """The score of a measurement: lower is better; infinite when either number is not finite.

    Why this rule. Style distance is what a mosaic is for; the content error guards the picture, and
    neither alone may decide: a model that copies the content has a low content error and no style,
    one that forgot the content may match the style's patches best. The two numbers have scales of
    their own run (the content image's contrast sets one, the style's texture the other), so a raw
    sum would let the larger decide. Divided by its value before training each becomes "the fraction
    of the untrained error left", dimensionless, and the two count equally: halving the style
    distance while doubling the content error (0.5 + 2) scores worse than changing neither (1 + 1).

    Rejected: the lowest style distance among measurements whose content error is within a
    tolerance of the run's best content error. A later, lower content error moves that gate, and
    can crown an earlier step whose weights are gone (a preview is no snapshot). With a fixed
    reference a measurement's score is final when it is taken, so the running minimum is the
    minimum of the run, and a resumed run continues it.
    """
    style = quality.style_distance / max(reference.style_distance, STYLE_FLOOR)
    content = quality.content_error / max(reference.content_error, CONTENT_FLOOR)
    score = style + content
    return score if math.isfinite(score) else math.inf


@dataclasses.dataclass(frozen=True)
class BestRecord:
    step: int
    quality: Quality
    score: float
    reference_step: int
    reference: Quality

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "content_error": self.quality.content_error,
            "style_distance": self.quality.style_distance,
            "score": self.score,
            "reference": {"step": self.reference_step, "content_error": self.reference.content_error,
                          "style_distance": self.reference.style_distance},
            "rule": RULE,
            "checkpoint": BEST_FILE,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BestRecord:
        """The record of best.json or of best.safetensors' header; ValueError when it is not one."""
        try:
            reference = data["reference"]
            return cls(
                step=int(data["step"]),
                quality=Quality(float(data["content_error"]), float(data["style_distance"])),
                score=float(data["score"]),
                reference_step=int(reference["step"]),
                reference=Quality(float(reference["content_error"]), float(reference["style_distance"])),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a best-checkpoint record ({type(err).__name__}: {err})") from None


class BestCheckpoint:
    """The best step so far of one run folder, kept across resumes: a resumed run reads it back
    and replaces it only with a strictly lower score (with the same reference)."""

    def __init__(self, run_dir: pathlib.Path, *, resume: bool, measured: list[dict[str, float]]):
        """``measured``: quality.csv's rows (the step-0 row is the reference of a run that has no
        record yet). A fresh run removes what a failed run before it left in the folder."""
        self.path = run_dir / BEST_FILE
        self.record_path = run_dir / BEST_RECORD_FILE
        self.warnings: list[str] = []
        self.record: BestRecord | None = None
        if resume:
            self.record = self._read()
        else:
            self.path.unlink(missing_ok=True)
            self.record_path.unlink(missing_ok=True)
        first = measured[0] if measured and measured[0]["step"] == 0 else None
        self.reference: tuple[int, Quality] | None = (
            (self.record.reference_step, self.record.reference) if self.record
            else (0, Quality(first["content_error"], first["style_distance"])) if first else None
        )

    def consider(self, trainer: Trainer, quality: Quality) -> bool:
        """After a measurement of the trainer's current weights: keep them if they are the best."""
        step = trainer.step
        if self.reference is None:  # a run resumed from before quality.csv: its first measurement
            self.reference = (step, quality)
        if step == 0:
            return False  # the untrained generator is the reference, no candidate
        score = quality_score(quality, reference=self.reference[1])
        if not score < (self.record.score if self.record else math.inf):
            return False
        record = BestRecord(step=step, quality=quality, score=score,
                            reference_step=self.reference[0], reference=self.reference[1])
        try:
            save(self.path, trainer.tensors(), trainer.metadata() | {BEST_KEY: record.to_json()})
            self._write_record(record)
        except OSError as err:
            raise UserError(f"{self.path}: cannot write the best checkpoint ({err.strerror or err}); "
                            f"the previous one is intact") from None
        self.record = record
        return True

    def _write_record(self, record: BestRecord) -> None:
        write_atomically(self.record_path, (json.dumps(record.to_json(), indent=2) + "\n").encode())

    def _read(self) -> BestRecord | None:
        """best.json, checked against best.safetensors' header (which wins: it is written first)."""
        try:
            listed = BestRecord.from_json(json.loads(self.record_path.read_text()))
        except FileNotFoundError:
            listed = None
        except ValueError as err:  # json's errors are ValueErrors too
            self.warnings.append(f"{self.record_path}: unreadable ({err}); the record is read from {self.path.name}")
            listed = None
        if not self.path.exists():
            if listed is not None:
                self.warnings.append(f"{self.path} is missing: the best of step {listed.step} is forgotten, "
                                     "the best is chosen anew from now")
            return None
        try:
            stored = BestRecord.from_json(read_header(self.path).get(BEST_KEY))
        except (CheckpointError, ValueError) as err:
            self.warnings.append(f"{self.path}: no best record in it ({err}); the best is chosen anew from now")
            return None
        if stored != listed:
            self._write_record(stored)
        return stored
