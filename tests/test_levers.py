"""The recipe levers (EMA, mode seeking, separate D lr, the resolution curriculum), continuing a model (--init-from, the
training/ state a model folder carries) and the evaluation's fill and variety scores."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from p2p_demo.nets import GeneratorConfig, build_generator
from train import fit as fit_mod
from train import fit_args
from train.config import ConfigError, TrainConfig
from train.evaluate import chroma, flat_std, mean_l1, pairwise_l1, paper_l1, sharpness
from train.fit_args import config_from_args
from train.trainer import R1_EVERY, Trainer
from train.lineage import Lineage, read_lineage
from train.losses import flat_fill_loss, flat_mask, local_std, mode_seeking_loss, object_mask, r1_penalty
from train.resume import load_checkpoint
from conftest import SIZE, fixed_batch, make_dataset, make_trainer, tiny


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# --------------------------------------------------------------------------------------------
# EMA


def test_ema_follows_the_warm_up_formula(data_dir):
    torch.manual_seed(0)
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, batch_size=2, lr=1e-3, ema_decay=0.999)))
    before = {k: v.clone() for k, v in t.G.named_parameters()}
    a, b = fixed_batch(data_dir, 2)
    t.step(a, b)
    d = min(0.999, 2 / 11)  # t = 1
    for (k, e), g in zip(t.G_ema.named_parameters(), t.G.parameters()):
        torch.testing.assert_close(e, d * before[k] + (1 - d) * g.detach(), atol=1e-6, rtol=0)
    for e, g in zip(t.G_ema.buffers(), t.G.buffers()):  # BatchNorm statistics are copied
        assert torch.equal(e, g)
    moved = max(float((e - g.detach()).abs().max()) for e, g in zip(t.G_ema.parameters(), t.G.parameters()))
    assert moved > 0  # the average lags the weights
    assert t.G_out is t.G_ema and not any(p.requires_grad for p in t.G_ema.parameters())


def test_no_ema_unless_asked():
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8)))
    assert t.G_ema is None and t.G_out is t.G


def test_separate_discriminator_lr():
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, lr=1e-3, lr_d=4e-4)))
    assert t.opt_G.param_groups[0]["lr"] == 1e-3 and t.opt_D.param_groups[0]["lr"] == 4e-4


# --------------------------------------------------------------------------------------------
# Mode seeking


def test_r1_penalty_is_the_squared_input_gradient():
    D = torch.nn.Conv2d(2, 1, 1, bias=True)  # D(x) = w . x + b at every pixel: grad = w at each of 9 pixels
    x = torch.randn(3, 2, 3, 3)
    expected = 9 * D.weight.detach().pow(2).sum()
    torch.testing.assert_close(r1_penalty(D, x), expected)
    r1_penalty(D, x).backward()  # it trains D: d/dw of 9 |w|^2
    torch.testing.assert_close(D.weight.grad, 18 * D.weight.detach())


def test_r1_acts_on_every_sixteenth_d_step_only(data_dir):
    a, b = fixed_batch(data_dir, 2)

    def d_after(steps: int, gamma: float) -> list[torch.Tensor]:
        torch.manual_seed(0)
        t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, batch_size=2, norm="instance", r1_gamma=gamma)))
        for _ in range(steps):
            torch.manual_seed(1)  # the same dropout masks in both runs
            t.step(a, b)
        return [p.detach().clone() for p in t.D.parameters()]

    same = d_after(R1_EVERY - 1, 0.0), d_after(R1_EVERY - 1, 10.0)
    assert all(torch.equal(x, y) for x, y in zip(*same))
    moved = d_after(R1_EVERY, 0.0), d_after(R1_EVERY, 10.0)
    assert max((x - y).abs().max().item() for x, y in zip(*moved)) > 1e-4


def test_mode_seeking_loss_is_inverse_output_distance():
    a = torch.zeros(2, 3, 8, 8)
    assert float(mode_seeking_loss(a, a + 0.5, 0.5)) == pytest.approx(1.0 / (0.5 + 1e-5))
    assert float(mode_seeking_loss(a, a + 0.1, 0.5)) == pytest.approx(1.0 / (0.1 + 1e-5))
    assert float(mode_seeking_loss(a, a, 0.25)) == pytest.approx(0.5 / 1e-5)  # identical samples: huge


def test_pooled_mode_seeking_ignores_fine_texture_and_keeps_areas():
    a = torch.zeros(1, 3, 16, 16)
    checker = torch.ones(1, 3, 16, 16)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = -1  # differs by 1 everywhere, alternating in sign
    assert float(mode_seeking_loss(a, checker, 0.5)) == pytest.approx(1.0 / (1.0 + 1e-5))
    assert float(mode_seeking_loss(a, checker, 0.5, pool=8)) == pytest.approx(1.0 / 1e-5)  # nothing left
    half = a.clone()
    half[..., :8, :] = 0.5  # another colour over half the picture: the same distance at any pool
    for pool in (1, 4, 8, 16):
        assert float(mode_seeking_loss(a, half, 0.5, pool=pool)) == pytest.approx(1.0 / (0.25 + 1e-5))
    assert float(mode_seeking_loss(torch.zeros(1, 1, 10, 10), torch.ones(1, 1, 10, 10), 0.5, pool=8)) > 0


def test_mode_seeking_over_the_object_ignores_the_paper():
    target = torch.ones(1, 3, 16, 16)  # white paper ...
    target[..., :, :8] = -1  # ... with a black object on its left half
    target[0, 0, 0, 8] = 0.9  # a pixel just off white is object too: one paper-white channel is not enough
    where = object_mask(target)
    assert where.shape == (1, 1, 16, 16) and float(where.sum()) == 16 * 8 + 1
    where[0, 0, 0, 8] = 0
    a = torch.zeros(1, 3, 16, 16)
    on_paper, on_object = a.clone(), a.clone()
    on_paper[..., :, 8:] = 0.5  # a colour cloud on the paper
    on_object[..., :, :8] = 0.5  # another colour of the object
    for pool in (1, 8):
        assert float(mode_seeking_loss(a, on_paper, 0.5, pool=pool)) == pytest.approx(1.0 / (0.25 + 1e-5))
        assert float(mode_seeking_loss(a, on_paper, 0.5, pool=pool, where=where)) == pytest.approx(1.0 / 1e-5)
        # the object's own difference in full, not diluted by the paper around it
        assert float(mode_seeking_loss(a, on_object, 0.5, pool=pool, where=where)) == pytest.approx(1.0 / (0.5 + 1e-5))
    # a cell half object, half paper: only its object pixels count, and it weighs half a cell
    assert float(mode_seeking_loss(a, on_object, 0.5, pool=16, where=where)) == pytest.approx(1.0 / (0.5 + 1e-5))
    assert float(mode_seeking_loss(a, on_paper, 0.5, pool=16, where=where)) == pytest.approx(1.0 / 1e-5)
    # nothing drawn in the batch: no term rather than an infinite one
    assert float(mode_seeking_loss(a, on_object, 0.5, where=object_mask(torch.ones(1, 3, 16, 16)))) == 0.0


def trained_a_little(a: torch.Tensor, b: torch.Tensor, term: str, weight: float, **options) -> Trainer:
    """A tiny trainer after 12 steps on one batch, with one loss term at ``weight``; it logs the term
    exactly when it is on."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict(dict(ngf=8, ndf=8, batch_size=2, lr=2e-3, **{term: weight}, **options))
    t = make_trainer(cfg, spe=1000)
    for _ in range(12):
        losses = t.step(a, b)
    logged = {"lambda_ms": "G_MS", "lambda_flat": "G_flat"}[term]
    assert (float(losses[logged]) > 0) == (weight > 0)
    return t


def test_mode_seeking_step_logs_the_term_and_pushes_samples_apart(data_dir):
    a, b = fixed_batch(data_dir, 2)

    def spread(lambda_ms: float, **kw) -> float:
        t = trained_a_little(a, b, "lambda_ms", lambda_ms, loss="l1", **kw)
        torch.manual_seed(1)
        with torch.no_grad():
            return float((t.G(a) - t.G(a)).abs().mean())  # two training-mode dropout draws

    assert spread(5.0) > 1.2 * spread(0.0)
    assert spread(5.0, ms_object=True) > 1.2 * spread(0.0)  # wired through the step (photos: all object)


def _orange_on_paper() -> torch.Tensor:
    target = torch.ones(1, 3, 32, 32)  # paper
    target[:, :, 8:24, 8:24] = torch.tensor([0.6, -0.1, -0.7])[:, None, None]  # an orange square
    return target


def test_flat_fill_loss_is_blind_to_a_fills_colour_and_sees_mottling_and_specks():
    target = _orange_on_paper()
    assert float(flat_fill_loss(target, flat_mask(target))) < 2e-3  # the target itself: eps only
    recoloured = target.clone()
    recoloured[:, :, 8:24, 8:24] = torch.tensor([-0.5, -0.2, 0.8])[:, None, None]  # a blue square instead
    assert float(flat_fill_loss(recoloured, flat_mask(target))) < 2e-3  # another colour for the fill costs nothing...
    assert float((recoloured - target).abs().mean()) > 0.2  # ...that L1 charges for
    mottled = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    assert 0.07 < float(flat_fill_loss(mottled, flat_mask(target))) < 0.1  # 5x5 sample std of N(0, 0.1), channels averaged
    speck = target.clone()
    speck[:, :, 2, 28] = -1.0  # one black dot on the paper
    assert float(flat_fill_loss(speck, flat_mask(target))) > 0.01
    # the same measure as the held-out flat_std, in 0-255 levels
    as_uint8 = lambda t: ((t[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()  # noqa: E731
    clipped = mottled.clamp(-1, 1)  # as a picture: the noise on white paper clips
    assert flat_std(as_uint8(clipped), as_uint8(target)) == pytest.approx(
        127.5 * float(flat_fill_loss(clipped, flat_mask(target))), rel=0.03)
    assert float(flat_fill_loss(target, flat_mask(torch.randn(1, 3, 32, 32)))) == 0.0  # no flat target pixel: no term


def test_flat_fill_gradient_flattens_a_fill_without_moving_its_colour():
    target = _orange_on_paper()
    fake = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    start_mean = float(fake.detach()[:, :, 10:22, 10:22].mean())
    opt = torch.optim.Adam([fake], lr=0.01)
    for _ in range(50):
        opt.zero_grad()
        flat_fill_loss(fake, flat_mask(target)).backward()
        assert torch.isfinite(fake.grad).all()
        opt.step()
    fake = fake.detach()
    assert float(flat_fill_loss(fake, flat_mask(target))) < 0.3 * 0.085
    assert float(fake[:, :, 10:22, 10:22].mean()) == pytest.approx(start_mean, abs=0.01)


def test_flat_fill_step_logs_the_term_and_cleans_the_fills(data_dir):
    a, b = fixed_batch(data_dir, 2)

    def mottling(lambda_flat: float) -> float:
        t = trained_a_little(a, b, "lambda_flat", lambda_flat)
        torch.manual_seed(1)
        with torch.no_grad():
            return float(flat_fill_loss(t.G(a), flat_mask(b)))

    assert mottling(100.0) < 0.8 * mottling(0.0)
    with pytest.raises(ValueError, match="--lambda-flat"):
        TrainConfig.from_dict(dict(lambda_flat=-1.0))


def test_mode_seeking_needs_dropout():
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig.from_dict(dict(lambda_ms=1.0, dropout=False))
    with pytest.raises(ValueError, match="--ms-pool"):
        TrainConfig.from_dict(dict(lambda_ms=1.0, ms_pool=0))
    with pytest.raises(ValueError, match="--ms-object .* --lambda-ms"):
        TrainConfig.from_dict(dict(ms_object=True))


# --------------------------------------------------------------------------------------------
# Continuing a model: export writes training/, --init-from reads it, the lineage adds up


# --------------------------------------------------------------------------------------------
# The resolution curriculum


@pytest.fixture(scope="module")
def low_res_dir(tmp_path_factory):
    """The tiny dataset's pairs again, prepared at half the size (same seed: the same crops, names, order)."""
    return make_dataset(tmp_path_factory.mktemp("low") / "tiny-32", size=SIZE // 2)


def test_curriculum_trains_the_first_share_small_then_full_size(data_dir, low_res_dir, tmp_path):
    m = fit_mod.fit(tiny(data_dir, tmp_path, num_downs=5, low_res_data=str(low_res_dir),  # 2 epochs of 6 steps
                         low_res_share=0.75, log_every=1, final_eval=True, checkpoint_every=3))
    assert m["steps_this_session_at"] == {str(SIZE // 2): 9, str(SIZE): 3}
    assert [h["size"] for h in m["history"]] == [SIZE // 2] * 9 + [SIZE] * 3
    assert m["eval"]["n"] == 4  # scored on --data's held-out pairs at the full size
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["generator_config"]["num_downs"] == 5 and ckpt["stint"]["recipe"]["low_res_share"] == 0.75


def test_curriculum_depth_defaults_to_the_small_size_and_resumes_in_its_phase(data_dir, low_res_dir, tmp_path):
    kw = dict(num_downs=0, low_res_data=str(low_res_dir), low_res_share=0.5, log_every=1, checkpoint_every=2)
    first = fit_mod.fit(tiny(data_dir, tmp_path, max_steps=3, **kw))  # stops in the low phase...
    assert first["generator_config"]["num_downs"] == 5  # log2(32): a 1x1 bottleneck at the small size
    done = fit_mod.fit(tiny(data_dir, tmp_path, max_steps=0, resume=True, **kw))  # ...and goes on from step 3
    whole = fit_mod.fit(tiny(data_dir, tmp_path, name="whole", **kw))
    sizes = lambda m: [h["size"] for h in m["history"]]  # noqa: E731
    assert sizes(done) == sizes(whole) and SIZE // 2 in sizes(whole) and SIZE in sizes(whole)
    a = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["G"]
    b = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["G"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed = uninterrupted, across the switch


def test_curriculum_refusals_say_what_to_do(data_dir, low_res_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs both --low-res-data"):
        tiny(data_dir, tmp_path, low_res_share=0.5)
    with pytest.raises(ConfigError, match=r"give --num-downs 5 or less"):
        fit_mod.fit(tiny(data_dir, tmp_path, num_downs=6, low_res_data=str(low_res_dir), low_res_share=0.5))
    other = make_dataset(tmp_path / "other", size=SIZE // 2, n_train=6)
    with pytest.raises(ConfigError, match="does not hold the same training pairs"):
        fit_mod.fit(tiny(data_dir, tmp_path, num_downs=5, low_res_data=str(other), low_res_share=0.5))
    with pytest.raises(ConfigError, match="needs a smaller size"):
        fit_mod.fit(tiny(data_dir, tmp_path, num_downs=5, low_res_data=str(data_dir), low_res_share=0.5))
    assert not (tmp_path / "run").exists()  # all said before any work


def test_export_then_init_from_continues_g_ema_and_d(data_dir, tmp_path, caplog):
    from train.export import export

    fit_mod.fit(tiny(data_dir, tmp_path / "runs", name="first", max_steps=4, ema_decay=0.99))
    ckpt1 = load_checkpoint(tmp_path / "runs" / "first" / "checkpoints" / "last.pt")
    folder = export(tmp_path / "runs" / "first" / "checkpoints" / "last.pt", tmp_path / "model")
    assert sorted(p.name for p in (folder / "training").iterdir()) == [
        "discriminator.safetensors", "generator.safetensors", "state.json"]
    lin = read_lineage(folder)
    assert lin.steps == 4 and lin.images_seen == 8 and len(lin.stints) == 1
    assert lin.discriminator == {"in_channels": 6, "ndf": 8, "n_layers": 3, "norm": "batch"}
    assert lin.stints[0]["recipe"]["ema_decay"] == 0.99 and lin.cpu_hours > 0

    # The exported model is the EMA, not the raw weights.
    from p2p_demo.hub import load_generator

    G, _ = load_generator(str(folder))
    k = next(k for k, v in ckpt1["G"].items() if v.is_floating_point() and v.numel() > 16)
    torch.testing.assert_close(G.state_dict()[k].float(), ckpt1["G_ema"][k].half().float())
    assert not torch.equal(ckpt1["G_ema"][k], ckpt1["G"][k])

    # Architecture options come from the source: none given here.
    cfg = config_from_args(["--data", str(data_dir), "--out-dir", str(tmp_path / "runs"), "--name", "second",
                            "--init-from", str(folder), "--max-steps", "3", "--ema-decay", "0.99",
                            "--batch-size", "2", "--checkpoint-every", "0", "--sample-every", "0",
                            "--no-final-eval", "--no-progress", "--device", "cpu"])
    assert (cfg.generator.ngf, cfg.ndf, cfg.n_layers, cfg.generator.norm) == (8, 8, 3, "batch")

    generator = cfg.generator.resolve(size=SIZE, channels=3)
    t = Trainer(cfg, generator, device=torch.device("cpu"), steps_per_epoch=6)
    from train.lineage import load_init_source

    t.init_from(load_init_source(str(folder)))
    half = lambda sd: {k: v.half().float() for k, v in sd.items() if v.is_floating_point()}  # noqa: E731
    for name, module, saved in (("G", t.G, ckpt1["G"]), ("D", t.D, ckpt1["D"]), ("EMA", t.G_ema, ckpt1["G_ema"])):
        got = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
        for key, v in half(saved).items():
            torch.testing.assert_close(got[key], v, msg=f"{name} {key}")

    # A new style (--ema-restart): G and D continue, the EMA starts anew from G, warmed up.
    fresh = Trainer(replace(cfg, ema_restart=True), generator, device=torch.device("cpu"), steps_per_epoch=6)
    fresh.init_from(load_init_source(str(folder)))
    assert fresh.ema_steps == 0 and t.ema_steps >= 10_000
    for key, v in half(ckpt1["G"]).items():
        torch.testing.assert_close(fresh.G_ema.state_dict()[key], v, msg=f"EMA {key}")

    with caplog.at_level("WARNING", logger="train.fit"):
        fit_mod.fit(cfg)
    assert "recipe" not in caplog.text  # the flags above keep the first stint's recipe
    folder2 = export(tmp_path / "runs" / "second" / "checkpoints" / "last.pt", tmp_path / "model2")
    lin2 = read_lineage(folder2)
    assert [s["steps"] for s in lin2.stints] == [4, 3] and lin2.steps == 7 and lin2.images_seen == 14
    # The record names its source without the training machine's absolute paths.
    assert lin2.stints[1]["init_from"] == "model (a local path)"
    assert str(tmp_path) not in (folder2 / "README.md").read_text() + (folder2 / "training" / "state.json").read_text()
    meta = json.loads((folder2 / "config.json").read_text())
    assert meta["metrics"]["total_steps"] == 7 and meta["metrics"]["total_images_seen"] == 14
    assert "2 stint(s), 7 steps, 14 images seen" in (folder2 / "README.md").read_text()


def test_export_takes_the_scores_evaluate_wrote_for_the_same_step(data_dir, tmp_path, caplog):
    from train.evaluate import evaluate
    from train.export import export

    fit_mod.fit(tiny(data_dir, tmp_path / "runs", name="r", max_steps=3))  # no final evaluation
    ckpt = tmp_path / "runs" / "r" / "checkpoints" / "last.pt"
    metrics = lambda folder: json.loads((folder / "config.json").read_text())["metrics"]  # noqa: E731
    assert "test_l1" not in metrics(export(ckpt, tmp_path / "before"))

    scored = evaluate(str(ckpt), str(data_dir), variety_seeds=2)
    assert scored["step"] == 3
    card = metrics(export(ckpt, tmp_path / "after"))
    assert (card["test_l1"], card["test_variety"]) == (round(scored["l1"], 4), round(scored["variety"], 4))

    # a score of another step of the run is not this checkpoint's: left out, and said so
    path = tmp_path / "runs" / "r" / "eval" / "metrics_test.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "step": 2}))
    assert "test_l1" not in metrics(export(ckpt, tmp_path / "stale"))
    assert "is not from step 3" in caplog.text


def test_combined_licence_keeps_the_share_alike_side_and_leaves_the_rest_to_a_person():
    from train.lineage import checkpoint_license, combined_license

    assert combined_license("cc-by-sa-4.0", "MIT") == "cc-by-sa-4.0"  # fluent3d: openmoji's weights, MIT renders
    assert combined_license("MIT", "CC-BY-SA-4.0") == "CC-BY-SA-4.0"
    assert combined_license("MIT", "mit") == "MIT"
    assert combined_license("MIT", "BSD-3-Clause") == ""
    assert combined_license("", "MIT") == "" and combined_license("MIT", "") == ""
    # Checkpoints written before fit recorded the licence: the data's from scratch, unknown from a model.
    old = {"data": {"licence": "MIT"}, "config": {"init_from": ""}}
    assert checkpoint_license(old) == "MIT"
    assert checkpoint_license({**old, "config": {"init_from": "weights/openmoji"}}) == ""
    assert checkpoint_license({**old, "license": "cc-by-sa-4.0"}) == "cc-by-sa-4.0"


def test_a_model_trained_from_another_keeps_its_licence(data_dir, tmp_path, caplog):
    """Weights trained from a share-alike model on permissively licensed data stay share-alike, through
    an exported folder, a --resume and a checkpoint as the start; a pair the code cannot settle is left
    to export --license, with a warning at both ends."""
    from p2p_demo.hub import UNKNOWN_LICENSE
    from train.export import export

    licence = lambda folder: json.loads((folder / "config.json").read_text())["license"]  # noqa: E731
    runs = tmp_path / "runs"
    fit_mod.fit(tiny(data_dir, runs, name="first", max_steps=2))  # the data: BSD-3-Clause
    first = runs / "first" / "checkpoints" / "last.pt"
    assert licence(export(first, tmp_path / "plain")) == "BSD-3-Clause"
    start = export(first, tmp_path / "shared-alike", license="CC-BY-SA-4.0")

    with caplog.at_level("INFO", logger="train.fit"):
        fit_mod.fit(tiny(data_dir, runs, name="second", max_steps=2, init_from=str(start)))
    assert "the trained model is under CC-BY-SA-4.0" in caplog.text
    fit_mod.fit(tiny(data_dir, runs, name="second", max_steps=3, init_from=str(start), resume=True))
    second = runs / "second" / "checkpoints" / "last.pt"
    assert load_checkpoint(second)["step"] == 3 and load_checkpoint(second)["license"] == "CC-BY-SA-4.0"
    folder = export(second, tmp_path / "continued")
    assert licence(folder) == "CC-BY-SA-4.0" and "license: cc-by-sa-4.0" in (folder / "README.md").read_text()
    fit_mod.fit(tiny(data_dir, runs, name="third", max_steps=2, init_from=str(second)))
    third = runs / "third" / "checkpoints" / "last.pt"
    assert load_checkpoint(third)["license"] == "CC-BY-SA-4.0"
    assert licence(export(third, tmp_path / "mit", license="MIT")) == "MIT"  # --license decides

    # MIT weights on BSD data: no licence follows from the two; the export says so.
    caplog.clear()
    with caplog.at_level("WARNING"):
        fit_mod.fit(tiny(data_dir, runs, name="fourth", max_steps=2,
                         init_from=str(export(first, tmp_path / "mit-start", license="MIT"))))
        assert "decide the trained model's licence with export --license" in caplog.text
        assert licence(export(runs / "fourth" / "checkpoints" / "last.pt", tmp_path / "undecided")) == UNKNOWN_LICENSE
        assert "give --license to say it" in caplog.text
    # A checkpoint from before the licence was recorded, started from a model: not known either.
    old = load_checkpoint(second)
    del old["license"]
    torch.save(old, tmp_path / "old.pt")
    assert licence(export(tmp_path / "old.pt", tmp_path / "old")) == UNKNOWN_LICENSE


def test_recorded_source_keeps_ids_and_relative_paths_and_drops_the_machines(tmp_path, monkeypatch):
    from train.lineage import PREVIOUS_STINT, recorded_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "openmoji").mkdir(parents=True)
    assert recorded_source("openmoji") == "openmoji" and recorded_source("huggan/pix2pix-edge2shoes") == "huggan/pix2pix-edge2shoes"
    assert recorded_source("runs/a/checkpoints/last.pt") == PREVIOUS_STINT and recorded_source("") == ""
    assert recorded_source("/home/someone/runs/b/checkpoints/step_100.pt") == PREVIOUS_STINT
    assert recorded_source("the checkpoint of run a") == PREVIOUS_STINT  # records written before the rule
    assert recorded_source(str(tmp_path / "weights" / "openmoji")) == "weights/openmoji"
    assert recorded_source("/home/someone/work/runs/x/last.pt") == "last.pt (a local path)"
    assert recorded_source("/model.pt") == "model.pt (a local path)"
    # Stints recorded before the rule are cleaned whenever a lineage is written.
    from train.lineage import Lineage

    old = Lineage(stints=[{"steps": 1, "init_from": "/home/someone/weights/openmoji"}, {"steps": 2, "init_from": ""}])
    assert [st["init_from"] for st in old.to_dict()["stints"]] == ["openmoji (a local path)", ""]


def test_init_from_with_other_architecture_says_what_to_change(data_dir, tmp_path):
    from train.export import export

    fit_mod.fit(tiny(data_dir, tmp_path / "runs", name="a", max_steps=2))
    folder = export(tmp_path / "runs" / "a" / "checkpoints" / "last.pt", tmp_path / "model")
    with pytest.raises(SystemExit, match="does not fit this run's options.*--ngf"):
        fit_args.main(["--data", str(data_dir), "--out-dir", str(tmp_path / "runs"), "--name", "b", "--init-from",
                      str(folder), "--ndf", "16", "--max-steps", "1", "--no-final-eval", "--no-progress"])
    # a larger ngf would widen the generator (train.widen), but not a BatchNorm one: said so
    with pytest.raises(SystemExit, match="ngf 8, this run 16: only reference-layout generators with instance norm"):
        fit_args.main(["--data", str(data_dir), "--out-dir", str(tmp_path / "runs"), "--name", "c", "--init-from",
                      str(folder), "--ngf", "16", "--max-steps", "1", "--no-final-eval", "--no-progress"])


def test_a_continued_stint_names_what_it_changes_of_the_recipe(data_dir, tmp_path, caplog):
    lin = Lineage(stints=[{"recipe": {"batch_size": 4, "lambda_ms": 1.0, "lr": 2e-4, "channel_dropout": True,
                                      "max_seconds": 6900.0, "n_epochs": 100.0, "seed": 0}}])
    cfg = TrainConfig.from_dict({"data": "d", "batch_size": 1, "lambda_ms": 1.0, "lr": 2e-4, "channel_dropout": True,
                                 "max_seconds": 60.0, "n_epochs": 1.0, "seed": 3}).to_dict()
    assert lin.recipe_changes(cfg) == {"batch_size": (4, 1)}  # budget, schedule length and seed are each stint's own
    assert Lineage().recipe_changes(cfg) == {}
    # an option newer than the record was at its default then: turning it on is a change
    newer = TrainConfig.from_dict({"data": "d", "batch_size": 4, "lambda_ms": 1.0, "lr": 2e-4, "channel_dropout": True,
                                   "ms_object": True}).to_dict()
    assert "ms_object" not in lin.stints[-1]["recipe"]
    assert lin.recipe_changes(newer) == {"ms_object": (False, True)}

    from train.export import export

    fit_mod.fit(tiny(data_dir, tmp_path / "runs", name="a", max_steps=2, lambda_l1=300.0))
    folder = export(tmp_path / "runs" / "a" / "checkpoints" / "last.pt", tmp_path / "model")
    with caplog.at_level("WARNING", logger="train.fit"):
        fit_mod.fit(tiny(data_dir, tmp_path / "runs", name="b", max_steps=1, init_from=str(folder), batch_size=1))
    assert "changes the previous stint's recipe: lambda_l1 300.0 -> 100.0, batch_size 2 -> 1" in caplog.text


def test_lineage_refuses_unknown_versions():
    with pytest.raises(ValueError, match="version"):
        Lineage.from_dict({"version": 99, "stints": []})


def test_bundled_openmoji_carries_its_history():
    lin = read_lineage(Path(__file__).resolve().parent.parent / "weights" / "openmoji")
    assert lin.steps >= 3157 and lin.images_seen >= 12628 and lin.cpu_hours >= 2.0


# --------------------------------------------------------------------------------------------
# Evaluation: clean fills and variety


def test_local_std_and_flat_std():
    flat = np.full((32, 32, 3), 200, np.uint8)
    assert float(local_std(torch.from_numpy(flat).permute(2, 0, 1)[None].float()).max()) == 0.0
    rng = np.random.default_rng(0)
    noisy = np.clip(200 + rng.normal(0, 10, flat.shape), 0, 255).astype(np.uint8)
    assert flat_std(flat, flat) == 0.0
    assert 8.0 < flat_std(noisy, flat) < 11.0  # 5x5 sample std of N(0, 10) noise
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::2] = 255
    assert flat_std(noisy, stripes) is None  # no flat target pixel to judge


def test_paper_l1_sees_clouds_on_the_paper_only():
    target = np.full((16, 16, 3), 255, np.uint8)
    target[:, :8] = (200, 120, 40)  # an orange object on the left, paper on the right
    target[0, 8] = (255, 255, 240)  # off-white in one channel: not paper
    clean = target.copy()
    recoloured = target.copy()
    recoloured[:, :8] = (40, 120, 200)  # another colour of the object: no cloud
    cloud = target.copy()
    cloud[:, 8:] = (255, 255, 0)  # the paper turned yellow: 255 levels in one of three channels
    assert paper_l1([clean, recoloured], target) == 0.0
    assert paper_l1([cloud], target) == pytest.approx(255 / 3 / 127.5)
    assert paper_l1([clean, cloud], target) == pytest.approx(255 / 3 / 127.5 / 2)  # averaged over the samples
    grey = np.full((16, 16), 255, np.uint8)
    assert paper_l1([np.zeros((16, 16, 3), np.uint8)], grey) == pytest.approx(2.0)  # 1-channel targets
    assert paper_l1([cloud], np.zeros((16, 16, 3), np.uint8)) is None  # no paper to judge


def test_sharpness_is_one_for_the_target_falls_with_blur_and_ignores_noise():
    import cv2

    target = np.full((64, 64, 3), 255, np.uint8)
    cv2.circle(target, (32, 32), 16, (200, 60, 20), -1)  # a filled disc on paper: one crisp outline
    cv2.rectangle(target, (4, 4), (20, 20), (20, 40, 160), -1)
    assert sharpness(target, target) == pytest.approx(1.0)
    soft, softer = cv2.GaussianBlur(target, (0, 0), 1.0), cv2.GaussianBlur(target, (0, 0), 2.5)
    assert 0.1 < sharpness(softer, target) < sharpness(soft, target) < 0.9
    rng = np.random.default_rng(0)
    noisy = np.clip(target + rng.normal(0, 12, target.shape), 0, 255).astype(np.uint8)
    assert sharpness(noisy, target) == pytest.approx(1.0, abs=0.05)  # speckle is not sharpness
    assert sharpness(np.full_like(target, 128), target) == 0.0  # the mean colour keeps no edge
    assert sharpness(255 - target, target) == pytest.approx(-1.0, abs=0.02)  # edges of the wrong sign
    assert sharpness(target, np.full_like(target, 200)) is None  # a flat target has no edge to keep
    # a one-channel target is judged on the output's first channel (a 1-channel model repeats it)
    assert sharpness(target, target[..., :1]) == pytest.approx(1.0)


def test_chroma_is_one_for_the_target_and_falls_as_the_object_turns_beige():
    target = np.full((16, 16, 3), 255, np.uint8)
    target[:, :8] = (200, 120, 40)  # an orange object (chroma 160) on the left, paper on the right
    assert chroma(target, target) == pytest.approx(1.0)
    grey = target.mean(axis=2, keepdims=True)
    for share in (0.25, 0.5):  # mixed toward its own grey: the chroma falls in proportion
        paler = np.rint(share * target + (1 - share) * grey).astype(np.uint8)
        assert chroma(paler, target) == pytest.approx(share, abs=0.01)
    assert chroma(np.repeat(grey.astype(np.uint8), 3, axis=2), target) == 0.0
    recoloured = target.copy()
    recoloured[:, :8] = (40, 120, 200)  # another colour as strong: as colourful
    assert chroma(recoloured, target) == pytest.approx(1.0)
    clouded = target.copy()
    clouded[:, 8:] = (255, 0, 255)  # colour on the paper is paper_l1's business, not the object's
    assert chroma(clouded, target) == pytest.approx(1.0)
    assert chroma(target, np.full_like(target, 255)) is None  # no object
    assert chroma(target, np.full_like(target, 90)) is None  # a grey object has no colour to keep
    assert chroma(target, target[..., 0]) is None  # a one-channel target neither


def test_pairwise_l1():
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert pairwise_l1([a, a, a]) == 0.0
    assert pairwise_l1([a, b]) == pytest.approx(2.0)
    assert pairwise_l1([a, a, b]) == pytest.approx(4.0 / 3)


def test_mean_l1_scores_the_average_of_the_samples():
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    grey = np.full((4, 4, 3), 127, np.uint8)
    assert mean_l1([white], black) == pytest.approx(2.0)
    # a black and a white sample each miss a grey target by 1, their average by next to nothing
    assert mean_l1([black, white], grey) == pytest.approx(abs(127.5 - 127) / 127.5)
    assert mean_l1([black, black, white], black) == pytest.approx(2.0 / 3)
    assert mean_l1([white], black[..., 0]) == pytest.approx(2.0)  # a 1-channel target: the first channel


def test_evaluate_scores_variety_only_with_dropout(data_dir):
    from train.dataset import PairedData
    from train.evaluate import evaluate_generator

    data = PairedData.load(data_dir, "test")
    torch.manual_seed(0)
    with_dropout = build_generator(GeneratorConfig(ngf=8, num_downs=6))
    without = build_generator(GeneratorConfig(ngf=8, num_downs=6, dropout=False))
    m1, out1 = evaluate_generator(with_dropout, data, variety_seeds=3)
    m0, out0 = evaluate_generator(without, data, variety_seeds=3)
    assert m1["variety"] > 0.001 and m1["variety_seeds"] == 3
    assert m0["variety"] == 0.0 and m0["variety_seeds"] == 1
    assert m0["l1_mean"] == pytest.approx(m0["l1"])  # one sample is its own average
    assert m1["l1_mean"] < m1["l1"] - 0.001  # the average of different samples misses the target by less
    # flat_std is the mean over the items whose target has flat pixels, of the output's local std there
    targets = [data.B[i].permute(1, 2, 0).numpy() for i in range(len(data))]
    for m, outs in ((m1, out1), (m0, out0)):
        per_item = [s for s in (flat_std(y, t) for y, t in zip(outs, targets)) if s is not None]
        assert per_item, "the test data should have flat target regions"
        assert m["flat_std"] == pytest.approx(float(np.mean(per_item)))
        assert m["flat_std"] > 0.1  # an untrained net's output is not flat anywhere
        per_item = [s for s in (sharpness(y, t) for y, t in zip(outs, targets)) if s is not None]
        assert m["sharpness"] == pytest.approx(float(np.mean(per_item)))
        assert abs(m["sharpness"]) < 0.2  # an untrained net reproduces none of the targets' edges
        per_item = [s for s in (chroma(y, t) for y, t in zip(outs, targets)) if s is not None]
        assert per_item, "the test data's photos have colour"
        assert m["chroma"] == pytest.approx(float(np.mean(per_item)))
