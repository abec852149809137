"""train/: the objective, augmentation, checkpoints (resume, kill, disk full), DDP, evaluate, export.

Tiny and CPU-only: ngf/ndf 8 at 64x64 (num_downs 6: a 1x1 bottleneck and one dropout level) on a handful of real photos (skimage.data) whose edge maps
come from the project's own pipeline (photo_to_edges, canny).
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from p2p_demo.image import to_tensor
from p2p_demo.nets import GeneratorConfig, SeededDropout, build_generator
from train import fit as fit_mod
from train import plots
from train.config import GAN_MODES, LOSSES, ConfigError, TrainConfig, option_fields
from train.dataset import Jitter, PairedData, batch_indices, default_load_size, epoch_order, steps_per_epoch, to_signed
from train.fit_args import config_from_args
from train.resume import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from train.trainer import check_patchgan_fits

from conftest import SIZE, fixed_batch, make_dataset, make_trainer, tiny

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Path:
    """One short finished run (with samples, plot, metrics and final evaluation)."""
    out = tmp_path_factory.mktemp("runs")
    fit_mod.fit(tiny(data_dir, out, max_steps=6, sample_every=3, final_eval=True))
    return out / "run"


# --------------------------------------------------------------------------------------------
# data


def test_to_signed_matches_image_to_tensor():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert torch.equal(to_signed(torch.from_numpy(img))[None, None], to_tensor(img, 1))


def test_jitter_same_transform_for_input_and_target():
    assert default_load_size(256) == 286 and default_load_size(64) == 72 and default_load_size(32) == 36
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 1, SIZE, SIZE) * 2 - 1
    b = a.repeat(1, 3, 1, 1)
    ja, jb = Jitter(SIZE)(a, b, g)
    assert ja.shape == a.shape and jb.shape == b.shape
    assert torch.equal(jb, ja.repeat(1, 3, 1, 1))  # one transform for both sides of a pair
    assert not torch.allclose(ja, a)
    assert ja.min() >= -1 and ja.max() <= 1
    # flip only: every item is itself or its mirror image, and both occur
    fa, _ = Jitter(SIZE, jitter=False, flip=True)(a, b, torch.Generator().manual_seed(1))
    flipped = [torch.equal(fa[i], a[i].flip(-1)) for i in range(6)]
    assert all(f or torch.equal(fa[i], a[i]) for i, f in enumerate(flipped)) and 0 < sum(flipped) < 6
    off = Jitter(SIZE, jitter=False, flip=False)
    assert not off.active and off(a, b, g)[0] is a


def test_epoch_order_shards_like_distributed_sampler():
    n, world = 11, 2
    shards = [epoch_order(n, 3, seed=5, rank=r, world=world) for r in range(world)]
    assert [len(s) for s in shards] == [6, 6]
    assert set(torch.cat(shards).tolist()) == set(range(n))
    # The order is pinned: a run resumed with other code or another torch must see the same batches.
    assert [s.tolist() for s in shards] == [[10, 2, 0, 7, 6, 5], [9, 4, 1, 3, 8, 10]]
    assert [epoch_order(2, 0, 0, r, 5).tolist() for r in range(5)] == [[0], [1], [0], [1], [0]]  # no empty rank
    assert not torch.equal(epoch_order(n, 4, 5), epoch_order(n, 3, 5))  # a new order per epoch
    spe = steps_per_epoch(n, 4, world)
    assert spe == 2
    assert torch.equal(batch_indices(n, spe + 1, 4, 5, 1, world), epoch_order(n, 1, 5, 1, world)[4:8])


# --------------------------------------------------------------------------------------------
# the objective


def test_l1_falls_on_a_fixed_batch(data_dir):
    torch.manual_seed(0)
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, batch_size=4, lr=1e-3)), spe=1000)
    a, b = fixed_batch(data_dir)
    l1 = [float(t.step(a, b)["G_L1"]) for _ in range(30)]
    assert math.isfinite(l1[-1])
    assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:3]), l1


def test_lr_schedule_constant_then_linear_to_zero():
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, n_epochs=2, n_epochs_decay=2)), spe=5)
    assert t.total_steps == 20
    assert [t.lr_factor(s) for s in (0, 9)] == [1.0, 1.0]
    assert t.lr_factor(10) == 1.0 and t.lr_factor(15) == 0.5 and t.lr_factor(20) == 0.0
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the schedule without training
        for _ in range(12):
            t.sched_G.step()
            lrs.append(t.opt_G.param_groups[0]["lr"])
    assert lrs[8] == pytest.approx(2e-4) and lrs[11] == pytest.approx(2e-4 * 0.8)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("gan_mode", GAN_MODES)
def test_every_loss_option_and_gan_mode_steps(data_dir, loss, gan_mode):
    torch.manual_seed(0)
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, loss=loss, gan_mode=gan_mode, batch_size=2)))
    a, b = fixed_batch(data_dir, 2)
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    losses = t.step(a, b)
    assert all(math.isfinite(float(v)) for v in losses.values()), losses
    assert any(not torch.equal(before[k], v) for k, v in t.G.state_dict().items())
    if loss == "l1":
        assert t.D is None and float(losses["G_GAN"]) == 0.0
    else:
        # cgan: D judges (input, output), 3 + 3 channels; gan: the output alone
        assert t.D.model[0].in_channels == (6 if loss.endswith("cgan") else 3)
        assert float(losses["D_real"]) != 0.0 and float(losses["D_fake"]) != 0.0


@pytest.mark.parametrize("n_layers", range(6))
def test_every_patchgan_depth_steps_with_the_right_output_shape(n_layers):
    size = 128 if n_layers == 5 else SIZE  # a 286 px patch needs >= 96 px input
    torch.manual_seed(0)
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, n_layers=n_layers, batch_size=1)), size=size)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    b = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    losses = t.step(a, b)
    assert all(math.isfinite(float(v)) for v in losses.values())
    side = size if n_layers == 0 else size // 2**n_layers - 2
    with torch.no_grad():
        assert t.D(torch.cat([a, b], 1)).shape == (1, 1, side, side)
    assert t.D.receptive_field == {0: 1, 1: 16, 2: 34, 3: 70, 4: 142, 5: 286}[n_layers]


def test_generator_trains_in_training_mode_and_samples_in_test_mode(data_dir):
    from p2p_demo.nets import SampleNorm, SeededDropout

    def mode(g):
        return ({m.stats for m in g.modules() if isinstance(m, SampleNorm)},
                {m.enabled and m.masks is None for m in g.modules() if isinstance(m, SeededDropout)}, g.training)

    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8)))
    assert mode(t.G) == ({"batch"}, {True}, True)
    held_out = PairedData.load(data_dir, "test")
    g1 = plots.sample_grid(t.G, held_out, 2, 3)
    assert mode(t.G) == ({"batch"}, {True}, True)  # back to training mode after sampling
    t.step(*fixed_batch(data_dir, 2))
    t.G.load_state_dict(make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8))).G.state_dict())
    assert np.array_equal(plots.sample_grid(t.G, held_out, 2, 3), g1)  # fixed dropout seeds: comparable grids
    assert g1.shape == (4 + 2 * (SIZE + 4), 4 + 3 * (SIZE + 4), 3)


# --------------------------------------------------------------------------------------------
# checkpoints


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    """8 steps in one go == 4 steps, stop, resume for 4 more (epoch boundary and lr decay inside)."""
    full = tiny(data_dir, tmp_path, name="full", max_steps=8)
    fit_mod.fit(full)
    fit_mod.fit(tiny(data_dir, tmp_path, name="split", max_steps=4))
    first = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert first["step"] == 4
    cfg = config_from_args(["--resume", "--out-dir", str(tmp_path), "--name", "split", "--max-steps", "8",
                            "--no-progress"])
    assert cfg.generator.ngf == 8 and cfg.max_steps == 8  # the experiment from the checkpoint, the budget from the CLI
    fit_mod.fit(cfg)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8
    for net in ("G", "D"):
        for k, v in a[net].items():
            torch.testing.assert_close(b[net][k], v, rtol=0, atol=1e-6, msg=f"{net}.{k}")
    assert a["sched_G"]["last_epoch"] == b["sched_G"]["last_epoch"] == 8
    for k in ("D_real", "D_fake", "G_GAN", "G_L1"):
        assert [h[k] for h in a["history"]] == pytest.approx([h[k] for h in b["history"]], abs=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="ngf"):
        config_from_args(["--resume", "--out-dir", str(tmp_path), "--name", "split", "--ngf", "16"])


def test_rng_states_round_trip_through_weights_only(tmp_path):
    g = torch.Generator().manual_seed(3)
    state = rng_state(g)
    save_checkpoint({"rng": [state]}, tmp_path / "r.pt")
    expected = (np.random.rand(), torch.rand(2), torch.rand(2, generator=g), __import__("random").random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"][0], g)
    got = (np.random.rand(), torch.rand(2), torch.rand(2, generator=g), __import__("random").random())
    assert got[0] == expected[0] and got[3] == expected[3]
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(4)}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fit_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="previous checkpoint there is untouched") as e:
        save_checkpoint({"step": 2, "w": torch.zeros(4)}, path)
    assert e.value.errno == errno.ENOSPC and "No space left" in str(e.value)
    monkeypatch.undo()
    old = load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["w"], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_sigkill_while_saving_leaves_the_old_checkpoint_loadable(tmp_path):
    path, writing = tmp_path / "last.pt", tmp_path / "writing"
    save_checkpoint({"step": 1, "w": torch.ones(4)}, path)
    script = f"""
import sys, time, torch
from train import resume as checkpoint
def slow_save(obj, f, *args, **kwargs):
    f.write(b"x" * 4096)  # half-written new checkpoint
    f.flush()
    open({str(writing)!r}, "w").close()
    time.sleep(120)
torch.save = slow_save
checkpoint.save_checkpoint({{"step": 2, "w": torch.zeros(4)}}, {str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 240  # importing torch on a busy 2-core machine can take a minute
        while not writing.exists():
            assert proc.poll() is None, "the writer exited early"
            assert time.time() < deadline, "the writer never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".last.pt.tmp-") for p in tmp_path.iterdir())  # killed mid-write
    old = load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["w"], torch.ones(4))
    save_checkpoint({"step": 3}, path)  # the next save clears the stale temp file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "writing"]


def test_checkpoint_holds_everything_to_resume(trained):
    ckpt = load_checkpoint(trained / "checkpoints" / "last.pt")  # weights_only=True
    for key in ("G", "D", "opt_G", "opt_D", "sched_G", "sched_D", "scaler_G", "scaler_D", "step", "epoch",
                "config", "generator_config", "line_style", "rng", "history"):
        assert key in ckpt, key
    assert ckpt["step"] == 6 and ckpt["epoch"] == 1.0
    assert set(ckpt["rng"][0]) == {"python", "numpy", "torch", "cuda", "jitter"}
    assert TrainConfig.from_dict(ckpt["config"]).generator.ngf == 8


# --------------------------------------------------------------------------------------------
# the run folder, DDP


def test_run_folder_layout(trained):
    assert sorted(p.name for p in (trained / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert [p.name for p in (trained / "checkpoints").iterdir()] == ["last.pt"]
    from PIL import Image

    grid = np.asarray(Image.open(trained / "samples" / "step_000006.png"))
    assert grid.shape == (4 + 4 * (SIZE + 4), 4 + 3 * (SIZE + 4), 3)  # 4 held-out rows of input|output|target
    assert Image.open(trained / "losses.png").size == (880, 520)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["images_per_s"] > 0 and metrics["wall_time_s"] > 0
    assert [h["step"] for h in metrics["history"]] == [2, 4, 6]
    assert set(metrics["history"][0]) >= {"D_real", "D_fake", "G_GAN", "G_L1", "lr", "images_per_s"}
    assert metrics["eval"]["n"] == 4 and 0 <= metrics["eval"]["ssim"] <= 1


def test_two_process_torchrun_gloo_writes_one_checkpoint(data_dir, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
           "fit", "--data", str(data_dir), "--out-dir", str(tmp_path), "--name", "ddp", "--ngf", "8", "--ndf", "8",
           "--batch-size", "2", "--max-steps", "4", "--checkpoint-every", "2", "--sample-every", "0",
           "--log-every", "2", "--no-final-eval", "--no-progress", "--workers", "1", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == ["last.pt"]
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # per-rank dropout streams
    # 12 pairs over 2 ranks x batch 2 = 3 steps per epoch; only rank 0 logs
    assert ckpt["epoch"] == pytest.approx(4 / 3)
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]


# --------------------------------------------------------------------------------------------
# evaluate, export


def test_evaluate_gives_identical_numbers_twice(trained, data_dir, tmp_path):
    from train.evaluate import evaluate

    ckpt = str(trained / "checkpoints" / "last.pt")
    m1 = evaluate(ckpt, str(data_dir), seed=0, out=str(tmp_path / "e1"), batch_size=4)
    m2 = evaluate(ckpt, str(data_dir), seed=0, out=str(tmp_path / "e2"), batch_size=1)  # batch-independent too
    keys = ("l1", "psnr", "ssim", "edge_f1", "edge_precision", "edge_recall", "edge_f1_target")
    assert {k: m1[k] for k in keys} == {k: m2[k] for k in keys}
    assert m1["n"] == 4 and 0 < m1["l1"] < 2 and 0 <= m1["ssim"] <= 1 and 0 <= m1["edge_f1"] <= 1
    assert m1["edge_f1_target"] > 0.3  # the ground truth keeps the drawing's edges
    m3 = evaluate(ckpt, str(data_dir), seed=1, out=str(tmp_path / "e3"))
    assert m3["l1"] != m1["l1"]  # dropout is on: another seed, other samples
    saved = json.loads((tmp_path / "e1" / "metrics_test.json").read_text())
    assert saved["l1"] == m1["l1"] and (tmp_path / "e1" / "grid_test.png").is_file()


def test_image_scores_and_edge_scores():
    from train.evaluate import edge_scores, image_scores

    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    same = image_scores(img, img)
    assert same == {"l1": 0.0, "psnr": 100.0, "ssim": pytest.approx(1.0)}
    assert image_scores(np.zeros_like(img), np.full_like(img, 255))["l1"] == pytest.approx(2.0)
    line = np.zeros((32, 32), bool)
    line[10, 5:25] = True
    assert edge_scores(line, line) == (1.0, 1.0, 1.0)
    assert edge_scores(np.roll(line, 2, axis=0), line)[2] == 1.0  # within the 2 px tolerance
    assert edge_scores(np.roll(line, 3, axis=0), line)[2] == 0.0


def test_export_round_trips_through_hub(trained, tmp_path):
    from p2p_demo.hub import load_generator
    from p2p_demo.nets import GeneratorConfig, build_generator
    from train.export import export

    folder = export(trained / "checkpoints" / "last.pt", tmp_path / "tiny-model", description="test model")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "training"]
    config = json.loads((folder / "config.json").read_text())
    assert config["input"] == "edges" and config["line_style"]["size"] == SIZE
    assert config["license"] == "BSD-3-Clause" and config["metrics"]["steps"] == 6 and "test_ssim" in config["metrics"]
    card = (folder / "README.md").read_text()
    assert "skimage.data" in card and "BSD-3-Clause" in card
    ckpt = load_checkpoint(trained / "checkpoints" / "last.pt")
    G, info = load_generator(str(folder))
    assert G.config == GeneratorConfig.from_dict(ckpt["generator_config"])
    for k, v in ckpt["G"].items():
        expected = v.half().float() if v.is_floating_point() else v
        torch.testing.assert_close(G.state_dict()[k].float() if v.is_floating_point() else G.state_dict()[k], expected)
    ref = build_generator(G.config)
    ref.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in ckpt["G"].items()})
    x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    for g in (G, ref):
        g.set_inference_mode(per_image_stats=True, dropout=False)
    with torch.no_grad():
        torch.testing.assert_close(G.float()(x), ref(x), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# command line, bench


def test_budget_schedule_lays_the_same_shape_over_the_wall_clock():
    t = make_trainer(TrainConfig.from_dict(dict(ngf=8, ndf=8, n_epochs=1, n_epochs_decay=3, lr_schedule="budget",
                                 max_seconds=100)), spe=5)
    factors = []
    for used in (0.0, 0.2, 0.25, 0.625, 1.0, 1.3):
        t.budget_used = used
        factors.append(t.lr_factor(7))  # the step does not matter, only the share of the budget
    assert factors == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="--max-seconds"):
        TrainConfig(lr_schedule="budget")
    with pytest.raises(ValueError, match="--lr-schedule"):
        TrainConfig(lr_schedule="cosine", max_seconds=10)


def test_a_budget_run_reaches_lr_zero_when_its_time_is_up(data_dir, tmp_path, monkeypatch):
    # A clock that moves 50 ms each time it is read: the run's length no longer depends on how
    # busy the machine is (fit reads it a few times a step), while fit's own logic is untouched.
    ticks = iter(range(10**9))
    monkeypatch.setattr(fit_mod.time, "perf_counter", lambda: 0.05 * next(ticks))
    m = fit_mod.fit(tiny(data_dir, tmp_path, max_seconds=3.0, lr_schedule="budget", n_epochs=0.0,
                         n_epochs_decay=10_000.0, log_every=1))
    lrs = [r["lr"] for r in m["history"]]
    assert 5 < m["steps"] < 100  # the clock stopped it, not the 10,000 epochs
    assert lrs[0] > 0.8 * 2e-4 and lrs[-1] < 0.1 * 2e-4, (lrs[0], lrs[-1])
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # decays with the clock, never back up

    # Stopped half-way and resumed, it carries on from the time already spent, not from the full lr.
    fit_mod.fit(tiny(data_dir, tmp_path, name="split", max_seconds=3.0, lr_schedule="budget", n_epochs=0.0,
                     n_epochs_decay=10_000.0, log_every=1, max_steps=m["steps"] // 2))
    resumed = fit_mod.fit(config_from_args(["--resume", "--out-dir", str(tmp_path), "--name", "split",
                                            "--max-steps", "0", "--no-progress"]))
    lrs = [r["lr"] for r in resumed["history"]]
    assert resumed["steps"] > m["steps"] // 2 + 2 and lrs[-1] < 0.1 * 2e-4
    assert all(b <= a for a, b in zip(lrs, lrs[1:])), lrs


def test_dropout_rate_reaches_the_generator_and_its_checkpoint(data_dir, tmp_path):
    fit_mod.fit(tiny(data_dir, tmp_path, max_steps=1, dropout_p=0.2))
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["generator_config"]["dropout_p"] == 0.2
    G = build_generator(GeneratorConfig.from_dict(ckpt["generator_config"]))
    rates = {m.p for m in G.modules() if isinstance(m, SeededDropout)}
    assert rates == {0.2}
    with pytest.raises(ValueError, match="--dropout-p"):
        TrainConfig.from_dict(dict(dropout_p=1.0))


def test_command_line_flags_map_onto_the_config(data_dir):
    cfg = config_from_args(["--data", str(data_dir), "--loss", "l1+gan", "--gan-mode", "hinge", "--lambda-l1", "10",
                            "--n-layers", "1", "--ngf", "16", "--num-downs", "5", "--norm", "instance", "--no-dropout",
                            "--ndf", "32", "--batch-size", "4", "--amp", "bf16", "--channels-last", "--compile",
                            "--seed", "7", "--device", "cpu", "--workers", "2", "--max-seconds", "60",
                            "--no-jitter", "--no-flip"])
    g = cfg.generator
    assert (cfg.loss, cfg.gan_mode, cfg.lambda_l1, cfg.n_layers, g.ngf, g.num_downs, g.norm, g.dropout) == \
        ("l1+gan", "hinge", 10.0, 1, 16, 5, "instance", False)
    assert (cfg.ndf, cfg.batch_size, cfg.amp, cfg.channels_last, cfg.compile, cfg.seed, cfg.workers) == \
        (32, 4, "bf16", True, True, 7, 2)
    assert (cfg.max_seconds, cfg.jitter, cfg.flip, cfg.uses_gan, cfg.conditional) == (60.0, False, False, True, False)
    with pytest.raises(SystemExit):
        config_from_args(["--data", "x", "--gan-mode", "wgan"])
    from train.__main__ import main

    assert main([]) == 2 and main(["nope"]) == 2


def test_a_patchgan_too_deep_for_the_images_is_refused_up_front(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"--n-layers 5 needs images of at least 96 px; these are 64 px "
                                                  r"\(use --n-layers 4 or less"):
        fit_mod.fit(tiny(data_dir, tmp_path, n_layers=5, norm="instance"))
    assert not (tmp_path / "run").exists()
    check_patchgan_fits(4, 64)  # 64 / 16 = 4: fits
    check_patchgan_fits(0, 16)  # PixelGAN: 1x1 convs, any size


def test_max_seconds_stops_a_run(data_dir, tmp_path):
    m = fit_mod.fit(tiny(data_dir, tmp_path, max_seconds=1e-6))
    assert m["steps"] == 1  # stops after the step that went over budget, with a checkpoint
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 1
    with pytest.raises(FileExistsError, match="--resume"):  # a fresh run never overwrites another's checkpoint
        fit_mod.fit(tiny(data_dir, tmp_path, max_steps=1))


def test_bench_measures_both_recipes():
    from train.throughput import bench

    res = bench("cpu", size=32, steps=1, warmup=0)
    assert set(res) == {"fast", "reference"}
    assert all(r["images_per_s"] > 0 for r in res.values())
    assert "batch 1, fp32" in res["reference"]["recipe"] and "eager" in res["reference"]["recipe"]


def test_a_changed_recipe_is_a_new_run_not_a_stale_one(monkeypatch):
    from train import compare

    assert dict(compare.SUITES["recipe"])["project recipe"]["lr_schedule"] == "budget"  # the real suite, unpatched
    timed = {"max_seconds": 900}
    before = compare.run_name("recipe", "project recipe", timed)
    assert before != compare.run_name("recipe", "reference recipe", timed)
    assert before != compare.run_name("recipe", "project recipe", {"max_seconds": 1800})
    monkeypatch.setitem(compare.SUITES, "recipe", [("reference recipe", compare.REFERENCE),
                                                   ("project recipe", {**compare.BUDGETED, "lr": 5e-4})])
    assert compare.run_name("recipe", "project recipe", timed) != before


def test_compare_trains_each_variant_once_and_tables_them(tmp_path):
    """`python -m train compare patch`: four PatchGAN sizes at one budget, a table and one grid;
    run again, nothing is retrained; the baseline is one run shared by the loss, patch and ngf suites.
    128 px: the 286x286 PatchGAN's last InstanceNorm needs more than 1x1 (at 64 px it has 1x1)."""
    from PIL import Image

    from train.compare import SUITES, run_name

    size = 128
    data_dir = make_dataset(tmp_path / "data128", size=size, n_train=8, n_test=3)

    schedule = {"n_epochs": 0.25, "n_epochs_decay": 0.25}
    assert run_name("loss", "L1+cGAN", schedule) == run_name("patch", "70x70", schedule) == run_name("ngf", "ngf 16", schedule)
    timed = {"max_seconds": 900}
    names = {run_name("recipe", label, timed) for label, _ in SUITES["recipe"]}
    assert len(names) == 2 and all(n.startswith("recipe-") and n.endswith("-900s") for n in names)
    argv = [sys.executable, "-m", "train", "compare", "patch", "--data", str(data_dir), "--out-dir", str(tmp_path),
            "--epochs", "0.5", "--rows", "3"]
    subprocess.run(argv, check=True, cwd=REPO, capture_output=True, timeout=600)
    results = json.loads((tmp_path / "patch" / "results.json").read_text())
    assert [r["variant"] for r in results] == [label for label, _ in SUITES["patch"]]
    for r in results:
        assert r["steps"] == 1 and np.isfinite([r["l1"], r["psnr"], r["ssim"]]).all()
        cfg = TrainConfig.from_dict(json.loads((Path(r["run"]) / "metrics.json").read_text())["config"])
        g = cfg.generator
        assert (g.ngf, g.norm, g.in_channels, cfg.batch_size) == (16, "instance", 1, 4)  # COMPACT's architecture
    assert [json.loads((Path(r["run"]) / "metrics.json").read_text())["config"]["n_layers"] for r in results] == [0, 1, 3, 5]
    table = (tmp_path / "patch" / "results.md").read_text()
    assert table.count("\n") == 2 + len(results) and "1x1 PixelGAN" in table
    width, height = Image.open(tmp_path / "patch" / "grid.png").size
    assert width == 6 * (size + 4) + 4 and height > 3 * (size + 4)  # input | 4 variants | target, 3 rows + labels
    stamps = [(Path(r["run"]) / "metrics.json").stat().st_mtime for r in results]
    subprocess.run(argv, check=True, cwd=REPO, capture_output=True, timeout=600)
    assert [(Path(r["run"]) / "metrics.json").stat().st_mtime for r in results] == stamps


def test_loss_plot_has_one_panel_per_loss_and_g_ms_only_when_used(tmp_path):
    from PIL import Image

    history = [{"step": s, "D_real": 0.7, "D_fake": 0.6, "G_GAN": 1.0 + s / 10, "G_L1": 1.0 / s, "G_MS": 0.0}
               for s in (2, 4, 6)]
    plots.plot_losses(history, tmp_path / "a.png")
    plots.plot_losses([{**h, "G_MS": 0.1} for h in history], tmp_path / "b.png")
    assert Image.open(tmp_path / "a.png").size == (880, 520)  # 4 panels, two a row
    assert Image.open(tmp_path / "b.png").size == (880, 780)  # + the mode-seeking term
    img = np.asarray(Image.open(tmp_path / "a.png").convert("L"))
    assert (img < 128).mean() > 0.005  # curves, ticks and titles were drawn on the white page


def test_imports_flow_one_way_and_train_has_no_circle():
    """app -> p2p_demo <- train: p2p_demo never imports train, and no train module imports itself
    back through another (lazy imports inside functions count too)."""
    import ast

    def imports(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return found

    assert not any(m.split(".")[0] == "train" for f in (REPO / "p2p_demo").rglob("*.py") for m in imports(f))
    graph = {".".join(f.relative_to(REPO).with_suffix("").parts): imports(f) for f in (REPO / "train").rglob("*.py")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join(path + (m,))
        if m not in done:
            for d in graph[m]:
                visit(d, path + (m,))
            done.add(m)

    for m in graph:
        visit(m, ())
    assert "train.resume" in graph["train.fit"] and "train.fit" not in graph["train.evaluate"]


def test_compare_continue_suite_continues_one_model_with_each_lever(tmp_path):
    """`python -m train compare continue --init-from FOLDER`: every variant starts from the same
    model (its lineage carried on), trains the same budget at once, and is named by what it
    continues, so continuing the model again after another stint trains anew."""
    from train.compare import SUITES, run_name

    data_dir = make_dataset(tmp_path / "data", n_train=6, n_test=2)
    base = fit_mod.fit(tiny(data_dir, tmp_path, name="base", max_steps=2, dropout=True, ema_decay=0.9))
    model = tmp_path / "model"
    subprocess.run([sys.executable, "-m", "train", "export", "--checkpoint", str(tmp_path / "base" / "checkpoints" / "last.pt"),
                    "--out", str(model), "--name", "Tiny"], check=True, cwd=REPO, capture_output=True, timeout=300)
    argv = [sys.executable, "-m", "train", "compare", "continue", "--data", str(data_dir), "--out-dir", str(tmp_path / "c"),
            "--seconds", "3", "--threads", "1", "--rows", "2", "--init-from", str(model)]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((tmp_path / "c" / "continue" / "results.json").read_text())
    assert [x["variant"] for x in results] == [label for label, _ in SUITES["continue"]]
    for x, (_, options) in zip(results, SUITES["continue"]):
        m = json.loads((Path(x["run"]) / "metrics.json").read_text())
        assert m["config"]["init_from"] == str(model) and m["config"]["max_seconds"] == 3
        assert m["config"]["lambda_l1"] == options.get("lambda_l1", 100.0)
        assert m["config"]["freehand"] == options.get("freehand", 0.0)
        assert m["config"]["generator"]["ngf"] == 8  # the architecture comes from the model continued
        assert load_checkpoint(Path(x["run"]) / "checkpoints" / "last.pt")["lineage"]["stints"][0]["steps"] == base["steps"]
        assert Path(x["run"]).name.isascii()
    assert (tmp_path / "c" / "continue" / "grid.png").is_file()
    later = {"max_seconds": 3, "init_from": str(model), "init_steps": 99}
    now = {**later, "init_steps": base["steps"]}
    assert run_name("continue", "continued", later) != run_name("continue", "continued", now)
    r = subprocess.run(argv[:-2], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--init-from" in r.stderr


def test_compare_curriculum_suite_gives_the_low_res_pairs_to_its_curriculum_variant_only(tmp_path):
    from train.compare import SUITES

    # the suite's U-Net has 7 levels (a 1x1 bottleneck at 128²), so its data are 256² and 128²
    data_dir = make_dataset(tmp_path / "data", size=256, n_train=4, n_test=2)
    low = make_dataset(tmp_path / "low", size=128, n_train=4, n_test=2)
    argv = [sys.executable, "-m", "train", "compare", "curriculum", "--data", str(data_dir), "--out-dir",
            str(tmp_path / "c"), "--seconds", "2", "--threads", "1", "--rows", "2", "--low-res-data", str(low)]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((tmp_path / "c" / "curriculum" / "results.json").read_text())
    assert [x["variant"] for x in results] == [label for label, _ in SUITES["curriculum"]]
    plain, curriculum = (json.loads((Path(x["run"]) / "metrics.json").read_text()) for x in results)
    assert plain["config"]["low_res_data"] == "" and set(plain["steps_this_session_at"]) == {"256"}
    assert curriculum["config"]["low_res_data"] == str(low) and curriculum["config"]["low_res_share"] == 0.75
    assert curriculum["steps_this_session_at"]["128"] > 0
    r = subprocess.run(argv[:-2], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--low-res-data" in r.stderr


def test_bf16_on_a_cpu_is_judged_by_its_flags():
    from train.trainer import cpu_has_native_bf16

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert cpu_has_native_bf16(avx2) is False
    assert cpu_has_native_bf16(avx2.replace("avx2", "avx2 avx512f avx512_bf16")) is True
    assert cpu_has_native_bf16(avx2.replace("fma", "amx_bf16 amx_tile")) is True
    assert cpu_has_native_bf16("processor\t: 0\n") is None  # no flags line (not x86 Linux): cannot tell


def test_options_say_their_help_once_and_refuse_senseless_values_by_flag():
    assert all(f.metadata.get("help") for f in option_fields())  # the one place help is written
    for kw, flag in ((dict(lambda_l1=-1.0), "--lambda-l1"), (dict(lambda_ms=-0.1), "--lambda-ms"),
                     (dict(r1_gamma=-1.0), "--r1-gamma"), (dict(dropout_p=1.0), "--dropout-p"),
                     (dict(batch_size=0), "--batch-size"), (dict(lr=0.0), "--lr"), (dict(beta2=1.0), "--beta2"),
                     (dict(n_layers=6), "--n-layers"), (dict(log_every=0), "--log-every")):
        with pytest.raises(ConfigError, match=f"^{flag} must be"):
            TrainConfig.from_dict(kw)
    with pytest.raises(SystemExit):
        config_from_args(["--data", "x", "--in-channels", "2"])


def test_the_bundled_models_training_state_still_sets_init_from_defaults():
    from train.fit_args import architecture_of

    arch = architecture_of(str(Path(__file__).resolve().parent.parent / "weights" / "openmoji"))
    cfg = TrainConfig.from_dict({"data": "x", "init_from": "weights/openmoji", **arch})
    g = cfg.generator
    assert (g.ngf, g.norm, g.dropout) == (arch["ngf"], arch["norm"], arch["dropout"])
