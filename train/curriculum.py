"""The resolution curriculum: which pairs, at which size, each step trains on.

``--low-res-data`` (the same pairs prepared smaller) is trained on for the first ``--low-res-share``
of the budget, then ``--data``; one U-Net sees both sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from train.config import ConfigError, TrainConfig
from train.dataset import Jitter, PairedData, load_manifest
from train.evaluate import line_style_of
from train.freehand import Freehand
from train.trainer import check_patchgan_fits


@dataclass
class Phase:
    """What a step trains on at one resolution: the pairs, their jitter and their freehand faults."""

    data: PairedData
    jitter: Jitter
    freehand: Freehand
    style: dict[str, Any] | None


def make_phase(cfg: TrainConfig, folder: str, manifest: dict[str, Any], data: PairedData, load_size: int) -> Phase:
    style = line_style_of(manifest)
    if cfg.freehand and style is None:
        raise ConfigError(f"--freehand redraws edge-map inputs in their line style, and {folder} has none "
                          "(its inputs are not edge maps): leave --freehand at 0")
    return Phase(data, Jitter(data.size, jitter=cfg.jitter, load_size=load_size, flip=cfg.flip),
                 Freehand(style, cfg.freehand), style)


def low_res_phase(cfg: TrainConfig, train: PairedData, device: torch.device) -> Phase:
    """The curriculum's first phase: ``--low-res-data``, which must hold the same training pairs, in
    the same order, at a smaller size (``train prepare --size``), so a step's batch is the same pairs
    at either resolution."""
    manifest = load_manifest(cfg.low_res_data)
    low = PairedData.load(cfg.low_res_data, "train", device)
    hint = f"prepare it from the same source with `python -m train prepare ... --size {train.size // 2}`"
    if low.names != train.names:
        raise ConfigError(f"--low-res-data {cfg.low_res_data} does not hold the same training pairs as --data "
                          f"{cfg.data} ({len(low)} against {len(train)}, or in another order); {hint}")
    if low.size >= train.size or low.channels != train.channels:
        raise ConfigError(f"--low-res-data {cfg.low_res_data} is {low.size} px with {low.channels} channels; the "
                          f"curriculum needs a smaller size than --data's {train.size} px, same channels; {hint}")
    load_size = round(cfg.load_size * low.size / train.size) if cfg.load_size else 0
    return make_phase(cfg, cfg.low_res_data, manifest, low, load_size)


@dataclass
class Curriculum:
    """The phases of a run: ``full`` (``--data``), and ``low`` first when there is a curriculum."""

    full: Phase
    low: Phase | None
    low_res_share: float

    @property
    def sizes(self) -> list[int]:
        return [self.full.data.size] + ([self.low.data.size] if self.low else [])

    def at(self, used: float) -> Phase:
        """The phase once ``used`` (a share in [0, 1]) of the budget is spent."""
        if self.low is None:
            return self.full
        return self.low if used < self.low_res_share else self.full


def curriculum(cfg: TrainConfig, manifest: dict[str, Any], train: PairedData, device: torch.device) -> Curriculum:
    """The run's phases, checked against the discriminator and the U-Net before any work is done."""
    full = make_phase(cfg, cfg.data, manifest, train, cfg.load_size)
    low = low_res_phase(cfg, train, device) if cfg.low_res_data else None
    plan = Curriculum(full, low, cfg.low_res_share)
    for s in plan.sizes:
        check_patchgan_fits(cfg.n_layers, s)
    depth = cfg.generator.num_downs_at(min(plan.sizes))
    if low is not None and any(s % 2**depth for s in plan.sizes):
        raise ConfigError(f"the curriculum trains one U-Net at {low.data.size} and {train.size} px: both must be "
                          f"multiples of 2**num_downs = {2**depth} (give --num-downs "
                          f"{int(math.log2(low.data.size))} or less; the 8-level unet_256 cannot see 128 px)")
    return plan
