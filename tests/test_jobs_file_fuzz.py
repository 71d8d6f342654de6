"""Generated jobs files (hypothesis: CSV, JSON and TOML with known and unknown fields, random,
huge and nested values, deep nesting, BOMs, other encodings) through ``load_jobs`` with a stand-in
engine: the outcome is jobs, or a UserError whose every line is one message, never another
exception."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from famos.clients.batch.fields import ModelRef
from famos.clients.batch.jobs_file import FIELDS, BatchSettings, JobsFileError, load_jobs
from famos.errors import UserError

EXAMPLES = dict(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


class AnyCanvas:
    """An engine that gives the bundle "poster" a 1500x1000 px canvas, knows no other, renders nothing."""

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        if model.name != "poster":
            raise UserError(f"{model.path}: no such bundle folder")
        return 1000, 1500

    def renders_any_size(self, model: ModelRef) -> bool:
        return True


plausible = st.sampled_from([
    "bundles/poster", "poster", "a.tif", "b", "content.png", "6000x4000", "0x0", "99999999x99999999", "2.5", "150",
    "60x40cm", "25.4x16.93cm", "1e400", "nan", "-inf", "-0", "0", "3x2", "1000000x1000000", "10mm", "32px", "-5cm",
    "lzw", "jpeg", "perceptual", "absolute", "9" * 5000, "..", ".", "../x.tif", "x\x00.tif", "\ufeffa.tif", "é.tif",
    "profile.icc", "content.png\x00", "", "a" * 300_000 + ".tif", "9" * 300_000, "1" * 300_000 + "x2",
])
texts = st.one_of(plausible, st.text(max_size=30), st.text(max_size=200_000).map(lambda t: t * 3 if len(t) > 100 else t))
scalars = st.one_of(texts, st.integers(), st.sampled_from([10**400, -(2**63), 2**64]), st.floats(), st.booleans(),
                    st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
field_names = st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS), st.text(max_size=10))
records = st.lists(st.dictionaries(field_names, values, max_size=8), max_size=4)


def as_csv(rows: list[dict]) -> str:
    names = list(dict.fromkeys(name for row in rows for name in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for row in rows:
        writer.writerow([row.get(name, "") for name in names])
    return buffer.getvalue()


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value, allow_nan=True).replace("NaN", "nan").replace("Infinity", "inf")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return json.dumps(str(value))


def as_toml(rows: list[dict]) -> str:
    return "".join("[[job]]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in row.items() if v is not None)
                   for row in rows)


def as_json(rows: list[dict]) -> str:
    return json.dumps({"jobs": rows} if len(rows) % 2 else rows, allow_nan=True)


@st.composite
def jobs_files(draw):
    suffix = draw(st.sampled_from([".csv", ".json", ".toml"]))
    rows = draw(records)
    if suffix == ".csv":
        rows = [{k: v if isinstance(v, str) else json.dumps(v, allow_nan=True) for k, v in row.items()} for row in rows]
    text = {".csv": as_csv, ".json": as_json, ".toml": as_toml}[suffix](rows)
    damage = draw(st.sampled_from(["none", "none", "bom", "deep", "truncate", "junk"]))
    if damage == "bom":
        text = "\ufeff" + text
    elif damage == "deep":
        text = {".json": "[" * 50_000 + "]" * 50_000, ".toml": "job = " + "[" * 50_000 + "]" * 50_000,
                ".csv": text + '"' + "x" * 200_000 + '"\n'}[suffix]
    elif damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "junk":
        text += draw(st.text(max_size=40))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1", "cp1252", "invalid"]))
    if encoding == "invalid":
        data = text.encode("utf-8", "surrogatepass") + b"\xff\xfe\x80"
    else:
        data = text.encode(encoding, "replace" if encoding in ("latin-1", "cp1252") else "surrogatepass")
    return suffix, data


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("fuzz-jobs")
    Image.new("RGB", (30, 20)).save(folder / "content.png")
    (folder / "profile.icc").write_bytes(b"not a profile")
    return folder


@given(jobs=jobs_files())
@settings(**EXAMPLES)
def test_jobs_files_give_jobs_or_one_line_per_row(folder, jobs):
    suffix, data = jobs
    path = folder / f"jobs{suffix}"
    path.write_bytes(data)
    try:
        loaded = load_jobs(path, engine=AnyCanvas(), settings=BatchSettings(out=folder / "out"))
    except JobsFileError as err:
        assert err.errors and all("\n" not in str(e) and len(str(e)) < 1000 for e in err.errors), err.errors[:3]
        assert len(str(err).splitlines()) == len(err.errors) + 1
        return
    except UserError as err:
        assert str(err) and "\n" not in str(err) and len(str(err)) < 1000, str(err)[:1000]
        return
    assert loaded and all(job.model.name == "poster" for job in loaded)
