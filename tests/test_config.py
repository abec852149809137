"""train/config.py: the generator's options live once, nested in TrainConfig; configs saved flat
before that (checkpoints, run folders' config.json) still load, resume, continue and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_demo.nets import GeneratorConfig
from train import fit as fit_mod
from train.config import ConfigError, GeneratorOptions, TrainConfig, flat_options
from train.fit import check_resumable
from train.fit_args import architecture_of, config_from_args
from train.lineage import RECIPE_KEYS, checkpoint_lineage, read_lineage, stint_record
from train.resume import load_checkpoint, save_checkpoint

from conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# ckpt["config"] of a fluent3d run (runs/f3d-2) written before the nesting, and its "generator_config"
OLD_CONFIG = {
    "data": "data/fluent3d-256", "name": "f3d-2", "out_dir": "runs", "loss": "l1+cgan", "gan_mode": "vanilla",
    "lambda_l1": 100.0, "r1_gamma": 0.0, "lambda_ms": 1.0, "ngf": 16, "num_downs": 8, "norm": "instance",
    "dropout": True, "dropout_p": 0.5, "in_channels": 1, "upsample": "transpose", "ndf": 32, "n_layers": 3,
    "batch_size": 4, "lr": 0.0002, "lr_d": 0.0, "beta1": 0.5, "beta2": 0.999, "n_epochs": 50.0,
    "n_epochs_decay": 50.0, "lr_schedule": "budget", "max_steps": 0, "max_seconds": 1800.0, "init_std": 0.02,
    "ema_decay": 0.999, "init_from": "runs/f3d/checkpoints/last.pt", "ema_restart": False, "jitter": True,
    "load_size": 0, "flip": True, "low_res_data": "", "low_res_share": 0.0, "freehand": 0.0, "amp": "none",
    "channels_last": True, "compile": False, "device": "auto", "workers": 1, "seed": 0, "checkpoint_every": 100,
    "sample_every": 0, "n_samples": 4, "log_every": 10, "final_eval": True, "eval_max": 0, "progress": False,
    "resume": False,
}
OLD_GENERATOR_CONFIG = {"in_channels": 1, "out_channels": 3, "ngf": 16, "num_downs": 8, "norm": "instance",
                        "dropout": True, "dropout_p": 0.5, "layout": "reference", "upsample": "transpose"}


# options newer than OLD_CONFIG, at their defaults
ADDED_SINCE = {"ms_pool": 1, "ms_object": False, "lambda_flat": 0.0, "channel_dropout": False, "dropout_levels": 0}


def test_an_old_flat_config_loads_as_it_was():
    cfg = TrainConfig.from_dict(OLD_CONFIG)
    assert cfg.generator == GeneratorOptions(ngf=16, num_downs=8, norm="instance", in_channels=1)
    assert (cfg.ndf, cfg.lambda_ms, cfg.init_from) == (32, 1.0, "runs/f3d/checkpoints/last.pt")
    # nothing lost, nothing changed; options added since take their defaults
    assert flat_options(cfg.to_dict()) == {**OLD_CONFIG, **ADDED_SINCE}
    # the same generator as the checkpoint's, rebuilt from the options and its data (256 px RGB targets)
    assert cfg.generator.resolve(size=256, channels=3) == GeneratorConfig.from_dict(OLD_GENERATOR_CONFIG)
    # --resume compares either layout with either, by flag
    check_resumable(cfg, OLD_CONFIG)
    check_resumable(TrainConfig.from_dict(OLD_CONFIG), cfg.to_dict())
    with pytest.raises(ConfigError, match="ngf: checkpoint 16 vs now 24"):
        check_resumable(TrainConfig.from_dict({**OLD_CONFIG, "ngf": 24}), OLD_CONFIG)
    # a stint records the same flat recipe from either layout
    # (options added since are not in the old dict and are in the loaded config at their defaults)
    record = stint_record(OLD_CONFIG, steps=1, images_seen=4, wall_s=1.0, threads=1, world=1, device="cpu")
    loaded = stint_record(cfg.to_dict(), steps=1, images_seen=4, wall_s=1.0, threads=1, world=1, device="cpu")
    assert {**record["recipe"], **ADDED_SINCE} == loaded["recipe"]
    assert list(loaded["recipe"]) == list(RECIPE_KEYS) and record["recipe"]["ngf"] == 16


def test_the_nested_layout_round_trips():
    cfg = TrainConfig.from_dict(dict(ngf=8, num_downs=6, norm="instance", upsample="resize", in_channels=1,
                                     dropout_p=0.25, lambda_ms=1.0, ndf=8))
    saved = json.loads(json.dumps(cfg.to_dict()))  # as config.json / a checkpoint hold it
    assert saved["generator"] == {"ngf": 8, "num_downs": 6, "norm": "instance", "dropout": True, "dropout_p": 0.25,
                                  "in_channels": 1, "upsample": "resize", "channel_dropout": False, "dropout_levels": 0}
    assert not set(saved["generator"]) & set(saved) - {"generator"}  # each option once
    assert TrainConfig.from_dict(saved) == cfg
    assert TrainConfig.from_dict({**saved, "ngf": 16}).generator.ngf == 16  # an option given over a saved config
    with pytest.raises(ConfigError, match=r"unknown generator options: \['nfg'\]"):
        TrainConfig.from_dict({**saved, "generator": {**saved["generator"], "nfg": 8}})
    with pytest.raises(ConfigError, match="^--ngf must be"):
        TrainConfig.from_dict({**saved, "generator": {**saved["generator"], "ngf": 0}})


def test_the_data_decides_what_the_options_leave_open():
    auto = GeneratorOptions()
    assert auto.resolve(size=64, channels=3) == GeneratorConfig(in_channels=3, out_channels=3, num_downs=6)
    assert GeneratorOptions(in_channels=1, num_downs=5).resolve(size=64, channels=3) == \
        GeneratorConfig(in_channels=1, out_channels=3, num_downs=5)
    with pytest.raises(ConfigError, match="not a multiple of 2\\*\\*num_downs = 64"):
        GeneratorOptions(num_downs=6).resolve(size=96, channels=3)
    assert GeneratorOptions(dropout_levels=4).resolve(size=64, channels=3).dropout_levels == 4
    with pytest.raises(ConfigError, match="--dropout-levels must be at most 4 for a 6-level U-Net, got 5"):
        GeneratorOptions(dropout_levels=5).resolve(size=64, channels=3)
    assert GeneratorOptions.of(OLD_GENERATOR_CONFIG) == TrainConfig.from_dict(OLD_CONFIG).generator


def test_a_run_saved_flat_resumes_continues_and_exports(data_dir, tmp_path):
    """A run folder whose checkpoint holds the flat config (as every one did before the nesting) and no
    stint record (as the oldest did): --resume carries it on, --init-from and export read it."""
    from train.export import export

    fit_mod.fit(tiny(data_dir, tmp_path, name="old", max_steps=2, norm="instance"))
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    ckpt["config"] = flat_options(ckpt["config"])
    del ckpt["stint"]
    save_checkpoint(ckpt, path)
    (tmp_path / "old" / "config.json").write_text(json.dumps(ckpt["config"]))

    assert checkpoint_lineage(load_checkpoint(path)).stints[-1]["recipe"]["ngf"] == 8
    assert architecture_of(str(path))["norm"] == "instance"
    with pytest.raises(ConfigError, match="ngf: checkpoint 8 vs now 16"):
        config_from_args(["--resume", "--out-dir", str(tmp_path), "--name", "old", "--ngf", "16"])
    cfg = config_from_args(["--resume", "--out-dir", str(tmp_path), "--name", "old", "--max-steps", "3"])
    assert cfg.generator == GeneratorOptions(ngf=8, norm="instance") and cfg.max_steps == 3
    m = fit_mod.fit(cfg)
    assert m["steps"] == 3 and m["config"]["generator"]["norm"] == "instance"
    assert json.loads((tmp_path / "old" / "config.json").read_text())["generator"]["ngf"] == 8  # rewritten nested

    folder = export(path, tmp_path / "model")
    recipes = [s["recipe"] for s in json.loads((folder / "training" / "state.json").read_text())["stints"]]
    assert [r["ngf"] for r in recipes] == [8] and set(recipes[0]) <= set(RECIPE_KEYS)
    G = GeneratorConfig.from_dict(json.loads((folder / "config.json").read_text())["generator"])
    assert (G.ngf, G.norm, G.num_downs) == (8, "instance", 6)


@pytest.mark.parametrize("model", ["openmoji", "fluent3d"])
def test_the_bundled_models_recipes_and_architecture_still_read(model):
    """Their training/state.json recipes were recorded flat before the nesting; new stints record the
    same flat keys. Their architecture still becomes --init-from's defaults."""
    folder = Path(__file__).resolve().parent.parent / "weights" / model
    lineage = read_lineage(folder)
    assert lineage.stints and all(set(s["recipe"]) <= set(RECIPE_KEYS) for s in lineage.stints)
    arch = architecture_of(str(folder))
    saved = GeneratorConfig.from_dict(json.loads((folder / "config.json").read_text())["generator"])
    cfg = TrainConfig.from_dict({"data": "x", "init_from": str(folder), **arch})
    assert cfg.generator.resolve(size=256, channels=saved.out_channels) == saved
    assert (cfg.ndf, cfg.n_layers) == (lineage.discriminator["ndf"], lineage.discriminator["n_layers"])


def test_generator_options_are_the_generators_and_bad_ones_are_named():
    from dataclasses import fields

    assert {f.name for f in fields(GeneratorOptions)} <= {f.name for f in fields(GeneratorConfig)}
    assert TrainConfig(generator={"ngf": 16}).generator == GeneratorOptions(ngf=16)
    with pytest.raises(ConfigError, match=r"unknown generator options: \['ndf'\]"):
        TrainConfig(generator={"ndf": 8})
    with pytest.raises(ConfigError, match=r"unknown generator options: \['ndf'\]"):
        TrainConfig.from_dict({"generator": {"ndf": 8}})
    with pytest.raises(ConfigError, match="generator must be GeneratorOptions"):
        TrainConfig(generator=16)
