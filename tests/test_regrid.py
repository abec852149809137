"""A transposed-convolution decoder turned into a resize-convolution one (train.regrid,
`fit --init-from MODEL --upsample resize`): what a resize convolution can compute is kept exactly,
the phase-specific rest is projected away, the raw weights and EMA both convert, and what cannot be
converted is refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from p2p_demo.masks import seeded_forward
from p2p_demo.nets import GeneratorConfig, build_generator, resize_as_transpose as transpose_kernel
from train import fit as fit_mod
from train.config import ConfigError, TrainConfig
from train.lineage import load_init_source
from train.regrid import CannotRegrid, _up_steps, regrid, regrid_state, resize_kernel
from conftest import make_trainer, tiny, trained_like

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

BASE = dict(ngf=8, num_downs=6, norm="instance", in_channels=1)


def test_a_resize_kernel_and_its_transposed_twin_compute_the_same():
    torch.manual_seed(0)
    v = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    w = transpose_kernel(v)
    assert w.shape == (5, 7, 4, 4)
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    deconv = F.conv_transpose2d(x, w, stride=2, padding=1)
    resized = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), v, padding=1)
    assert deconv.shape == resized.shape == (2, 7, 18, 22)
    assert float((deconv - resized).abs().max()) < 1e-10
    assert torch.allclose(resize_kernel(w), v, atol=1e-10)  # the projection keeps what is in range


def test_the_projection_removes_the_checkerboard_part_only():
    # a kernel whose two output phases get different gains draws a checkerboard from a flat input;
    # its projection draws the flat field the phases share
    w = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    w[0, 0, 1, 1] = 1.0  # only the even-even phase sees the input
    flat = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    board = F.conv_transpose2d(flat, w, stride=2, padding=1)[0, 0, 2:-2, 2:-2]
    assert float(board[::2, ::2].mean()) == 1.0 and float(board[1::2, 1::2].mean()) == 0.0
    v = resize_kernel(w)
    out = F.conv2d(F.interpolate(flat, scale_factor=2, mode="nearest"), v, padding=1)[0, 0, 2:-2, 2:-2]
    assert float(out.std()) < 1e-10  # one value everywhere: no phase differs
    assert 0.2 < float(out.mean()) < 0.3  # the quarter of the gain the four phases had on average



def test_a_generator_whose_decoder_a_resize_one_can_compute_converts_exactly():
    resize_cfg = GeneratorConfig(**BASE, upsample="resize")
    R = trained_like(resize_cfg)
    # its transposed twin: the same weights, each decoder step as the equivalent transposed convolution
    T = build_generator(GeneratorConfig(**BASE))
    state = dict(R.state_dict())
    for (r_name, _), (t_name, _) in zip(_up_steps(R), _up_steps(T)):
        state[f"{t_name}.weight"] = transpose_kernel(state.pop(f"{r_name}.1.weight"))
        state[f"{t_name}.bias"] = state.pop(f"{r_name}.1.bias")
    T.load_state_dict(state)
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    back = regrid(T, resize_cfg)
    assert back.config == resize_cfg
    with torch.no_grad():
        ref, twin, out = (seeded_forward(g, x, None) for g in (R, T, back))
        assert float(ref.std()) > 0.1
        assert float((ref - twin).abs().max()) < 1e-4
        assert float((ref - out).abs().max()) < 1e-4
        # dropout masks sit where they did: a seed samples the same picture in both
        assert float((seeded_forward(R, x, [1, 2]) - seeded_forward(back, x, [1, 2])).abs().max()) < 1e-4


def test_a_trained_decoder_keeps_its_encoder_and_loses_only_phase_specific_weights():
    T = trained_like(GeneratorConfig(**BASE))
    R = regrid(T, GeneratorConfig(**BASE, upsample="resize"))
    t, r = T.state_dict(), R.state_dict()
    assert torch.equal(t["model.model.0.weight"], r["model.model.0.weight"])  # the first down conv, untouched
    assert t["model.model.3.weight"].shape == (16, 3, 4, 4) and r["model.model.3.1.weight"].shape == (3, 16, 3, 3)
    assert torch.equal(t["model.model.3.bias"], r["model.model.3.1.bias"])
    assert len(t) == len(r)


def test_what_cannot_be_converted_is_refused():
    T = build_generator(GeneratorConfig(**BASE))
    with pytest.raises(CannotRegrid, match="only --upsample"):
        regrid(T, GeneratorConfig(**{**BASE, "ngf": 12}, upsample="resize"))
    with pytest.raises(CannotRegrid, match="transposed to resize"):
        regrid(build_generator(GeneratorConfig(**BASE, upsample="resize")), GeneratorConfig(**BASE))
    hug = GeneratorConfig(ngf=4, layout="huggan", norm="instance")
    with pytest.raises(CannotRegrid, match="reference-layout"):
        regrid_state(build_generator(hug).state_dict(), hug, GeneratorConfig(**BASE, upsample="resize"))


def test_init_from_with_upsample_resize_continues_the_model(data_dir, tmp_path):
    fit_mod.fit(tiny(data_dir, tmp_path, name="deconv", norm="instance", ema_decay=0.9, max_steps=2))
    ckpt = str(tmp_path / "deconv" / "checkpoints" / "last.pt")
    source = load_init_source(ckpt)
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, norm="instance", upsample="resize", ema_decay=0.9)))
    t.init_from(source)
    for held, raw in ((t.G_ema, source.ema), (t.G, source.generator)):  # both converted the same way
        expected = regrid_state(raw, GeneratorConfig.from_dict(source.generator_config), t.gen_config)
        assert all(torch.equal(held.state_dict()[k], v) for k, v in expected.items())
    assert t.D is not None and torch.equal(next(iter(t.D.state_dict().values())),
                                           next(iter(source.discriminator.values())))  # D carries over as it was
    m = fit_mod.fit(tiny(data_dir, tmp_path, name="resize", norm="instance", upsample="resize", ema_decay=0.9,
                         max_steps=2, init_from=ckpt))
    assert m["config"]["generator"]["upsample"] == "resize" and m["steps"] == 2
    back = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, norm="instance", ema_decay=0.9)))
    with pytest.raises(ConfigError, match="upsample resize, this run transpose"):
        back.init_from(load_init_source(str(tmp_path / "resize" / "checkpoints" / "last.pt")))
