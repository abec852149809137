"""The ``python -m train fit`` command line: TrainConfig's fields as flags, an --init-from model's
architecture as the defaults, --resume's saved config."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from typing import Any, Sequence

from train.checkpoint import CheckpointError, load_checkpoint
from train.config import AMP_MODES, GAN_MODES, LOSSES, LR_SCHEDULES, ConfigError, TrainConfig
from train.dataset import NotPrepared
from train.fit import check_resumable, fit, run_dir
from train.lineage import load_init_source

HELP = {
    "data": "prepared dataset folder (manifest.json + train.npz [+ test.npz])",
    "loss": "l1 | gan (D sees the output) | cgan (D sees input+output) | l1+gan | l1+cgan",
    "gan_mode": "vanilla (BCE with logits) | lsgan | hinge",
    "n_layers": "PatchGAN depth 0..5 (0 = 1x1 PixelGAN, 3 = 70x70)",
    "num_downs": "U-Net depth; 0 = log2(size) (8 = unet_256 at 256 px)",
    "in_channels": "generator input channels; 0 = as many as the targets",
    "n_epochs": "epochs at constant lr", "n_epochs_decay": "epochs of linear lr decay to 0",
    "lr_schedule": "epochs (the two above) | budget (their ratio stretched over --max-seconds)",
    "dropout_p": "generator dropout rate (the reference: 0.5)",
    "max_steps": "stop after this many steps (0 = no limit)",
    "max_seconds": "stop once the run's wall time (all sessions) passes this (0 = no limit)",
    "amp": "autocast precision: none | bf16 | fp16", "device": "auto | cpu | cuda | cuda:N",
    "workers": "CPU threads per process (0 = torch default)",
    "load_size": "jitter resize side (0 = S * 286 / 256)",
    "resume": "continue from <out-dir>/<name>/checkpoints/last.pt",
    "init_from": "start from a model (folder, registry id, Hub repo or checkpoint): its G, EMA and D; "
                 "its architecture options become the defaults; a larger --ngf widens its generator (train.widen)",
    "ema_restart": "with --init-from on another data set (a new style): start the EMA anew from its generator, "
                   "with the warm-up, instead of continuing its average of a model of other data",
    "ema_decay": "keep an EMA of G's weights with this decay (e.g. 0.999); it is what is shown and exported",
    "r1_gamma": "R1 penalty on D: gamma / 2 * |grad D(real)|^2 (Mescheder et al. 2018), lazily every 16th D step",
    "lambda_ms": "weight of the mode-seeking term between two dropout samples (Mao et al. 2019)",
    "lr_d": "discriminator lr (0 = --lr)",
    "freehand": "chance a training drawing is redrawn with hand-drawing faults (wobble, gaps, overshoot, "
                "doubled strokes, pen width; train.freehand) before the canonical line-style step",
    "low_res_data": "resolution curriculum: the same training pairs prepared at a smaller size (train prepare --size), "
                    "trained on first",
    "low_res_share": "share of the budget (--max-seconds, else the steps) spent on --low-res-data before --data",
    "upsample": "decoder x2 steps: transpose (the reference's 4x4 stride-2) | resize (nearest x2 + 3x3 conv: no checkerboard)",
}

CHOICES = {"loss": LOSSES, "gan_mode": GAN_MODES, "amp": AMP_MODES, "norm": ("batch", "instance"),
           "lr_schedule": LR_SCHEDULES, "upsample": ("transpose", "resize")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train fit", description="Train a pix2pix generator.",
                                argument_default=argparse.SUPPRESS)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        help_ = f"{HELP.get(f.name, '')} (default: {f.default})".strip()
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        else:
            p.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=help_)
    return p


def architecture_of(spec: str) -> dict[str, Any]:
    """The architecture options of an --init-from source, so continuing a model needs no copy of them."""
    src = load_init_source(spec)
    g = src.generator_config
    arch = {"ngf": g["ngf"], "num_downs": g["num_downs"], "norm": g["norm"], "dropout": g["dropout"],
            "dropout_p": g.get("dropout_p", 0.5), "in_channels": g["in_channels"], "upsample": g.get("upsample", "transpose")}
    if src.lineage.discriminator:
        arch.update(ndf=src.lineage.discriminator["ndf"], n_layers=src.lineage.discriminator["n_layers"])
    return arch


def config_from_args(argv: Sequence[str] | None) -> TrainConfig:
    given = vars(build_parser().parse_args(argv))
    if not given.get("resume"):
        if not given.get("data"):
            raise SystemExit("fit: --data DIR is required")
        if given.get("init_from"):
            given = {**architecture_of(given["init_from"]), **given}
        return TrainConfig(**given)
    base = TrainConfig(**{k: v for k, v in given.items() if k in ("out_dir", "name")})
    saved = load_checkpoint(run_dir(base) / "checkpoints" / "last.pt", mmap=True)["config"]
    cfg = TrainConfig.from_dict({**saved, **given})
    check_resumable(cfg, saved)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(argv)
    except (FileNotFoundError, ValueError) as e:  # no checkpoint to resume, a bad option value
        raise SystemExit(f"fit: {e}") from e
    try:
        metrics = fit(cfg)
    except (CheckpointError, ConfigError, FileExistsError, FileNotFoundError, NotPrepared) as e:
        raise SystemExit(f"fit: {e}") from e
    if metrics:
        ev = metrics.get("eval") or {}
        summary = {k: metrics[k] for k in ("steps", "images_per_s", "wall_time_s")}
        summary.update({k: ev[k] for k in ("l1", "psnr", "ssim", "edge_f1") if k in ev})
        print(json.dumps(summary))
    return 0
