"""A tiny bundle's manifest.json under generated edits (hypothesis: other types, huge, negative and
non-finite numbers, deep nesting, missing and extra keys, unicode): loading gives a bundle or one
BundleError of one line, never another exception, and a bundle that loads can be summarised."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CanvasConfig, GeneratorConfig, make_bundle
from famos.export.inspect_bundle import summary
from famos.bundle import load_bundle
from famos.config import NoiseConfig
from famos.errors import BundleError

EXAMPLES = dict(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
DEEP = "@@deep@@"  # stands for a value nested too deeply for json.dumps to write

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([-1, 0, 1, 2**31, 2**63, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 256.0, 1e30, -0.0]),
    st.text(max_size=20), st.sampled_from(["", "é", "\u202e", "\ud800x", "../x", "famos-bundle/2", DEEP]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def paths(value, prefix=()):
    """Every place in a JSON tree, as the keys and indexes that lead there."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, prefix + (key,))


@st.composite
def edited_manifests(draw, manifest):
    edited = json.loads(json.dumps(manifest))
    for _ in range(draw(st.integers(1, 3))):
        places = list(paths(edited))[1:]
        if not places:  # every key deleted
            break
        path = draw(st.sampled_from(places))
        parent = edited
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(values)
        else:
            parent.append(draw(values))
        if path[0] == "files" and draw(st.booleans()):
            edited["files"] = json.loads(json.dumps(manifest["files"]))  # keep the checksums, to reach the checks behind them
    return edited


def manifest_text(manifest) -> str:
    text = json.dumps(manifest, ensure_ascii=False, allow_nan=True)
    return text.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    config = GeneratorConfig(depth=2, width=4, n_templates=2, noise=NoiseConfig(n_local=1))
    return make_bundle(tmp_path_factory.mktemp("fuzz-bundle"), config, CanvasConfig(64, 96))


@pytest.fixture(scope="module")
def copy(bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-copy") / "bundle"
    shutil.copytree(bundle, folder)
    return folder


def test_an_unedited_manifest_loads(bundle):
    assert load_bundle(bundle).manifest.spec.generator.depth == 2


@given(data=st.data())
@settings(**EXAMPLES)
def test_edited_manifests_load_or_are_one_line_bundle_errors(bundle, copy, data):
    original = json.loads((bundle / "manifest.json").read_text())
    edited = data.draw(edited_manifests(original))
    (copy / "manifest.json").write_text(manifest_text(edited), encoding="utf-8", errors="surrogatepass")
    try:
        loaded = load_bundle(copy)
    except BundleError as err:
        assert str(err) and "\n" not in str(err), str(err)
        return
    summary(loaded)
