"""The hash-based dropout masks (p2p_demo.masks): pinned values, the JS twin, and every path using them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from p2p_demo import masks
from p2p_demo.masks import DropoutPlan, sample_seed, seeded_forward
from p2p_demo.nets import GeneratorConfig, SeededDropout, build_generator

JS = Path(__file__).resolve().parent.parent / "p2p_demo" / "static" / "p2p_masks.js"


def test_golden_values_stay_stable_across_versions():
    # Changing any of these changes every seed's pictures: bump masks.MASKS_VERSION and say so.
    assert masks.MASKS_VERSION == 1
    assert sample_seed(0, 0) == 4060026210734431648
    assert sample_seed(42, 3) == 6229588932981254576
    assert sample_seed(4294967295, 7) == 7080562161973857323
    assert sample_seed(2**32 + 42, 3) == sample_seed(42, 3)  # only the low 32 bits of a seed count
    assert masks.layer_key(5, 0) == 2527292570
    assert masks.hash32(123456789012345, 3, 5).tolist() == [4010939734, 688345870, 3561637768, 2357264996,
                                                            4023393162]
    m = masks.keep(sample_seed(0, 0), 0, (128, 2, 2), 0.5)
    assert int(m.sum()) == 251 and m.reshape(-1)[:8].tolist() == [True, True, True, False, False, False, False, False]


def test_masks_keep_about_half_and_differ_by_seed_layer_and_sample():
    a = masks.keep(sample_seed(1, 0), 0, (64, 16, 16), 0.5)
    assert abs(a.mean() - 0.5) < 0.01
    for other in (masks.keep(sample_seed(1, 1), 0, a.shape, 0.5), masks.keep(sample_seed(2, 0), 0, a.shape, 0.5),
                  masks.keep(sample_seed(1, 0), 1, a.shape, 0.5)):
        assert 0.45 < (a == other).mean() < 0.55  # independent-looking, not shifted copies
    assert abs(masks.keep(7, 0, (100_000,), 0.2).mean() - 0.8) < 0.005
    s = masks.scaled(7, 0, (10,), 0.5)
    assert s.dtype == np.float32 and set(s.tolist()) <= {0.0, 2.0}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_js_twin_gives_the_same_bits(tmp_path):
    cases = [(0, 0), (42, 3), (4294967295, 7), (123456, 0)]
    script = tmp_path / "t.mjs"
    script.write_text(f"""
import {{ sampleSeed, hash32, scaledInto }} from {json.dumps(JS.as_uri())};
const out = {{}};
out.seeds = {json.dumps(cases)}.map(([s, k]) => sampleSeed(s, k).toString());
out.hash = Array.from(hash32(123456789012345n, 3, 1000));
out.mask = Array.from(scaledInto(new Float32Array(4 * 8 * 8), sampleSeed(9, 2), 1, 0.5));
out.mask_p = Array.from(scaledInto(new Float32Array(500), 77n, 4, 0.3));
out.mask_channel = Array.from(scaledInto(new Float32Array(16 * 4 * 4), sampleSeed(9, 2), 2, 0.5, 16));
console.log(JSON.stringify(out));
""")
    got = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert [int(s) for s in got["seeds"]] == [sample_seed(s, k) for s, k in cases]
    assert got["hash"] == masks.hash32(123456789012345, 3, 1000).tolist()
    assert got["mask"] == masks.scaled(sample_seed(9, 2), 1, (4, 8, 8), 0.5).reshape(-1).tolist()
    assert np.array_equal(np.float32(got["mask_p"]), masks.scaled(77, 4, (500,), 0.3))
    assert got["mask_channel"] == masks.scaled(sample_seed(9, 2), 2, (16, 4, 4), 0.5, channel=True).reshape(-1).tolist()


def test_channel_masks_hold_one_draw_per_feature_map():
    seed = sample_seed(5, 1)
    m = masks.keep(seed, 2, (64, 8, 8), 0.5, channel=True)
    assert (m == m[:, :1, :1]).all()  # constant over each feature map
    assert 20 < m[:, 0, 0].sum() < 44  # about half the maps kept
    # the c-th channel's bit is the hash's c-th draw: the unit mask of a (C, 1, 1) layer
    assert np.array_equal(m[:, 0, 0], masks.keep(seed, 2, (64, 1, 1), 0.5)[:, 0, 0])
    assert not (masks.keep(seed, 2, (64, 8, 8), 0.5) == m).all()


@pytest.mark.parametrize("channel", [False, True])
def test_eager_dropout_and_the_plan_draw_the_hash_masks(channel):
    g = build_generator(GeneratorConfig(in_channels=1, ngf=4, num_downs=7, norm="instance",
                                        channel_dropout=channel)).eval()
    plan = DropoutPlan.of(g)
    assert plan.channel == [channel] * len(plan) and plan.to_dict()["channel"] == plan.channel
    layers = [m.layer for m in g.modules() if isinstance(m, SeededDropout)]
    assert layers == list(range(len(layers))) and sorted(plan.layers) == layers
    seeds = [sample_seed(3, k) for k in range(2)]
    drawn = plan.draw(seeds, 128, 128)
    for i, (m, shape) in enumerate(zip(plan.modules, plan.shapes(128, 128))):
        want = np.stack([masks.scaled(s, m.layer, shape, m.p, channel) for s in seeds])
        assert np.array_equal(drawn[i].numpy(), want)
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        eager = seeded_forward(g, x, seeds)
        assert all(m.masks is None for m in plan.modules)  # taken back after the call
        plan.set(drawn)
        given = g(x)
        plan.set(None)
    assert torch.equal(eager, given)


def test_dropout_levels_reach_outward_and_keep_the_inner_layers_masks():
    def plan_of(levels: int, dropout: bool = True) -> tuple[torch.nn.Module, DropoutPlan]:
        torch.manual_seed(0)
        g = build_generator(GeneratorConfig(in_channels=1, ngf=4, num_downs=8, norm="instance", channel_dropout=True,
                                            dropout_levels=levels, dropout=dropout)).eval()
        return g, DropoutPlan.of(g)

    g3, ref = plan_of(0)  # the reference's: the three ngf*8 levels of unet_256, innermost first
    assert (ref.channels, ref.strides, ref.layers) == ([32] * 3, [(64, 64), (32, 32), (16, 16)], [0, 1, 2])
    assert DropoutPlan.of(plan_of(3)[0]).strides == ref.strides
    _, inner = plan_of(1)
    assert (inner.channels, inner.strides, inner.layers) == ([32], [(64, 64)], [0])
    g4, out = plan_of(4)  # one level further out: the ngf*4 level's 16 maps at 1/8 of the input
    assert (out.channels, out.strides, out.layers) == ([32, 32, 32, 16], ref.strides + [(8, 8)], [0, 1, 2, 3])
    assert len(plan_of(6)[1]) == 6 and len(plan_of(4, dropout=False)[1]) == 0
    # no weights: the same state dict, and the inner layers keep their numbers, so their masks
    sd3, sd4 = g3.state_dict(), g4.state_dict()
    assert list(sd3) == list(sd4) and all(torch.equal(sd3[k], sd4[k]) for k in sd3)
    seeds = [sample_seed(5, k) for k in range(2)]
    m3, m4 = ref.draw(seeds, 256, 256), out.draw(seeds, 256, 256)
    assert all(torch.equal(a, b) for a, b in zip(m3, m4))
    # the outer level's masks are the only difference: with them all ones, the pictures are the reference's
    x = torch.rand(2, 1, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref.set(m3)
        want = g3(x)
        out.set(m4[:3] + [torch.ones_like(m4[3])])
        same = g4(x)
        out.set(m4)
        sampled = g4(x)
        ref.set(None), out.set(None)
    assert torch.equal(same, want) and (sampled - want).abs().mean() > 1e-3
    for bad in (7, -1):
        with pytest.raises(ValueError, match="dropout_levels must be 0 .* to num_downs - 2 = 6"):
            GeneratorConfig(num_downs=8, dropout_levels=bad)
    with pytest.raises(ValueError, match="huggan"):
        GeneratorConfig(layout="huggan", in_channels=3, ngf=8, num_downs=8, norm="instance", dropout_levels=4)


def test_channel_dropout_in_training_drops_whole_feature_maps():
    g = build_generator(GeneratorConfig(in_channels=1, ngf=4, num_downs=6, norm="instance", channel_dropout=True))
    drop = next(m for m in g.modules() if isinstance(m, SeededDropout))
    assert drop.channel and "channel" in repr(drop)
    drop.train()
    torch.manual_seed(0)
    y = drop(torch.ones(2, 32, 4, 4))
    per_map = y.flatten(2)
    assert (per_map == per_map[..., :1]).all() and set(per_map.unique().tolist()) == {0.0, 2.0}
    with pytest.raises(ValueError, match="huggan"):
        GeneratorConfig(layout="huggan", in_channels=3, ngf=8, num_downs=8, norm="instance", channel_dropout=True)
