"""Chunk planning invariants, property-based: exact partition, aligned windows inside the canvas."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from famos.config import GeneratorConfig, NoiseConfig, NoisePlacement, align_up
from famos.planning import Halo, Rect, halo_for, plan_chunks, receptive_reach


@st.composite
def plans(draw):
    alignment = 2 ** draw(st.integers(0, 5))
    height = align_up(draw(st.integers(1, 700)), alignment)
    width = align_up(draw(st.integers(1, 700)), alignment)
    y = draw(st.integers(0, height - 1))
    x = draw(st.integers(0, width - 1))
    region = Rect(y, x, draw(st.integers(1, height - y)), draw(st.integers(1, width - x)))
    halo = Halo(*(draw(st.integers(0, 4)) * alignment for _ in range(4)))
    chunk = draw(st.integers(1, 300))
    plan = plan_chunks(
        canvas_height=height, canvas_width=width, region=region, chunk_size=chunk, halo=halo, alignment=alignment
    )
    return plan, halo, alignment


@settings(max_examples=300, deadline=None)
@given(plans())
def test_chunks_cover_region_exactly_once(case):
    plan, _, _ = case
    region = plan.region
    covered = {}
    for chunk in plan.chunks:
        assert chunk.output.height >= 1 and chunk.output.width >= 1
        assert chunk.output.height <= plan.chunk_size and chunk.output.width <= plan.chunk_size
        for row in range(chunk.output.y, chunk.output.bottom):
            covered.setdefault(row, []).append((chunk.output.x, chunk.output.right))
    assert sorted(covered) == list(range(region.y, region.bottom))
    for spans in covered.values():
        spans.sort()
        assert spans[0][0] == region.x and spans[-1][1] == region.right
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no gap, no overlap
    assert sum(c.output.pixels for c in plan.chunks) == region.pixels


@settings(max_examples=300, deadline=None)
@given(plans())
def test_windows_aligned_inside_canvas_and_hold_the_halo(case):
    plan, halo, alignment = case
    canvas = Rect(0, 0, plan.canvas_height, plan.canvas_width)
    for chunk in plan.chunks:
        w, out = chunk.window, chunk.output
        assert canvas.contains(w) and w.contains(out)
        for edge in (w.y, w.x, w.bottom, w.right):
            assert edge % alignment == 0
        # The halo is present on every side, except where the canvas border clamps it.
        assert w.y == 0 or out.y - w.y >= halo.top
        assert w.x == 0 or out.x - w.x >= halo.left
        assert w.bottom == canvas.bottom or w.bottom - out.bottom >= halo.bottom
        assert w.right == canvas.right or w.right - out.right >= halo.right
        # ... and not more than one alignment step beyond it (no wasted compute).
        assert out.y - w.y < halo.top + alignment
        assert w.bottom - out.bottom < halo.bottom + alignment


def test_strips_are_rows_of_chunks():
    plan = plan_chunks(
        canvas_height=96, canvas_width=160, region=Rect(0, 0, 90, 150), chunk_size=32, halo=Halo(16, 16, 16, 16), alignment=16
    )
    strips = list(plan.strips())
    assert len(strips) == plan.n_rows == 3
    assert all(len(s) == plan.n_cols == 5 for s in strips)
    assert all(len({c.output.y for c in s}) == 1 for s in strips)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(chunk_size=0), "chunk size"),
        (dict(region=Rect(0, 0, 0, 5)), "region"),
        (dict(region=Rect(90, 0, 10, 5)), "outside the canvas"),
        (dict(canvas_height=90), "alignment"),
    ],
)
def test_bad_plans_name_the_problem(bad, message):
    args = dict(canvas_height=96, canvas_width=96, region=Rect(0, 0, 96, 96), chunk_size=32, halo=Halo(0, 0, 0, 0), alignment=16)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        plan_chunks(**args)


def test_default_architecture_reach_and_halo():
    # The paper's U-Net (depth 4, 5x5 kernels, the last up-block emitting the output): asymmetric reach.
    reach = receptive_reach(GeneratorConfig())
    assert (reach.before, reach.after) == (75, 60)
    assert halo_for(GeneratorConfig()) == Halo(80, 80, 64, 64)
    # The full-resolution head adds one 5x5 convolution at level 0: two pixels each way, same halo.
    head = receptive_reach(GeneratorConfig(full_resolution_head=True))
    assert (head.before, head.after) == (77, 62)
    assert halo_for(GeneratorConfig(full_resolution_head=True)) == Halo(80, 80, 64, 64)
    # Residual blocks and depth grow the reach; noise placement does not.
    assert receptive_reach(GeneratorConfig(n_res_blocks=1)).before > reach.before
    assert receptive_reach(GeneratorConfig(depth=5)).before > reach.before
    noisy = GeneratorConfig(noise=NoiseConfig(n_local=4, placement=NoisePlacement.INPUT))
    assert receptive_reach(noisy) == reach


@pytest.mark.parametrize(("side", "expected"), [(4096, 1.07), (16384, 1.13)])
def test_default_chunk_overhead_is_what_the_readme_says(side, expected):
    """The real default chunk (famos.renderer.DEFAULT_CHUNK) on the default U-Net: the halo costs
    the figures README and BENCHMARKS quote, and a smaller chunk would cost more."""
    from famos.config import CanvasConfig
    from famos.chunk_loop import DEFAULT_CHUNK
    from famos.chunk_loop import plan_for

    assert DEFAULT_CHUNK == 2048
    plan = plan_for(GeneratorConfig(), CanvasConfig(side, side), chunk_size=DEFAULT_CHUNK)
    assert plan.overhead == pytest.approx(expected, abs=0.005)
    assert plan_for(GeneratorConfig(), CanvasConfig(side, side), chunk_size=1024).overhead > plan.overhead + 0.1


def test_planning_and_the_onnx_path_import_no_torch():
    code = ("import famos.planning, famos.canvas, famos.chunk_loop, famos.renderer, famos.bundle, famos.runners, "
            "famos.clients.batch.engines, sys; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

