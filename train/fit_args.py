"""The ``python -m train fit`` command line: TrainConfig's options as flags (the generator's flat
beside the rest: --ngf, not --generator-ngf), an --init-from model's architecture as the defaults,
--resume's saved config."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from typing import Any, Sequence

from train.config import ConfigError, GeneratorOptions, TrainConfig, flat_options, option_fields
from train.dataset import NotPrepared
from train.fit import check_resumable, fit, run_dir
from train.lineage import load_init_source
from train.resume import CheckpointError, load_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train fit", description="Train a pix2pix generator.",
                                argument_default=argparse.SUPPRESS)
    for f in option_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        help_ = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        else:
            p.add_argument(flag, type=kind, choices=f.metadata.get("choices"), help=help_)
    return p


def architecture_of(spec: str) -> dict[str, Any]:
    """The architecture options of an --init-from source, so continuing a model needs no copy of them."""
    src = load_init_source(spec)
    arch = asdict(GeneratorOptions.of(src.generator_config))
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
        return TrainConfig.from_dict(given)
    base = TrainConfig(**{k: v for k, v in given.items() if k in ("out_dir", "name")})
    saved = flat_options(load_checkpoint(run_dir(base) / "checkpoints" / "last.pt", mmap=True)["config"])
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
