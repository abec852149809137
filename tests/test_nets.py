"""The networks: sizes that must match the published ones, receptive fields, and sampling modes."""

import pytest
import torch

from p2p_demo.masks import plan_of, seeded_forward
from p2p_demo.nets import GeneratorConfig, UNetGenerator, build_generator, count_parameters
from train.discriminator import PatchDiscriminator, init_weights


def tiny(layout: str = "reference", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    if layout == "huggan":
        g = build_generator(GeneratorConfig(ngf=4, layout="huggan", norm="instance", **kw))
    else:
        g = build_generator(GeneratorConfig(ngf=8, num_downs=kw.pop("num_downs", 6), **kw))
    init_weights(g)
    return g


def size_of(layout: str) -> int:
    return 256 if layout == "huggan" else 64  # huggan is fixed at 8 downsamplings


# --------------------------------------------------------------------------------------------
# Sizes of the published networks


def full_size(config: GeneratorConfig) -> torch.nn.Module:
    """Shapes and counts of a full-size network without allocating or initialising its weights."""
    with torch.device("meta"):
        return build_generator(config)


def test_unet_256_matches_the_reference_checkpoint_layout():
    g = full_size(GeneratorConfig())
    sd = g.state_dict()
    assert len(sd) == 82
    assert round(count_parameters(g) / 1e6, 2) == 54.41
    assert list(sd)[0] == "model.model.0.weight" and tuple(sd["model.model.0.weight"].shape) == (64, 3, 4, 4)
    assert list(sd)[-2:] == ["model.model.3.weight", "model.model.3.bias"]  # outermost ConvT, with bias
    assert tuple(sd["model.model.3.weight"].shape) == (128, 3, 4, 4)
    assert "model.model.1.model.2.running_mean" in sd  # level-2 BatchNorm
    conv_biases = [name for name, m in g.named_modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m.bias is not None]
    assert conv_biases == ["model.model.3"]  # under BatchNorm only the outermost ConvT has a bias


def test_huggan_matches_the_hub_checkpoint_layout():
    g = full_size(GeneratorConfig(layout="huggan", norm="instance"))
    sd = g.state_dict()
    assert len(sd) == 17
    assert round(count_parameters(g) / 1e6, 2) == 54.40
    assert {k.split(".")[0] for k in sd} == {f"down{i}" for i in range(1, 9)} | {f"up{i}" for i in range(1, 8)} | {"final"}
    assert tuple(sd["final.2.weight"].shape) == (3, 128, 4, 4) and "final.2.bias" in sd


def test_unet_128_has_seven_levels_and_a_1x1_bottleneck_at_128():
    g = full_size(GeneratorConfig(num_downs=7))
    assert len(g.state_dict()) == 82 - 12  # one 512-channel level (12 keys) less than unet_256
    assert round(count_parameters(g) / 1e6, 2) == 41.83
    assert g.config.multiple == 128
    small = tiny(num_downs=7)
    seen = []
    inner = [m for m in small.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # innermost down-conv
    inner.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        y = small(torch.randn(1, 3, 128, 128))
    assert seen == [(1, 64, 1, 1)] and y.shape == (1, 3, 128, 128)


def test_instance_norm_variant_has_conv_biases_and_no_norm_keys():
    g = full_size(GeneratorConfig(norm="instance"))
    sd = g.state_dict()
    assert len(sd) == 32 and "model.model.0.bias" in sd
    assert not any("running" in k for k in sd)


def test_patchgan_70_has_the_published_size_and_output_map():
    d = PatchDiscriminator(in_channels=6, n_layers=3)
    assert round(count_parameters(d) / 1e6, 2) == 2.77
    with torch.no_grad():
        out = d.eval()(torch.randn(1, 6, 256, 256))
    assert out.shape == (1, 1, 30, 30)


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3, 4, 5])
def test_patchgan_receptive_field_measured_by_gradient(n_layers):
    """The gradient of one interior logit w.r.t. the input is non-zero on exactly an RF x RF window."""
    rf = PatchDiscriminator.RECEPTIVE_FIELD[n_layers]
    torch.manual_seed(n_layers)
    d = PatchDiscriminator(in_channels=2, ndf=4, n_layers=n_layers)
    init_weights(d)
    d.eval()  # BatchNorm with running statistics is per-position; batch statistics would couple all pixels
    side = max(32, (rf + 40 + 31) // 32 * 32)
    x = torch.randn(1, 2, side, side, requires_grad=True)
    out = d(x)
    i, j = out.shape[2] // 2, out.shape[3] // 2
    out[0, 0, i, j].backward()
    hit = x.grad.abs().sum(1)[0] > 0  # (side, side)
    rows = hit.any(1).nonzero().flatten()
    cols = hit.any(0).nonzero().flatten()
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    assert rows[0] > 0 and cols[0] > 0 and rows[-1] < side - 1 and cols[-1] < side - 1  # not clipped by the border
    assert (height, width) == (rf, rf)
    assert d.receptive_field == rf


# --------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("layout", ["reference", "huggan"])
def test_seeded_sampling_same_seed_same_output_different_seed_different(layout):
    g = tiny(layout).eval()
    x = torch.randn(1, 3, size_of(layout), size_of(layout))
    with torch.no_grad():
        a = seeded_forward(g, x, [1])
        torch.manual_seed(123)  # the global RNG must not matter
        b = seeded_forward(g, x, [1])
        c = seeded_forward(g, x, [2])
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("layout", ["reference", "huggan"])
def test_a_batch_of_samples_equals_the_samples_drawn_one_by_one(layout):
    g = tiny(layout).eval()
    s = size_of(layout)
    x = torch.randn(3, 3, s, s)  # three different inputs, each with its own seed
    with torch.no_grad():
        batch = seeded_forward(g, x, [10, 11, 12])
        single = [seeded_forward(g, x[k : k + 1], [10 + k]) for k in range(3)]
    assert torch.allclose(batch, torch.cat(single), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["reference", "huggan"])
def test_deterministic_mode_has_no_randomness(layout):
    g = tiny(layout).eval()
    s = size_of(layout)
    x = torch.randn(2, 3, s, s)
    g.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        torch.manual_seed(0)
        a = g(x)
        torch.manual_seed(1)
        b = g(x)
        c = seeded_forward(g, x, None)  # the seeded forward with no seeds: the same
        d = g(x[1:])  # and each image is independent of the rest of the batch
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.allclose(a[1:], d, atol=1e-5, rtol=0)


def test_training_mode_uses_ordinary_random_dropout_and_batch_statistics():
    g = tiny()
    plan = plan_of(g)
    plan.set(plan.ones(1, 64, 64))
    g.set_training_mode()  # takes the masks back, back to BatchNorm batch statistics
    g.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    a = g(x)
    torch.manual_seed(1)
    b = g(x)
    assert (a - b).abs().max() > 1e-3  # dropout draws from the global RNG in training
    norm = next(m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(norm.num_batches_tracked) == 2  # batch statistics are collected


def test_per_image_statistics_differ_from_running_statistics():
    g = tiny().eval()
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.3)
            m.running_var.fill_(2.0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        g.set_inference_mode(per_image_stats=True, dropout=False)
        a = g(x)
        g.set_inference_mode(per_image_stats=False, dropout=False)
        b = g(x)
    assert (a - b).abs().max() > 1e-2


def test_unet_generator_refuses_the_huggan_config():
    with pytest.raises(ValueError, match="build_generator"):
        UNetGenerator(GeneratorConfig(layout="huggan", norm="instance"))


def test_resize_conv_decoder_is_our_format_only():
    from torch import nn

    from p2p_demo.nets import ResizeUp

    g = build_generator(GeneratorConfig(ngf=8, num_downs=6, upsample="resize"))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 6 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)
    g.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        assert g(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 64, 64)
        # each step runs as the transposed convolution it equals: what upsampling then convolving gives
        step = next(m for m in g.modules() if isinstance(m, ResizeUp))
        nn.init.normal_(step[1].weight)
        x = torch.randn(2, step[1].in_channels, 5, 7)
        ref = step[1](step[0](x))
        assert ref.shape == step(x).shape and float(ref.std()) > 1
        assert float((step(x) - ref).abs().max()) < 1e-4
    # the reference layout is untouched: an old config without the key is a transposed-conv net
    old = GeneratorConfig.from_dict({k: v for k, v in GeneratorConfig(ngf=8, num_downs=6).to_dict().items()
                                     if k != "upsample"})
    assert old.upsample == "transpose"
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in build_generator(old).modules()) == 6
    with pytest.raises(ValueError, match="huggan"):
        GeneratorConfig(layout="huggan", norm="instance", upsample="resize")
    with pytest.raises(ValueError, match="upsample"):
        GeneratorConfig(upsample="bilinear")


def test_resize_conv_and_channel_dropout_model_folder_round_trips(tmp_path):
    from p2p_demo.hub import load_generator, save_pretrained

    torch.manual_seed(0)
    g = build_generator(GeneratorConfig(ngf=8, num_downs=6, upsample="resize", in_channels=1, channel_dropout=True,
                                        dropout_levels=4))
    save_pretrained(g, tmp_path / "m", line_style={"size": 64, "stroke_width": 1, "margin": 0.06}, name="m",
                    dtype=torch.float32)
    g2, info = load_generator(str(tmp_path / "m"))
    assert info.generator.upsample == "resize" and info.generator.channel_dropout and info.generator.dropout_levels == 4
    card = (tmp_path / "m" / "README.md").read_text()
    assert "resize-conv decoder, channel dropout, dropout in 4 decoder levels" in card
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    for m in (g, g2):
        m.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        torch.testing.assert_close(g(x), g2(x))
