"""The run keeps its best checkpoint: the rule on known numbers, then one short `famos train --preset
tiny` run whose quality measure is replaced by a known sequence, so the best step is known: the
files it writes, a resume that keeps (or improves) it, and `famos export` taking it by default."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from famos import checkpoint
from famos.cli import main as famos
from famos.export.writer import CheckpointChoice, CheckpointKind, choose_checkpoint
from famos.training.best import CONTENT_FLOOR, STYLE_FLOOR, BestCheckpoint, BestRecord, quality_score
from famos.training.metrics import Quality
from famos.training.plots import BEST_COLOUR, plot_quality

REFERENCE = Quality(content_error=0.02, style_distance=0.5)
# (content error, style distance) measured at steps 0 (before training: the reference), 1, ..., 6
MEASURED = [
    (0.02, 0.5),
    (0.02, 0.4),
    (0.02, 0.2),  # the best: 0.2 / 0.5 + 0.02 / 0.02 = 1.4
    (0.02, 0.3),
    (0.10, 0.15),  # the lowest style distance, but the content is lost: 0.3 + 5 = 5.3
    (0.02, 0.25),
    (0.02, 0.2),  # a tie with step 2: the earlier step stays
]
BEST_STEP, BEST_SCORE = 2, 1.4
TRAIN = ["--preset", "tiny", "--preview-every", "1", "--checkpoint-every", "1", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def measured_as(monkeypatch, values):
    """The loop's quality measure replaced by ``values`` (content error, style distance) in order."""
    from famos.training import loop

    sequence = iter(values)
    monkeypatch.setattr(loop, "_quality", lambda trainer: Quality(*next(sequence)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 6-step tiny run measured as MEASURED; its stderr."""
    out = tmp_path_factory.mktemp("best") / "run"
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as monkeypatch:
        measured_as(monkeypatch, MEASURED)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert famos(["train", "--steps", "6", "--out", str(out), *TRAIN]) == 0
    torch.set_num_threads(before)
    return out, err.getvalue()


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the rule -------------------------------------------------------------------------------------


def test_the_score_counts_both_numbers_relative_to_the_untrained_generator():
    assert quality_score(REFERENCE, reference=REFERENCE) == 2.0
    assert quality_score(Quality(0.01, 0.25), reference=REFERENCE) == pytest.approx(1.0)
    # neither alone decides: half the style distance at twice the content error is worse than no change
    assert quality_score(Quality(0.04, 0.25), reference=REFERENCE) > quality_score(REFERENCE, reference=REFERENCE)
    assert quality_score(Quality(0.01, 0.5), reference=REFERENCE) < 2.0  # a content gain alone counts too
    # no unit of its own: scaling a number in the measurement and the reference changes nothing
    scaled = quality_score(Quality(0.3, 4.0), reference=Quality(0.6, 10.0))
    assert scaled == pytest.approx(quality_score(Quality(0.003, 0.04), reference=Quality(0.006, 0.1)))
    # a reference near zero is floored: an invisible difference cannot decide
    assert quality_score(Quality(2e-4, 0.5), reference=Quality(0.0, 0.5)) == pytest.approx(1 + 2e-4 / CONTENT_FLOOR)
    assert quality_score(Quality(0.02, 2e-3), reference=Quality(0.02, 0.0)) == pytest.approx(1 + 2e-3 / STYLE_FLOOR)
    for broken in (Quality(math.nan, 0.1), Quality(0.01, math.inf)):
        assert quality_score(broken, reference=REFERENCE) == math.inf


def test_the_record_round_trips_through_json():
    record = BestRecord(step=7, quality=Quality(0.01, 0.2), score=0.9, reference_step=0, reference=REFERENCE)
    assert BestRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    with pytest.raises(ValueError):
        BestRecord.from_json({"step": 7})


# --- a run keeps its best -------------------------------------------------------------------------


def test_the_run_keeps_the_best_step_and_names_it(trained):
    run, err = trained
    record = json.loads((run / "best.json").read_text())
    assert record["step"] == BEST_STEP and record["score"] == pytest.approx(BEST_SCORE)
    assert (record["content_error"], record["style_distance"]) == MEASURED[BEST_STEP]
    assert record["reference"] == {"step": 0, "content_error": 0.02, "style_distance": 0.5}
    assert "untrained" in record["rule"] and record["checkpoint"] == "best.safetensors"
    # best.safetensors is that step's checkpoint: its weights, optimizer and RNG states, and its step
    best, header = checkpoint.load(run / "best.safetensors")
    snapshot, snapshot_header = checkpoint.load(run / "checkpoints" / "step_000002.safetensors")
    assert best.keys() == snapshot.keys()
    for name in best:
        assert torch.equal(best[name], snapshot[name]), name
    assert header["step"] == BEST_STEP and header["best"] == record
    assert {k: v for k, v in header.items() if k != "best"} == snapshot_header
    latest = checkpoint.load(run / "checkpoint.safetensors")[0]
    assert any(not torch.equal(best[k], latest[k]) for k in best if k.startswith("generator."))  # not step 6's
    # the log says when it improved, and the final line names the best step
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines if "best so far" in line] == ["step 1", "step 2"]
    assert "best step 2 (score 1.4000, the export default)" in lines[-1] and "best.safetensors" in lines[-1]
    # quality.png marks it
    chart = np.asarray(Image.open(run / "quality.png").convert("RGB"))
    assert np.all(chart == np.array(BEST_COLOUR, dtype=np.uint8), axis=2).sum() > 100


def test_the_chart_marks_the_best_step_only_when_there_is_one():
    rows = [{"step": s, "content_error": c, "style_distance": d} for s, (c, d) in enumerate(MEASURED)]

    def marked(chart):
        return int(np.all(chart == np.array(BEST_COLOUR, dtype=np.uint8), axis=2).sum())

    assert marked(plot_quality(rows, title="t", best_step=2)) > 100
    assert marked(plot_quality(rows, title="t")) == 0


def test_resume_keeps_the_best_and_replaces_it_only_with_a_better_score(trained, tmp_path, monkeypatch):
    run = copy_of(trained[0], tmp_path)
    before = (run / "best.safetensors").read_bytes(), (run / "best.json").read_text()
    measured_as(monkeypatch, [(0.02, 0.21), (0.02, 0.2)])  # steps 7, 8: close, never better
    assert famos(["train", "--out", str(run), "--resume", "--steps", "8", "--threads", "1", "--quiet"]) == 0
    assert ((run / "best.safetensors").read_bytes(), (run / "best.json").read_text()) == before
    # better than step 2 by the same reference (step 0's, not the resumed run's first measurement)
    measured_as(monkeypatch, [(0.01, 0.2)])
    assert famos(["train", "--out", str(run), "--resume", "--steps", "9", "--threads", "1", "--quiet"]) == 0
    record = json.loads((run / "best.json").read_text())
    assert record["step"] == 9 and record["score"] == pytest.approx(0.2 / 0.5 + 0.01 / 0.02)
    assert record["reference"]["step"] == 0
    assert checkpoint.read_header(run / "best.safetensors")["step"] == 9


def test_the_checkpoint_s_record_wins_over_a_stale_best_json(trained, tmp_path):
    """A kill between the two writes leaves best.json one best behind: resume repairs it."""
    run = copy_of(trained[0], tmp_path)
    record = json.loads((run / "best.json").read_text())
    (run / "best.json").write_text(json.dumps({**record, "step": 1, "score": 1.8}))
    best = BestCheckpoint(run, resume=True, measured=[])
    assert best.record.step == BEST_STEP and best.warnings == []
    assert json.loads((run / "best.json").read_text()) == record
    (run / "best.safetensors").unlink()
    forgotten = BestCheckpoint(run, resume=True, measured=[])
    assert forgotten.record is None and "missing" in forgotten.warnings[0]
    assert forgotten.reference is None  # no step-0 row given: the next measurement becomes the reference


def test_a_fresh_run_forgets_what_a_failed_run_left(trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    best = BestCheckpoint(run, resume=False, measured=[{"step": 0, "content_error": 0.1, "style_distance": 0.2}])
    assert best.record is None and best.reference == (0, Quality(0.1, 0.2))
    assert not (run / "best.safetensors").exists() and not (run / "best.json").exists()


# --- export takes it ------------------------------------------------------------------------------


def export(capsys, source, out, *args):
    capsys.readouterr()
    assert famos(["export", str(source), "--out", str(out), *map(str, args)]) == 0
    err = capsys.readouterr().err
    return json.loads((out / "manifest.json").read_text())["provenance"], err


def test_export_takes_the_best_by_default_and_another_on_request(trained, tmp_path, capsys):
    run = trained[0]
    provenance, err = export(capsys, run, tmp_path / "best")
    assert provenance["step"] == BEST_STEP and provenance["checkpoint_kind"] == "best"
    assert provenance["checkpoint"] == "best.safetensors"
    assert provenance["checkpoint_sha256"] == sha256(run / "best.safetensors")
    assert provenance["best"]["score"] == pytest.approx(BEST_SCORE)
    [line] = err.splitlines()
    assert line.startswith("famos export: the best checkpoint, step 2 (the default: the lowest quality score")
    assert line.endswith("--checkpoint latest for step 6")

    provenance, err = export(capsys, run, tmp_path / "latest", "--checkpoint", "latest")
    assert (provenance["step"], provenance["checkpoint_kind"]) == (6, "latest") and "best" not in provenance
    assert provenance["checkpoint_sha256"] == sha256(run / "checkpoint.safetensors")
    assert err.strip() == "famos export: the latest checkpoint, step 6 (asked)"

    provenance, _ = export(capsys, run, tmp_path / "step3", "--checkpoint", "3")
    assert (provenance["step"], provenance["checkpoint_kind"]) == (3, "snapshot")
    assert provenance["checkpoint_sha256"] == sha256(run / "checkpoints" / "step_000003.safetensors")


def test_a_checkpoint_file_exports_as_before_and_an_older_run_folder_its_latest(trained, tmp_path):
    """What export_bundle takes (the bundles themselves: the test above and tests/test_export.py)."""
    run = copy_of(trained[0], tmp_path)
    snapshot = run / "checkpoints" / "step_000004.safetensors"
    # a checkpoint file: no choice to announce, its kind told by its place
    assert choose_checkpoint(snapshot) == CheckpointChoice(snapshot, CheckpointKind.SNAPSHOT, "")
    assert choose_checkpoint(run / "best.safetensors").kind is CheckpointKind.BEST
    assert choose_checkpoint(run / "checkpoint.safetensors").kind is CheckpointKind.LATEST
    shutil.copyfile(snapshot, tmp_path / "model.safetensors")
    assert choose_checkpoint(tmp_path / "model.safetensors").kind is CheckpointKind.FILE
    assert choose_checkpoint(run, str(snapshot)) == CheckpointChoice(snapshot, CheckpointKind.SNAPSHOT, f"{snapshot} (asked)")
    # a run folder written before runs kept their best: its latest, and the line says why
    (run / "best.safetensors").unlink()
    (run / "best.json").unlink()
    chosen = choose_checkpoint(run)
    assert (chosen.path, chosen.kind) == (run / "checkpoint.safetensors", CheckpointKind.LATEST)
    assert chosen.reason.startswith("the latest checkpoint, step 6 (no best.safetensors in the run")


@pytest.mark.parametrize("source, which, message", [
    ("run", "best", "no best.safetensors in the run"),
    ("run", "5x", "'5x' is not best, latest, a step number or a checkpoint file"),
    ("run", "60", "no snapshot of step 60 in checkpoints/ (snapshots: 1, 2, 3, 4, 5, 6)"),
    ("file", "latest", "chooses within a run folder"),
])
def test_a_checkpoint_that_is_not_there_is_one_line(trained, tmp_path, capsys, source, which, message):
    run = copy_of(trained[0], tmp_path)
    (run / "best.safetensors").unlink()
    capsys.readouterr()
    path = run if source == "run" else run / "checkpoint.safetensors"
    assert famos(["export", str(path), "--out", str(tmp_path / "bundle"), "--checkpoint", which]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and message in err, err
    assert not (tmp_path / "bundle").exists()
