"""Where weights come from: the original networks reproduced, our format, refusals, the Hub cache.

The Hub is exercised without network and without mocking huggingface_hub: a cache written in its
own layout read in offline mode, and a tiny Hub-compatible HTTP endpoint on 127.0.0.1 that the
real ``hf_hub_download`` downloads from. huggingface_hub reads HF_HOME / HF_HUB_OFFLINE /
HF_ENDPOINT when it is imported, so those tests run in a child Python with the environment set
(``child_main`` below is what the child runs).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from p2p_demo import hub, registry
from p2p_demo.checkpoints import infer_config
from p2p_demo.hub import load_generator
from p2p_demo.masks import DropoutPlan, seeded_forward
from p2p_demo.registry import HubUnavailable, ModelNotFound, WeightsError
from p2p_demo.nets import GeneratorConfig, build_generator

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
import reference_impl as ref  # noqa: E402  (the independent re-implementation)
from conftest import COMMIT, RunsCode, put_in_hf_cache  # noqa: E402


def hash_masks(g, seed: int, size: int):
    """A mask_source for the reference network replaying, layer by layer in forward order, the keep
    masks our generator draws for one sample seeded ``seed`` (p2p_demo.masks)."""
    from p2p_demo.masks import DropoutPlan

    plan = DropoutPlan.of(g)
    drawn = iter([m[0] > 0 for m in plan.draw([seed], size, size)])

    def source(shape):
        keep = next(drawn)
        assert tuple(keep.shape) == tuple(shape)
        return keep

    return source

STYLE = {"size": 64, "stroke_width": 2, "margin": 0.06}


# --------------------------------------------------------------------------------------------
# Fixtures: tiny seeded original networks


@pytest.fixture(scope="module")
def authors_unet() -> ref.AuthorsUnet:
    torch.manual_seed(0)
    net = ref.randomize(ref.AuthorsUnet(ngf=8, num_downs=8), seed=1)
    # Non-trivial running statistics, like a trained checkpoint (not the 0/1 defaults).
    return ref.calibrate_batchnorm(net, [torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(9))])


@pytest.fixture(scope="module")
def huggan_unet() -> ref.HugganUnet:
    torch.manual_seed(0)
    return ref.randomize(ref.HugganUnet(width=4), seed=2)


@pytest.fixture(scope="module")
def x256() -> torch.Tensor:
    return torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def authors_file(tmp_path, authors_unet) -> Path:
    path = tmp_path / "latest_net_G.pth"
    torch.save(authors_unet.state_dict(), path)
    return path


def tiny_ours(seed: int = 0, **kw) -> torch.nn.Module:
    cfg = GeneratorConfig(**{"ngf": 8, "num_downs": 6, **kw})
    torch.manual_seed(seed)
    return ref.randomize(build_generator(cfg), seed)


# --------------------------------------------------------------------------------------------
# The loader reproduces the original networks


def test_full_size_originals_have_the_published_layouts():
    with torch.device("meta"):  # shapes without allocating or initialising 4 x 54 M parameters
        unet, hug = ref.AuthorsUnet(), ref.HugganUnet()
        ours = build_generator(GeneratorConfig()).state_dict()
        hours = build_generator(GeneratorConfig(layout="huggan", norm="instance")).state_dict()
    sd = unet.state_dict()
    assert len(sd) == 82 and round(sum(p.numel() for p in unet.parameters()) / 1e6, 2) == 54.41
    assert infer_config(sd) == GeneratorConfig()  # unet_256, ngf 64, batch norm, dropout
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in sd.items()}

    hsd = hug.state_dict()
    assert len(hsd) == 17 and round(sum(p.numel() for p in hug.parameters()) / 1e6, 2) == 54.40
    assert infer_config(hsd) == GeneratorConfig(layout="huggan", norm="instance")
    assert {k: tuple(v.shape) for k, v in hours.items()} == {k: tuple(v.shape) for k, v in hsd.items()}


@torch.no_grad()
@pytest.mark.parametrize("mode", ["eval_running_stats", "train_batch1_no_dropout", "train_batch1_same_masks"])
def test_loader_reproduces_the_authors_unet(mode, authors_unet, authors_file, x256):
    g, info = load_generator(authors_file)
    assert info.source == "file" and info.generator == GeneratorConfig(ngf=8) and info.dropout_sampling
    net = copy.deepcopy(authors_unet)  # train mode updates running stats: keep the fixture clean
    if mode == "eval_running_stats":  # the reference's --eval
        net.eval()
        ref.set_dropout(net, enabled=False)
        g.set_inference_mode(per_image_stats=False, dropout=False)
    elif mode == "train_batch1_no_dropout":  # the reference's test mode, dropout off to compare
        net.train()
        ref.set_dropout(net, enabled=False)
        g.set_inference_mode(per_image_stats=True, dropout=False)
    else:  # the reference's test mode exactly, both networks fed the same dropout masks
        net.train()
        ref.set_dropout(net, enabled=True, mask_source=hash_masks(g, 42, 256))
    expected = net(x256.clone())
    got = seeded_forward(g, x256, [42]) if mode == "train_batch1_same_masks" else g(x256)
    assert got.shape == (1, 3, 256, 256)
    assert expected.std() > 0.02  # a real image, not a constant
    assert (got - expected).abs().max() < 1e-5


@torch.no_grad()
def test_the_three_modes_really_differ(authors_unet, authors_file, x256):
    """So the comparisons above test three different things."""
    g, _ = load_generator(authors_file)
    outs = []
    for per_image, dropout, seed in [(False, False, None), (True, False, None), (True, True, 42)]:
        g.set_inference_mode(per_image_stats=per_image, dropout=dropout)
        outs.append(seeded_forward(g, x256, [seed]) if seed else g(x256))
    assert (outs[0] - outs[1]).abs().max() > 1e-3 and (outs[1] - outs[2]).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("dropout", [False, True])
def test_loader_reproduces_the_huggan_unet(dropout, tmp_path, huggan_unet, x256):
    path = tmp_path / "pytorch_model.bin"
    torch.save(huggan_unet.state_dict(), path)
    g, info = load_generator(path)
    assert info.generator == GeneratorConfig(ngf=4, layout="huggan", norm="instance")
    assert info.dropout_sampling is False  # published for eval mode
    net = copy.deepcopy(huggan_unet).eval()
    if dropout:
        ref.set_dropout(net, enabled=True, mask_source=hash_masks(g, 7, 256))
    else:
        ref.set_dropout(net, enabled=False)
    expected, got = net(x256), seeded_forward(g, x256, [7] if dropout else None)
    assert expected.std() > 0.02
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("kw", [
    dict(num_downs=7),  # unet_128
    dict(num_downs=5),  # shallowest: no dropout levels
    dict(ngf=16, num_downs=6, norm="instance"),
    dict(in_channels=1, out_channels=1),  # grayscale
    dict(in_channels=1, out_channels=3),
])
def test_architecture_is_recognised_from_keys_and_shapes(tmp_path, kw):
    g0 = tiny_ours(**kw)
    path = tmp_path / "g.pth"
    torch.save(g0.state_dict(), path)
    g, info = load_generator(path)
    expected = GeneratorConfig(**{"ngf": 8, "num_downs": 6, **kw})
    assert info.generator == replace_dropout(expected, expected.num_downs >= 6)
    x = torch.randn(1, expected.in_channels, 2 ** expected.num_downs, 2 ** expected.num_downs)
    g0.eval().set_inference_mode(per_image_stats=True, dropout=False)
    g.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        assert torch.equal(g0(x), g(x))


def replace_dropout(cfg: GeneratorConfig, dropout: bool) -> GeneratorConfig:
    return GeneratorConfig(**{**cfg.to_dict(), "dropout": dropout})


def test_legacy_pickle_format_of_old_checkpoints_loads(tmp_path, authors_unet):
    path = tmp_path / "edges2shoes.pth"
    torch.save(authors_unet.state_dict(), path, _use_new_zipfile_serialization=False)
    g, _ = load_generator(path)
    assert torch.equal(g.state_dict()["model.model.0.weight"], authors_unet.state_dict()["model.model.0.weight"])


def test_checkpoints_without_num_batches_tracked_load(tmp_path, authors_unet):
    sd = {k: v for k, v in authors_unet.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) == 82 - 13  # 13 BatchNorm layers
    torch.save(sd, tmp_path / "old.pth")
    load_generator(tmp_path / "old.pth")


def test_wrapped_and_prefixed_state_dicts_are_unwrapped_only_when_unambiguous(tmp_path):
    sd = tiny_ours().state_dict()
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pth")
    _, info = load_generator(tmp_path / "wrapped.pth")
    assert "'state_dict' entry" in info.notes
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    _, info = load_generator(tmp_path / "ddp.pth")
    assert "'module.' prefix removed" in info.notes

    from train.discriminator import PatchDiscriminator
    cfg = GeneratorConfig(ngf=8, num_downs=6, dropout=False)
    torch.save({"G": sd, "D": PatchDiscriminator(ndf=4).state_dict(), "generator_config": cfg.to_dict(), "step": 7},
               tmp_path / "last.pt")  # a training checkpoint: its generator_config is used (dropout off)
    _, info = load_generator(tmp_path / "last.pt")
    assert info.generator == cfg and "'G' entry" in info.notes
    torch.save({"G": sd, "generator_config": {**cfg.to_dict(), "ngf": 16}}, tmp_path / "liar.pt")
    with pytest.raises(WeightsError, match=r"liar\.pt holds a reference U-Net \(ngf=8.*but its generator_config says .*ngf=16"):
        load_generator(tmp_path / "liar.pt")

    mixed = {f"module.{k}" if i % 2 else k: v for i, (k, v) in enumerate(sd.items())}
    torch.save(mixed, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match=r"mixed\.pth mixes keys with and without the 'module\.' prefix"):
        load_generator(tmp_path / "mixed.pth")
    torch.save({"G": sd, "generator": sd}, tmp_path / "two.pth")
    with pytest.raises(WeightsError, match=r"two\.pth holds several state_dicts"):
        load_generator(tmp_path / "two.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    with pytest.raises(WeightsError, match=r"nostate\.pth is a dict but not a state_dict.*epoch \(int\)"):
        load_generator(tmp_path / "nostate.pth")


def test_a_training_checkpoint_states_its_weightless_options_and_its_decoder_is_read(tmp_path):
    cfg = GeneratorConfig(ngf=8, num_downs=6, dropout=False)
    sd = tiny_ours().state_dict()
    sampling = replace(cfg, dropout=True, dropout_p=0.7, channel_dropout=True, dropout_levels=4)  # none has weights
    torch.save({"G": sd, "generator_config": sampling.to_dict()}, tmp_path / "channel.pt")
    G, info = load_generator(tmp_path / "channel.pt")
    assert info.generator == sampling and G.config.channel_dropout and G.config.dropout_p == 0.7
    assert G.config.dropout_levels == 4 and len(DropoutPlan.of(G)) == 4
    # a resize-conv decoder is read from its weights (a training checkpoint of fluent3d's layout)
    resize = replace(cfg, upsample="resize", out_channels=3)
    torch.manual_seed(0)
    G0 = build_generator(resize)
    assert infer_config(G0.state_dict()) == replace(resize, dropout=True)
    torch.save({"G": G0.state_dict(), "generator_config": replace(resize, channel_dropout=True).to_dict()},
               tmp_path / "resize.pt")
    G, info = load_generator(tmp_path / "resize.pt")
    assert info.generator == replace(resize, channel_dropout=True)
    x = torch.rand(1, resize.in_channels, 64, 64) * 2 - 1
    G0.set_inference_mode(per_image_stats=True, dropout=False)
    G.set_inference_mode(per_image_stats=True, dropout=False)
    assert torch.equal(G(x), G0(x))


# --------------------------------------------------------------------------------------------
# Our own format


def test_save_and_load_round_trip_float32_is_exact(tmp_path):
    g0 = tiny_ours().eval()
    folder = hub.save_pretrained(g0, tmp_path / "m", line_style=STYLE, name="Tiny", description="a test model",
                                 expects="test outlines, black on white", license="mit",
                                 metrics={"L1": 0.123}, data="noise", dtype=torch.float32)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    g, info = load_generator(folder)
    for k, v in g0.state_dict().items():
        assert torch.equal(v, g.state_dict()[k]), k
    assert (info.source, info.name, info.license, info.input, info.line_style, info.metrics) == (
        "folder", "Tiny", "mit", "edges", STYLE, {"L1": 0.123})
    assert info.generator == g0.config and info.path == folder
    g2, _ = hub.from_pretrained(folder)
    x = torch.randn(2, 3, 64, 64)
    g0.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        assert torch.equal(g0(x), g(x)) and torch.equal(g0(x), g2(x))

    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["generator"] == g0.config.to_dict() and cfg["line_style"] == STYLE and cfg["input"] == "edges"
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    assert "license: mit" in front and "- pix2pix" in front and "- image-to-image" in front and "library_name:" in front
    assert "test outlines, black on white" in card and "| L1 | 0.123 |" in card and "noise" in card


def test_model_card_front_matter_uses_the_hubs_lower_case_licence_id(tmp_path):
    folder = hub.save_pretrained(tiny_ours().eval(), tmp_path / "m", line_style=STYLE, name="Tiny", license="CC-BY-SA-4.0")
    assert (folder / "README.md").read_text().split("---")[1].splitlines()[1] == "license: cc-by-sa-4.0"
    assert json.loads((folder / "config.json").read_text())["license"] == "CC-BY-SA-4.0"  # the manifest's spelling kept


def test_save_and_load_round_trip_float16_is_within_half_precision(tmp_path):
    g0 = tiny_ours().eval()
    folder = hub.save_pretrained(g0, tmp_path / "m16", line_style=STYLE, name="Tiny16")  # fp16 by default
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16, torch.int64}  # num_batches_tracked stays an integer
    g, info = load_generator(folder)
    assert next(g.parameters()).dtype == torch.float32
    for k, v in g0.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, g.state_dict()[k], rtol=1e-3, atol=1e-4), k
    x = torch.randn(1, 3, 64, 64)
    g0.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        assert (g0(x) - g(x)).abs().max() < 2e-2
    assert info.license == registry.UNKNOWN_LICENSE
    assert "license: other" in (folder / "README.md").read_text()  # not an SPDX id: the card says "other"


def test_load_generator_honours_device_and_dtype(tmp_path, authors_file):
    g, _ = load_generator(authors_file, device="cpu", dtype=torch.float64)
    assert next(g.parameters()).dtype == torch.float64 and not g.training


# --------------------------------------------------------------------------------------------
# Registry


def make_weights_dir(tmp_path: Path, entries: list[dict]) -> Path:
    wdir = tmp_path / "weights"
    wdir.mkdir(exist_ok=True)
    (wdir / "registry.json").write_text(json.dumps({"models": entries}))
    return wdir


def test_listing_reports_missing_and_broken_bundled_models_without_crashing(tmp_path):
    wdir = make_weights_dir(tmp_path, [
        {"id": "present", "source": "bundled", "name": "Present", "expects": "registry text"},
        {"id": "missing", "source": "bundled", "name": "Missing"},
        {"id": "broken", "source": "bundled"},
        {"id": "someone/model", "source": "hub", "repo_id": "someone/model", "filename": "pytorch_model.bin",
         "license": "mit", "generator": {"ngf": 64, "layout": "huggan", "norm": "instance"}},
    ])
    hub.save_pretrained(tiny_ours(), wdir / "present", line_style=STYLE, name="Present model", license="cc-by-4.0")
    (wdir / "broken").mkdir()
    (wdir / "broken" / "config.json").write_text("{not json")
    (wdir / "broken" / "model.safetensors").write_bytes(b"x")
    hub.save_pretrained(tiny_ours(), wdir / "dropped-in", line_style=STYLE, name="Unregistered")
    (wdir / "hed").mkdir()  # the edge detector's folder: not a generator, not listed
    (wdir / "hed" / "config.json").write_text('{"kind": "hed"}')

    models = {m.id: m for m in registry.list_models(wdir)}
    assert list(models) == ["present", "missing", "broken", "someone/model", "dropped-in"]
    p = models["present"]
    assert (p.available, p.source, p.name, p.license, p.expects) == (True, "bundled", "Present model", "cc-by-4.0",
                                                                     "registry text")
    assert p.generator == GeneratorConfig(ngf=8, num_downs=6)
    m = models["missing"]
    assert not m.available and m.generator is None
    assert "bundled model 'missing' is not installed" in m.problem and "missing/ is missing" in m.problem
    b = models["broken"]
    assert not b.available and "config.json" in b.problem and "not valid JSON" in b.problem
    h = models["someone/model"]
    assert (h.source, h.available, h.cached, h.license, h.dropout_sampling) == ("hub", True, False, "mit", False)
    assert models["dropped-in"].available

    with pytest.raises(ModelNotFound, match=r"'missing' is not installed.*Available now: present, dropped-in"):
        load_generator("missing", weights_dir=wdir)
    g, info = load_generator("present", weights_dir=wdir)
    assert info.source == "bundled" and info.id == "present"


def test_the_project_registry_lists_the_hub_model_as_its_card_says():
    models = {m.id: m for m in registry.list_models()}
    shoes = models["huggan/pix2pix-edge2shoes"]
    assert shoes.source == "hub" and shoes.filename == "pytorch_model.bin" and shoes.license == "mit"
    assert shoes.input == "edges" and shoes.generator == GeneratorConfig(layout="huggan", norm="instance")
    assert shoes.line_style["size"] == 256 and "black on white" in shoes.expects
    for bundled in ("openmoji",):
        assert models[bundled].source == "bundled"
        assert models[bundled].available or models[bundled].problem


def test_unknown_specs_say_what_was_tried(tmp_path):
    wdir = make_weights_dir(tmp_path, [{"id": "present", "source": "bundled"}])
    with pytest.raises(ModelNotFound, match=r"unknown model 'nope': not a registry id \(known: present\)"):
        load_generator("nope", weights_dir=wdir)
    with pytest.raises(ModelNotFound, match=r"no such file or folder: .*missing\.pth"):
        load_generator(str(tmp_path / "missing.pth"), weights_dir=wdir)


def test_a_malformed_registry_is_a_clear_error(tmp_path):
    wdir = make_weights_dir(tmp_path, [{"id": "x", "source": "somewhere"}])
    with pytest.raises(WeightsError, match=r"registry\.json: x: 'source' must be 'bundled' or 'hub'"):
        registry.list_models(wdir)


# --------------------------------------------------------------------------------------------
# Refusals: every message names the file and what is wrong


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path, legacy):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    payload = {**tiny_ours().state_dict(), "extra": RunsCode(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(WeightsError) as e:
        load_generator(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "refused: it needs arbitrary code to load (not a plain state_dict)" in msg and "exec" in msg
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(tiny_ours(), path)  # torch.save(model): needs the class, i.e. code
    with pytest.raises(WeightsError, match=r"model\.pth: refused: it needs arbitrary code"):
        load_generator(path)


def saved_safetensors(tmp_path: Path) -> Path:
    return hub.save_pretrained(tiny_ours(), tmp_path / "m", line_style=STYLE, name="t") / "model.safetensors"


@pytest.mark.parametrize("cut", ["header", "data"])
def test_truncated_safetensors_are_refused(tmp_path, cut):
    path = saved_safetensors(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:40] if cut == "header" else data[:-1000])
    with pytest.raises(WeightsError, match=r"model\.safetensors: the safetensors file is truncated or corrupt"):
        load_generator(path.parent)


def test_truncated_pth_is_refused(tmp_path, authors_file):
    data = authors_file.read_bytes()
    authors_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"latest_net_G\.pth: cannot be read as a PyTorch checkpoint: it is truncated"):
        load_generator(authors_file)


def test_a_folder_without_config_is_refused(tmp_path):
    path = saved_safetensors(tmp_path)
    (path.parent / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"has model\.safetensors but no config\.json.*pass the file itself"):
        load_generator(path.parent)
    g, info = load_generator(path)  # as suggested: bare weights, architecture from the keys
    assert info.source == "file" and info.generator.ngf == 8


def test_a_config_that_disagrees_with_the_weights_names_the_differing_shapes(tmp_path):
    path = saved_safetensors(tmp_path)
    cfg = json.loads((path.parent / "config.json").read_text())
    cfg["generator"]["ngf"] = 16
    (path.parent / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError) as e:
        load_generator(path.parent)
    msg = str(e.value)
    assert str(path) in msg and "does not match a reference U-Net (ngf=16" in msg
    assert "shape mismatches: model.model.0.weight is (8, 3, 4, 4) in the file, the network needs (16, 3, 4, 4)" in msg


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path):
    sd = tiny_ours().state_dict()
    del sd["model.model.1.model.2.running_var"]
    sd["extra.weight"] = torch.zeros(2)
    sd["model.model.1.model.1.weight"] = torch.zeros(16, 8, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        load_generator(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "bad.pth does not match a reference U-Net" in msg
    assert "1 missing: model.model.1.model.2.running_var (16,)" in msg
    assert "1 unexpected: extra.weight (2,)" in msg
    assert "model.model.1.model.1.weight is (16, 8, 3, 3) in the file, the network needs (16, 8, 4, 4)" in msg


def test_wrong_dtypes_and_non_finite_values_are_refused(tmp_path):
    from safetensors.torch import save_file
    sd = tiny_ours().state_dict()
    save_file({**sd, "model.model.0.weight": sd["model.model.0.weight"].to(torch.int32)}, str(tmp_path / "int.safetensors"))
    with pytest.raises(WeightsError, match=r"(?s)int\.safetensors does not match.*model\.model\.0\.weight is torch\.int32, "
                                           r"expected a floating-point tensor"):
        load_generator(tmp_path / "int.safetensors")
    sd["model.model.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan\.pth: 1 tensors contain NaN or infinite values \(model\.model\.0\.weight\)"):
        load_generator(tmp_path / "nan.pth")


def test_files_that_are_not_weights_get_a_diagnosis(tmp_path):
    cases = {
        "empty.pth": (b"", r"empty\.pth is empty \(0 bytes\)"),
        "lfs.bin": (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 218000000\n",
                    r"lfs\.bin is a Git LFS pointer .*`git lfs pull`"),
        "page.pth": (b"<!DOCTYPE html><html>", r"page\.pth is a web page \(HTML\)"),
        "text.safetensors": (b"hello world, not weights", r"text\.safetensors is not a checkpoint format this app reads "
                                                          r"\(a \.safetensors name but not safetensors content\)"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=pattern):
            load_generator(tmp_path / name)


def test_a_discriminator_checkpoint_is_recognised_as_such(tmp_path):
    from train.discriminator import PatchDiscriminator
    torch.save(PatchDiscriminator(ndf=8).state_dict(), tmp_path / "latest_net_D.pth")
    with pytest.raises(WeightsError, match=r"latest_net_D\.pth: this is a PatchGAN discriminator .* latest_net_G\.pth"):
        load_generator(tmp_path / "latest_net_D.pth")
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"other\.pth: not a pix2pix generator layout this app knows.*conv\.weight \(4, 3, 3, 3\)"):
        load_generator(tmp_path / "other.pth")


def test_a_torchscript_archive_is_refused(tmp_path):
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(WeightsError, match=r"scripted\.pt is a TorchScript archive"):
        load_generator(tmp_path / "scripted.pt")


def test_push_to_hub_refuses_a_broken_folder_before_touching_the_network(tmp_path):
    path = saved_safetensors(tmp_path)
    (path.parent / "config.json").unlink()
    with pytest.raises(WeightsError, match="no config.json"):
        hub.push_to_hub(path.parent, "someone/model")


# --------------------------------------------------------------------------------------------
# The Hub, through the real huggingface_hub, in child processes



def run_child(role: str, args: dict, env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "HF_HUB_DISABLE_TELEMETRY": "1",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **env_extra})
    code = "import sys, test_hub; test_hub.child_main(sys.argv[1], sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", code, role, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=str(TESTS))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(role: str, args_json: str) -> None:
    args = json.loads(args_json)
    result = {"offline": _child_offline, "online": _child_online}[role](args)
    print(json.dumps(result))


def _max_diff(g: torch.nn.Module, expected_path: str) -> float:
    saved = torch.load(expected_path, weights_only=True)
    g.set_inference_mode(dropout=False)
    with torch.no_grad():
        return float((g(saved["x"]) - saved["y"]).abs().max())


def _error(fn) -> dict:
    try:
        fn()
    except Exception as e:  # reported to the parent, which asserts on type and message
        return {"type": type(e).__name__, "message": str(e)}
    return {"type": None, "message": ""}


def _child_offline(args: dict) -> dict:
    from huggingface_hub import constants
    out: dict = {"offline": constants.is_offline_mode(), "cache": constants.HF_HUB_CACHE}
    g, info = load_generator("tester/tiny-huggan", weights_dir=args["weights_dir"])
    out["raw"] = {"diff": _max_diff(g, args["expected"]), "source": info.source, "path": str(info.path),
                  "filename": info.filename, "layout": info.generator.layout}
    g, info = load_generator("tester/registered", weights_dir=args["weights_dir"])
    out["registered"] = {"diff": _max_diff(g, args["expected"]), "name": info.name, "license": info.license}
    g, info = hub.from_pretrained("tester/own-format")
    out["own"] = {"source": info.source, "name": info.name, "filename": info.filename, "ngf": info.generator.ngf}
    out["cached_flags"] = {m.id: m.cached for m in registry.list_models(args["weights_dir"]) if m.source == "hub"}
    out["uncached"] = _error(lambda: load_generator("tester/never-downloaded", weights_dir=args["weights_dir"]))
    out["uncached_registered"] = _error(lambda: load_generator("tester/not-cached", weights_dir=args["weights_dir"]))
    return out


def _child_online(args: dict) -> dict:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    repos = {repo: {name: Path(p).read_bytes() for name, p in files.items()} for repo, files in args["repos"].items()}
    requests: list[str] = []

    class FakeHub(BaseHTTPRequestHandler):
        """The two calls hf_hub_download makes: HEAD and GET on /<repo>/resolve/<revision>/<file>."""

        def _answer(self, body: bool) -> None:
            requests.append(f"{self.command} {self.path}")
            parts = self.path.split("/resolve/", 1)
            repo = parts[0].lstrip("/")
            if len(parts) != 2 or repo not in repos:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            filename = parts[1].split("/", 1)[1]
            data = repos[repo].get(filename)
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(args["port"])), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from huggingface_hub import constants
    out: dict = {"endpoint": constants.ENDPOINT, "offline": constants.is_offline_mode()}

    progress: list = []
    g, info = load_generator("tester/tiny-huggan", progress=lambda done, total, name: progress.append([done, total, name]))
    cache = Path(constants.HF_HUB_CACHE) / "models--tester--tiny-huggan"
    pointer = cache / "snapshots" / COMMIT / "pytorch_model.bin"
    out["download"] = {
        "diff": _max_diff(g, args["expected"]), "path": str(info.path), "ref": (cache / "refs" / "main").read_text(),
        "pointer_is_link": pointer.is_symlink(), "blob": os.path.basename(os.path.realpath(pointer)),
        "progress_last": progress[-1] if progress else None,
    }
    g, info = hub.from_pretrained("tester/own-format")
    out["own"] = {"source": info.source, "name": info.name, "ngf": info.generator.ngf}
    out["no_repo"] = _error(lambda: load_generator("tester/does-not-exist"))
    out["no_files"] = _error(lambda: load_generator("tester/readme-only"))
    out["requests"] = requests

    server.shutdown()
    server.server_close()
    g, info = load_generator("tester/tiny-huggan")  # the Hub is gone: the cache still serves it
    out["after_shutdown_diff"] = _max_diff(g, args["expected"])
    out["uncached_no_network"] = _error(lambda: load_generator("tester/other"))
    return out


@pytest.fixture
def hub_files(tmp_path, huggan_unet, x256) -> dict:
    """A tiny huggan checkpoint (pytorch_model.bin), an own-format model folder, expected output."""
    files = tmp_path / "files"
    files.mkdir()
    torch.save(huggan_unet.state_dict(), files / "pytorch_model.bin")
    net = copy.deepcopy(huggan_unet).eval()
    ref.set_dropout(net, enabled=False)
    with torch.no_grad():
        torch.save({"x": x256, "y": net(x256)}, files / "expected.pt")
    own = hub.save_pretrained(tiny_ours(), files / "own", line_style=STYLE, name="Own tiny", dtype=torch.float32)
    (files / "README.md").write_text("# just a card\n")
    return {"bin": files / "pytorch_model.bin", "expected": files / "expected.pt", "own": own,
            "readme": files / "README.md"}


def test_hub_cache_in_offline_mode_loads_and_an_uncached_model_is_hub_unavailable(tmp_path, hub_files):
    hf_home = tmp_path / "hf"
    cache = hf_home / "hub"
    weights = hub_files["bin"].read_bytes()
    put_in_hf_cache(cache, "tester/tiny-huggan", {"pytorch_model.bin": weights})
    put_in_hf_cache(cache, "tester/registered", {"pytorch_model.bin": weights})
    own = hub_files["own"]
    put_in_hf_cache(cache, "tester/own-format", {n: (own / n).read_bytes() for n in ("config.json", "model.safetensors")})
    wdir = make_weights_dir(tmp_path, [
        {"id": "tinybundle", "source": "bundled"},
        {"id": "tester/registered", "source": "hub", "repo_id": "tester/registered", "filename": "pytorch_model.bin",
         "name": "Registered tiny", "license": "mit",
         "generator": {"ngf": 4, "layout": "huggan", "norm": "instance"}},
        {"id": "tester/not-cached", "source": "hub", "repo_id": "tester/not-cached", "filename": "pytorch_model.bin",
         "size_mb": 218},
    ])
    hub.save_pretrained(tiny_ours(), wdir / "tinybundle", line_style=STYLE, name="tiny bundle")

    out = run_child("offline", {"weights_dir": str(wdir), "expected": str(hub_files["expected"])},
                    {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert out["offline"] is True and out["cache"] == str(cache)
    # (a) the real hf_hub_download resolves refs/main -> snapshot -> blob, offline
    assert out["raw"]["diff"] < 1e-5 and out["raw"]["source"] == "hub" and out["raw"]["layout"] == "huggan"
    assert out["raw"]["filename"] == "pytorch_model.bin"
    assert out["raw"]["path"] == str(cache / "models--tester--tiny-huggan" / "snapshots" / COMMIT / "pytorch_model.bin")
    assert out["registered"] == {"diff": out["registered"]["diff"], "name": "Registered tiny", "license": "mit"}
    assert out["registered"]["diff"] < 1e-5
    assert out["own"] == {"source": "hub", "name": "Own tiny", "filename": "config.json", "ngf": 8}
    assert out["cached_flags"] == {"tester/registered": True, "tester/not-cached": False}
    # (c) nothing cached + offline: a clear HubUnavailable naming the way out
    for key, file_part in [("uncached", "tester/never-downloaded"),
                           ("uncached_registered", "tester/not-cached (pytorch_model.bin, 218 MB)")]:
        err = out[key]
        assert err["type"] == "HubUnavailable", err
        assert err["message"].startswith(f"{file_part} could not be downloaded: offline mode is on (HF_HUB_OFFLINE=1)")
        assert "Bundled models still work: tinybundle" in err["message"] and str(cache) in err["message"]


def test_real_download_from_a_local_hub_endpoint_into_an_empty_cache(tmp_path, hub_files):
    import socket
    with socket.socket() as s:  # a free port for the child's server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    own = hub_files["own"]
    repos = {
        "tester/tiny-huggan": {"pytorch_model.bin": str(hub_files["bin"])},
        "tester/own-format": {"config.json": str(own / "config.json"), "model.safetensors": str(own / "model.safetensors")},
        "tester/readme-only": {"README.md": str(hub_files["readme"])},
    }
    hf_home = tmp_path / "hf"
    out = run_child("online", {"port": port, "repos": repos, "expected": str(hub_files["expected"])},
                    {"HF_HOME": str(hf_home), "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert out["endpoint"] == f"http://127.0.0.1:{port}" and out["offline"] is False
    d = out["download"]
    size = hub_files["bin"].stat().st_size
    assert d["diff"] < 1e-5
    assert d["ref"] == COMMIT and d["pointer_is_link"]
    assert d["blob"] == hashlib.sha256(hub_files["bin"].read_bytes()).hexdigest()  # blobs are named by ETag
    assert d["path"].startswith(str(hf_home / "hub"))
    assert d["progress_last"] == [size, size, d["progress_last"][2]]  # the callback saw every byte
    assert "GET /tester/tiny-huggan/resolve/main/pytorch_model.bin" in out["requests"]
    assert out["own"] == {"source": "hub", "name": "Own tiny", "ngf": 8}
    assert out["no_repo"]["type"] == "ModelNotFound"
    assert "there is no model repository 'tester/does-not-exist' on the Hub" in out["no_repo"]["message"]
    assert out["no_files"]["type"] == "ModelNotFound" and "none of the files this app loads" in out["no_files"]["message"]
    # the endpoint is gone: a cached model still loads, an uncached one fails fast and clearly
    assert out["after_shutdown_diff"] < 1e-5
    err = out["uncached_no_network"]
    assert err["type"] == "HubUnavailable"
    assert f"could not be downloaded: no network (could not reach http://127.0.0.1:{port})" in err["message"]
    assert "Bundled models still work:" in err["message"]


def test_load_errors_are_caught_by_what_callers_catch(tmp_path):
    """The app catches LoadError; scripts may catch the built-in kinds (LookupError, ValueError)."""
    with pytest.raises(LookupError) as missing:
        load_generator("no-such-model", weights_dir=tmp_path)
    assert isinstance(missing.value, registry.LoadError) and type(missing.value) is ModelNotFound
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError) as broken:
        load_generator(bad)
    assert isinstance(broken.value, registry.LoadError) and type(broken.value) is WeightsError


def test_network_errors_are_told_by_the_http_clients_classes():
    import importlib

    from p2p_demo.hub.download import is_network_error

    assert is_network_error(ConnectionRefusedError("refused"))
    assert is_network_error(HubUnavailable("offline"))
    assert not is_network_error(ValueError("not the network"))
    clients = [m for m in ("httpx2", "httpx", "requests") if importlib.util.find_spec(m)]
    assert clients  # huggingface_hub needs one
    for name in clients:
        mod = importlib.import_module(name)
        if name == "requests":
            conn, other_http = mod.ConnectionError("down"), mod.HTTPError("500")
        else:
            conn, other_http = mod.ConnectError("down"), mod.DecodingError("garbled")
        assert is_network_error(conn), name
        assert not is_network_error(other_http), name
        assert is_network_error(other_http, any_http=True), name
