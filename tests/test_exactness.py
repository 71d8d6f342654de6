"""The central invariant: a canvas rendered in chunks equals one whole-canvas pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_content, tiny_model
from famos.config import BlendMode, CanvasConfig, Fold, GeneratorConfig, NoiseConfig, NoisePlacement
from famos.torch_runners import EagerRunner
from famos.planning import Rect, receptive_reach, halo_for
from famos.chunk_loop import WindowInputs, plan_for, render_chunks, render_strips

NOISE = NoiseConfig(n_global=2, n_local=3, n_periodic=2)

CASES = {
    "memory-mirror-noise": (GeneratorConfig(depth=3, width=8, n_templates=5, noise=NOISE), Fold.MIRROR, 1.0),
    "memory-wrap-scaled": (GeneratorConfig(depth=3, width=8, n_templates=3), Fold.WRAP, 0.7),
    "parametric": (GeneratorConfig(depth=3, width=8, n_templates=0, blend=BlendMode.PAINT, noise=NOISE), Fold.WRAP, 1.0),
    "residual-input-noise": (
        GeneratorConfig(
            depth=2, width=8, n_templates=4, n_res_blocks=1, skip=False,
            noise=NoiseConfig(n_local=2, n_periodic=1, placement=NoisePlacement.INPUT),
        ),
        Fold.MIRROR,
        1.3,
    ),
    "depth4-copy": (GeneratorConfig(depth=4, width=6, n_templates=6, blend=BlendMode.COPY, noise=NOISE), Fold.MIRROR, 1.0),
    # The decoder of models made before the paper's became the default.
    "head-mirror-noise": (GeneratorConfig(depth=3, width=8, n_templates=5, noise=NOISE, full_resolution_head=True),
                          Fold.MIRROR, 1.0),
    # The seed's options: multi-scale mixing at every decoder level, the refine U-Net, and the
    # U-Net's own switches (no skip connections, no ψ copies, a narrower bottleneck).
    "multiscale-mirror-noise": (GeneratorConfig(depth=3, width=8, n_templates=5, noise=NOISE, multi_scale=True),
                                Fold.MIRROR, 1.0),
    "refine-wrap-noise": (GeneratorConfig(depth=3, width=8, n_templates=4, noise=NOISE, refine=True), Fold.WRAP, 1.0),
    "multiscale-refine-input-noise": (
        GeneratorConfig(depth=2, width=6, n_templates=3, multi_scale=True, refine=True, n_res_blocks=1,
                        noise=NoiseConfig(n_local=2, placement=NoisePlacement.INPUT)),
        Fold.MIRROR,
        0.8,
    ),
    "noskip-nocoord-bottleneck": (
        GeneratorConfig(depth=3, width=8, n_templates=4, skip=False, coord_copy=False, bottleneck_width=12, noise=NOISE),
        Fold.MIRROR,
        1.0,
    ),
    "head-residual-input-noise": (
        GeneratorConfig(
            depth=2, width=8, n_templates=4, n_res_blocks=1, skip=False, full_resolution_head=True,
            noise=NoiseConfig(n_local=2, n_periodic=1, placement=NoisePlacement.INPUT),
        ),
        Fold.WRAP,
        1.3,
    ),
}


def whole_and_chunked(config, fold, scale, chunk_sizes, *, region=None, canvas_hw=(101, 147)):
    canvas = CanvasConfig(*canvas_hw, style_scale=scale, fold=fold, template_seed=7)
    model = tiny_model(config, canvas)
    inputs = WindowInputs(config=config, canvas=canvas, content=random_content(), seed=11)
    run = EagerRunner(model)
    whole_plan = plan_for(config, canvas, chunk_size=10**6)
    assert len(whole_plan.chunks) == 1
    (_, whole), = render_chunks(whole_plan, inputs, run)
    whole8 = np.concatenate(list(render_strips(whole_plan, inputs, run)))
    results = {}
    for size in chunk_sizes:
        plan = plan_for(config, canvas, chunk_size=size, region=region)
        diffs = [
            np.abs(pixels - whole[:, r.y : r.bottom, r.x : r.right]).max()
            for r, pixels in render_chunks(plan, inputs, run)
        ]
        image8 = np.concatenate(list(render_strips(plan, inputs, run)))
        results[size] = (max(diffs), image8, len(plan.chunks))
    return whole, whole8, results


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_equals_whole_canvas(case):
    config, fold, scale = CASES[case]
    # Canvas 101x147: a multiple of neither the chunk sizes nor the alignment.
    _, whole8, results = whole_and_chunked(config, fold, scale, [24, 40, 64])
    for size, (max_diff, image8, n_chunks) in results.items():
        assert n_chunks > 1
        assert max_diff <= 1e-5, f"chunk {size}: max |diff| {max_diff}"
        assert image8.shape == whole8.shape == (101, 147, 3)
        assert np.array_equal(image8, whole8), f"chunk {size}: 8-bit output differs"


def test_region_render_equals_crop_of_whole():
    config, fold, scale = CASES["memory-mirror-noise"]
    region = Rect(13, 29, 70, 91)
    _, whole8, results = whole_and_chunked(config, fold, scale, [32], region=region)
    assert np.array_equal(results[32][1], whole8[13:83, 29:120])


def test_exactness_test_can_fail():
    """Windows without their halo must differ: proves the comparison above has teeth."""
    config, fold, scale = CASES["memory-mirror-noise"]
    canvas = CanvasConfig(101, 147, fold=fold)
    model = tiny_model(config, canvas)
    inputs = WindowInputs(config=config, canvas=canvas, content=random_content(), seed=11)
    run = EagerRunner(model)
    whole = run(*inputs(Rect(0, 0, 104, 152)))[0]
    part = run(*inputs(Rect(32, 32, 32, 32)))[0]
    assert np.abs(part - whole[:, 32:64, 32:64]).max() > 1e-3


def empirical_reach(config: GeneratorConfig) -> tuple[int, int]:
    """Perturb one content pixel at every phase mod the alignment; see how far the output moves."""
    size = 8 * config.alignment + 2 * max(receptive_reach(config).before, 64)
    size -= size % config.alignment
    canvas = CanvasConfig(size, size, fold=Fold.WRAP)
    model = tiny_model(config, canvas)
    origin = torch.zeros(1, 2, dtype=torch.int64)
    base = torch.from_numpy(random_content(shape=(size, size)).transpose(2, 0, 1).copy())[None]
    before = after = 0
    with torch.no_grad():
        reference = model(base, origin)[0]
        for phase in range(config.alignment):
            p = size // 2 - size // 2 % config.alignment + phase
            poked = base.clone()
            poked[:, :, p, p] += 5.0
            moved = (model(poked, origin)[0] - reference).abs().amax(dim=(0, 1, 3)) > 0
            rows = torch.nonzero(moved).flatten()
            # Output row y reads inputs [y - before, y + after]: rows below p show `before`.
            before = max(before, int(rows.max()) - p)
            after = max(after, p - int(rows.min()))
    return before, after


@pytest.mark.parametrize(
    "config",
    [
        GeneratorConfig(depth=3, width=4, n_templates=2),
        GeneratorConfig(depth=2, width=4, n_templates=2, n_res_blocks=1),
        GeneratorConfig(depth=4, width=4, n_templates=0, blend=BlendMode.PAINT),
        GeneratorConfig(depth=3, width=4, n_templates=2, full_resolution_head=True),
        GeneratorConfig(depth=2, width=4, n_templates=2, n_res_blocks=1, skip=False, full_resolution_head=True),
        GeneratorConfig(depth=3, width=4, n_templates=2, multi_scale=True),
        GeneratorConfig(depth=3, width=4, n_templates=2, refine=True),
        GeneratorConfig(depth=2, width=4, n_templates=2, n_res_blocks=1, refine=True, multi_scale=True),
    ],
    ids=["depth3", "depth2-res", "depth4-parametric", "depth3-head", "depth2-res-noskip-head", "depth3-multiscale",
         "depth3-refine", "depth2-res-refine-multiscale"],
)
def test_empirical_receptive_field_within_halo(config):
    before, after = empirical_reach(config)
    reach, halo = receptive_reach(config), halo_for(config)
    assert before <= reach.before and after <= reach.after
    assert before <= halo.top and halo.top - before < config.alignment
    assert after <= halo.bottom and halo.bottom - after < config.alignment
