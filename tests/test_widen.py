"""Widening a trained generator (train.widen, `fit --init-from MODEL --ngf N`): the wider net computes
what the narrow one did, its raw weights and EMA stay in step, and what cannot be widened is refused."""

from __future__ import annotations

import pytest
import torch

from p2p_demo.nets import GeneratorConfig, build_generator
from p2p_demo.masks import seeded_forward
from train import fit as fit_mod
from train.config import ConfigError, TrainConfig
from train.lineage import load_init_source
from train.widen import CannotWiden, widen, widen_state
from conftest import make_trainer, tiny, trained_like

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py



@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_the_wider_net_computes_the_same_function(upsample):
    old = GeneratorConfig(ngf=8, num_downs=6, norm="instance", in_channels=1, upsample=upsample)
    G = trained_like(old)
    new = GeneratorConfig(**{**old.to_dict(), "ngf": 12})
    W = widen(G, new, noise=False)
    assert W.config == new
    assert sum(p.numel() for p in W.parameters()) > 2 * sum(p.numel() for p in G.parameters())
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        ref, out = seeded_forward(G, x, None), seeded_forward(W, x, None)
        assert float((ref - out).abs().max()) < 1e-4
        assert float(ref.std()) > 0.1  # a real signal, not two nets that both output ~0
        noisy = seeded_forward(widen(G, new), x, None)  # the copies are nudged apart: close, not equal
        assert 1e-5 < float((ref - noisy).abs().mean()) < 0.02
        sampled = seeded_forward(W, x, [1, 2, 3])  # dropout still samples in the wider net
        assert float((sampled - out).abs().mean()) > 1e-3


def test_raw_weights_and_ema_get_the_same_channel_mapping():
    old = GeneratorConfig(ngf=8, num_downs=6, norm="instance", in_channels=1)
    new = GeneratorConfig(**{**old.to_dict(), "ngf": 16})
    G = trained_like(old)
    a = widen_state(G.state_dict(), old, new, seed=3, noise=False)
    b = widen_state(G.state_dict(), old, new, seed=3, noise=True)
    c = widen_state(G.state_dict(), old, new, seed=4, noise=False)
    key = "model.model.0.weight"  # the outermost conv: its 8 new output channels are copies
    assert torch.equal(a[key][:8], G.state_dict()[key])
    assert torch.allclose(a[key], b[key], atol=0.01) and not torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])  # another seed copies other channels


def test_what_cannot_be_widened_is_refused():
    base = GeneratorConfig(ngf=8, num_downs=6, norm="instance", in_channels=1)
    G = build_generator(base)
    for bad, match in ((dict(ngf=8), "larger ngf"), (dict(ngf=4), "larger ngf"), (dict(ngf=12, num_downs=5), "only ngf"),
                       (dict(ngf=12, dropout=False), "only ngf")):
        with pytest.raises(CannotWiden, match=match):
            widen(G, GeneratorConfig(**{**base.to_dict(), **bad}))
    with pytest.raises(CannotWiden, match="instance norm"):
        bn = GeneratorConfig(**{**base.to_dict(), "norm": "batch"})
        widen(build_generator(bn), GeneratorConfig(**{**bn.to_dict(), "ngf": 12}))


def test_init_from_with_a_larger_ngf_continues_the_model_wider(data_dir, tmp_path):
    fit_mod.fit(tiny(data_dir, tmp_path, name="narrow", norm="instance", ema_decay=0.9, max_steps=2))
    source = load_init_source(str(tmp_path / "narrow" / "checkpoints" / "last.pt"))
    t = make_trainer(TrainConfig.from_dict(dict(ngf=16, ndf=8, norm="instance", ema_decay=0.9)))
    t.init_from(source)
    narrow = build_generator(GeneratorConfig.from_dict(source.generator_config))
    narrow.load_state_dict(source.ema)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert float((seeded_forward(narrow, x, None) - seeded_forward(t.G_ema, x, None)).abs().max()) < 1e-4
    # and through the command line: the run trains at ngf 16 from the ngf 8 model
    m = fit_mod.fit(tiny(data_dir, tmp_path, name="wide", norm="instance", ngf=16, ema_decay=0.9, max_steps=2,
                         init_from=str(tmp_path / "narrow" / "checkpoints" / "last.pt")))
    assert m["config"]["generator"]["ngf"] == 16 and m["steps"] == 2
    bn = make_trainer(TrainConfig.from_dict(dict(ngf=16, ndf=8, norm="batch")))
    with pytest.raises(ConfigError, match="ngf 8, this run 16"):
        bn.init_from(source)
